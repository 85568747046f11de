"""The one parameter schema: defaults, validation messages, layering and safe YAML."""

import os

import pytest

from sourcesep.errors import ParamError
from sourcesep.params import Params, load_yaml_mapping, resolve, split_config

BALANCED = {
    "window_sec": 1.0, "hop_sec": 0.5, "cls_threshold": None, "cls_percentile": 92.0,
    "use_cosine_gate": False, "cosine_threshold": 0.45, "min_dur_ms": 500.0, "merge_gap_ms": 200.0,
    "segment_padding_ms": 50.0, "n_mels": 64, "nfft": 512, "hop": 256, "time_mask_sharpening": 1.2,
    "gamma_profile": 0.25, "mask_floor": 0.08, "soft_masking": True, "use_embedding_masking": False,
    "semantic_blending": 0.7, "similarity_smoothing": 1.0, "use_spectrogram_features": False,
    "opt_steps": 18, "lr": 0.28, "lambda_tv": 0.008, "lambda_sat": 0.001,
}


def test_defaults_are_the_balanced_preset():
    p = Params().model_dump()
    assert {k: p[k] for k in BALANCED} == BALANCED


def test_unknown_key_is_named():
    with pytest.raises(ParamError, match=r"job\.yaml: learning_rate: unknown key"):
        resolve([("job.yaml", {"learning_rate": 0.1})])


def test_out_of_range_names_key_and_range():
    with pytest.raises(ParamError) as e:
        resolve([("job.yaml", {"mask_floor": 1.5})])
    msg = str(e.value)
    assert msg == "job.yaml: mask_floor: must be ≥ 0.0 and < 1.0 (got 1.5)"


def test_wrong_type_is_named():
    with pytest.raises(ParamError) as e:
        resolve([("job.yaml", {"opt_steps": "many"})])
    assert str(e.value) == "job.yaml: opt_steps: must be a valid integer (got 'many')"
    assert e.value.where == "job.yaml" and e.value.problems == [("opt_steps", "must be a valid integer (got 'many')")]


def test_runtime_key_in_a_per_job_layer_gets_a_hint():
    with pytest.raises(ParamError, match="^sidecar: model: a runtime option: set it where the model is loaded"):
        resolve([("sidecar", {"model": "x"})])


def test_cross_field_check():
    with pytest.raises(ParamError, match="hop .* must not exceed nfft"):
        resolve([("cli", {"nfft": 256, "hop": 512})])


def test_layers_record_sources_and_later_wins():
    p, src = resolve([("config:a.yaml", {"lr": 0.1, "opt_steps": 5}), ("cli", {"lr": 0.2})])
    assert p.lr == 0.2 and p.opt_steps == 5
    assert src["lr"] == "cli" and src["opt_steps"] == "config:a.yaml" and src["hop"] == "default"


def test_seed_preset():
    p, src = resolve([("cli", {"preset": "seed"})])
    assert p.detector == "ast" and p.masker == "seed"
    assert "preset seed" in src["detector"]
    with pytest.raises(ParamError, match="preset"):
        resolve([("cli", {"preset": "turbo"})])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(ParamError, match=r"bad\.yaml: invalid YAML"):
        load_yaml_mapping(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ParamError, match="must be a mapping"):
        load_yaml_mapping(lst)
    assert load_yaml_mapping(_write(tmp_path / "empty.yaml", "")) == {}


def test_unreadable_parameter_files_are_named_in_plain_words(tmp_path):
    latin1, big, fifo = tmp_path / "latin1.yaml", tmp_path / "big.yaml", tmp_path / "pipe.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    big.write_text("# padding\n" * 110_000)
    os.mkfifo(fifo)  # opening it would block: refused from its type
    for path, expected in [
        (tmp_path / "missing.yaml", "cannot read sidecar: no such file"),
        (tmp_path, "cannot read sidecar: is a folder, not a file"),
        (fifo, "cannot read sidecar: not a regular file"),
        (latin1, "cannot read sidecar: not UTF-8 text (byte 0xe9 at offset 9)"),
        (big, "sidecar is larger than 1 MB"),
    ]:
        with pytest.raises(ParamError) as e:
            load_yaml_mapping(path, "sidecar")
        assert str(e.value) == f"{path}: {expected}"


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    bomb = _write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    with pytest.raises(ParamError, match="aliases"):
        load_yaml_mapping(bomb)


def test_split_config():
    params, runtime = split_config({"lr": 0.1, "model": "none", "threads": 1, "preset": "seed"}, "cfg")
    assert params == {"lr": 0.1, "preset": "seed"} and runtime == {"model": "none", "threads": 1}
    with pytest.raises(ParamError, match="colour: unknown key"):
        split_config({"colour": "red"}, "cfg")


def _write(path, text):
    path.write_text(text)
    return path
