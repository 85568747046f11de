"""Checks on a claimed job: files, headers and the sidecar (same schema as the CLI)."""

from __future__ import annotations

import os

import pytest

from daemon import inbox
from daemon.validate import check_model_fit, public_message, validate
from daemon_helpers import drop_flat, drop_folder, pair_audio
from sourcesep import InputError, ParamError
from sourcesep.audio import probe


@pytest.fixture
def dirs(tmp_path):
    for d in ("inbox", "work"):
        (tmp_path / d).mkdir()
    return tmp_path / "inbox", tmp_path / "work"


def _claim(box, work, kind, name):
    c = inbox.claim(inbox.scan(box)[(kind, name)], box, work, "t:1")
    assert c is not None
    return c


def _validate(c, params=None):
    return validate(c, params=params or {}, config_name="d.yaml", probe=probe)


def test_sources_and_overrides(dirs):
    box, work = dirs
    drop_flat(box, "a", sidecar="opt_steps: 3\n", gt=True)
    v = _validate(_claim(box, work, "flat", "a"), params={"opt_steps": 9, "lr": 0.1})
    assert v.overrides == {"lr": 0.1, "opt_steps": 3} and v.sidecar_overrides == {"opt_steps": 3}
    assert v.param_sources["opt_steps"] == "sidecar:a.yaml" and v.param_sources["lr"] == "daemon config:d.yaml"
    assert v.param_sources["hop"] == "default" and v.sidecar == "a.yaml"
    assert set(v.info) == {"mix", "query", "gt", "params"} and len(v.info["mix"]["sha256"]) == 64
    assert v.gt and v.gt.endswith("a.gt.wav")


@pytest.mark.parametrize(
    "sidecar, word",
    [("opt_steps: 5000\n", "opt_steps"), ("window_sec: [1]\n", "window_sec"), ("model: x\n", "model"),
     ("{{{\n", "invalid YAML"), ("- a\n- b\n", "mapping"), ("a: &x 1\nb: *x\n", "alias")],
)
def test_bad_sidecars_name_the_problem(dirs, sidecar, word):
    box, work = dirs
    drop_flat(box, "s", sidecar=sidecar)
    with pytest.raises(ParamError) as e:
        _validate(_claim(box, work, "flat", "s"))
    assert word in str(e.value)


@pytest.mark.parametrize(
    "sidecar, message",
    [
        ("opt_steps: 5000\n", "s.yaml: opt_steps: must be ≥ 0 and ≤ 1000 (got 5000)"),
        ("no_such_param: 1\n", "s.yaml: no_such_param: unknown key"),
        ("model: x\nthreads: 4\n", "s.yaml: model: set in the daemon config (d.yaml), not per job; "
                                   "s.yaml: threads: set in the daemon config (d.yaml), not per job"),
        ("preset: fast\n", "s.yaml: preset: must be one of ['balanced', 'seed'] (got 'fast')"),
        ("hop: 1024\nnfft: 512\n", "s.yaml: hop (1024) must not exceed nfft (512)"),
        ("opt_steps: .nan\n", "s.yaml: opt_steps: must be a finite number"),
        ("segments: segs.txt\n", "s.yaml: segments: needs a job folder (put the segments file in NAME/ next to params.yaml)"),
    ],
)
def test_sidecar_messages_are_file_key_problem(dirs, sidecar, message):
    # The daemon config's form (FILE: KEY: problem), not "sidecar:s.yaml: 'key' …"; a runtime
    # key is refused as set in the daemon config, not as "fixed per Separator".
    box, work = dirs
    drop_flat(box, "s", sidecar=sidecar)
    c = _claim(box, work, "flat", "s")
    with pytest.raises(ParamError) as e:
        _validate(c)
    assert public_message(str(e.value), c, box) == message


def test_sidecar_preset_that_needs_an_ast_names_the_file_and_key(dirs):
    box, work = dirs
    advice = "; without one (model none) use the query detector, or oracle with a segments file"
    cases = {
        "preset": ("preset: seed\n", "p.yaml: preset: 'seed' needs an AST model (it sets detector: ast)" + advice),
        "direct": ("detector: fused\n", "p.yaml: detector: 'fused' needs an AST model" + advice),
    }
    for name, (sidecar, message) in cases.items():
        drop_flat(box, "p", sidecar=sidecar)
        v = _validate(_claim(box, work, "flat", "p"))
        with pytest.raises(ParamError) as e:
            check_model_fit(v, "none")
        assert str(e.value) == message
        check_model_fit(v, "some/ast-model")  # an AST runs it
    drop_flat(box, "ok", sidecar="detector: query\n")
    check_model_fit(_validate(_claim(box, work, "flat", "ok")), "none")


def test_segments_must_stay_inside_the_job_folder(dirs, tmp_path):
    box, work = dirs
    (tmp_path / "outside.txt").write_text("1 2\n")
    for i, seg in enumerate(["../../outside.txt", str(tmp_path / "outside.txt"), "missing.txt"]):
        drop_folder(box, f"f{i}", params=f"segments: '{seg}'\n")
        with pytest.raises(ParamError, match="inside the job folder"):
            _validate(_claim(box, work, "folder", f"f{i}"))
    drop_folder(box, "ok", params="segments: segs.txt\n")
    (box / "ok" / "segs.txt").write_text("2 4\n")
    v = _validate(_claim(box, work, "folder", "ok"))
    assert v.overrides["segments"].endswith(os.path.join("inputs", "segs.txt"))
    # event.json, the ledger and the log name it where it will sit in the result folder
    assert v.result_paths == {"segments": "inputs/segs.txt"} and v.sidecar_overrides == {"segments": "inputs/segs.txt"}
    drop_flat(box, "flat", sidecar="segments: segs.txt\n")
    with pytest.raises(ParamError, match="needs a job folder"):
        _validate(_claim(box, work, "flat", "flat"))


def test_links_and_duplicates_inside_folders(dirs, tmp_path):
    box, work = dirs
    drop_folder(box, "l")
    os.symlink(tmp_path, box / "l" / "escape")
    with pytest.raises(InputError, match="symbolic link"):
        _validate(_claim(box, work, "folder", "l"))
    drop_folder(box, "two")
    (box / "two" / "mix.flac").write_bytes(pair_audio()[0])
    with pytest.raises(InputError, match="more than one mix"):
        _validate(_claim(box, work, "folder", "two"))


def test_messages_name_the_users_files(dirs):
    box, work = dirs
    drop_folder(box, "dog job")
    c = _claim(box, work, "folder", "dog job")
    msg = f"{c.inputs}/mix.wav: empty file; {box}/x.mix.wav: bad"
    assert public_message(msg, c, box) == "dog job/mix.wav: empty file; x.mix.wav: bad"
