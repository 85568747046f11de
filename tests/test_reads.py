"""Options the chosen pipeline does not read are reported, and reporting one never hides an option
that changes the output: every reported option, set all at once, leaves the target bit-identical."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sourcesep import Separator
from sourcesep.reads import describe_unused

# A valid value other than the default for every option some detector or masker reads.
OTHER = {
    "window_sec": 2.0, "hop_sec": 0.25, "cls_threshold": 0.3, "cls_percentile": 50.0, "use_cosine_gate": True,
    "cosine_threshold": 0.1, "min_dur_ms": 100.0, "merge_gap_ms": 50.0, "segment_padding_ms": 10.0,
    "n_mels": 32, "time_mask_sharpening": 2.0, "gamma_profile": 0.5, "mask_floor": 0.2, "soft_masking": False,
    "use_embedding_masking": True, "semantic_blending": 0.3, "similarity_smoothing": 3.0,
    "use_spectrogram_features": True, "opt_steps": 5, "lr": 0.1, "lambda_tv": 0.1, "lambda_sat": 0.1,
}


@pytest.fixture(scope="module")
def sep():
    return Separator(model="none", device="cpu", threads=1)


@pytest.mark.parametrize("masker, used", [
    ("nmf", {"min_dur_ms", "merge_gap_ms", "segment_padding_ms", "mask_floor"}),
    ("wiener", {"min_dur_ms", "merge_gap_ms", "segment_padding_ms", "mask_floor", "opt_steps", "lr", "lambda_tv"}),
    ("seed", {"min_dur_ms", "merge_gap_ms", "segment_padding_ms", "n_mels", "time_mask_sharpening", "gamma_profile",
              "mask_floor", "soft_masking", "opt_steps", "lr", "lambda_tv", "lambda_sat"}),
])
def test_reported_options_change_nothing_and_the_others_are_read(sep, pair, masker, used):
    mix, query, _, _ = pair
    base = sep.separate(mix, query, detector="query", masker=masker)
    assert base.unused_params == {} and base.notes == []

    unused = {k: v for k, v in OTHER.items() if k not in used}
    r = sep.separate(mix, query, detector="query", masker=masker, **unused)
    assert set(r.unused_params) == set(unused)
    assert np.array_equal(r.target, base.target)  # the report is true: none of them was read

    r = sep.separate(mix, query, detector="query", masker=masker, **{k: OTHER[k] for k in used})
    assert r.unused_params == {}
    assert not np.array_equal(r.target, base.target)  # and what is not reported is read


def test_reasons_name_the_component_and_the_missing_piece(sep, pair):
    mix, query, _, _ = pair
    r = sep.separate(mix, query, detector="query", masker="seed", cosine_threshold=0.2, opt_steps=3,
                     use_embedding_masking=True, semantic_blending=0.5, similarity_smoothing=2.0,
                     use_spectrogram_features=True, save_renamed_query=True, use_cosine_gate=False)
    embedding = "needs the AST windows of the ast or fused detector"
    assert r.unused_params == {  # use_cosine_gate: false asks for nothing, so it needs no note
        "cosine_threshold": "not used by the query detector",
        "use_embedding_masking": embedding,
        "semantic_blending": f"only used with use_embedding_masking, which {embedding}",
        "similarity_smoothing": f"only used with use_embedding_masking, which {embedding}",
        "use_spectrogram_features": "needs an AST model",
        "save_renamed_query": "needs an AST model (the query has no class without one)",
    }
    assert describe_unused(r.unused_params)[:2] == [
        "cosine_threshold: not used by the query detector",
        f"use_embedding_masking: {embedding}",
    ]
    assert sep.separate(mix, query, masker="seed", semantic_blending=0.5).unused_params == {
        "semantic_blending": "only used with use_embedding_masking: true"}


def test_ast_pipeline_reads_its_options(tiny_ast_dir, pair):
    mix, query, _, _ = pair
    sep = Separator(model=tiny_ast_dir, device="cpu", threads=1, offline=True)
    r = sep.separate(mix, query, detector="fused", masker="seed", use_embedding_masking=True, semantic_blending=0.5,
                     use_cosine_gate=True, cosine_threshold=0.2, cls_threshold=0.4, cls_percentile=80.0,
                     save_renamed_query=True, segments=None)
    assert r.unused_params == {"cls_percentile": "not used when cls_threshold is set"}


def test_event_json_and_the_command_line_carry_the_notes(tmp_path, pair_files):
    import subprocess
    import sys

    out = tmp_path / "o"
    p = subprocess.run([sys.executable, "-m", "sourcesep.cli", "separate", "--model", "none", "--mix_wav",
                        pair_files / "mix.wav", "--query_wav", pair_files / "query.wav", "--out_dir", out,
                        "--opt_steps", "50", "--lr", "0.1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "note: opt_steps, lr: not used by the nmf masker\n" in p.stdout
    ev = json.loads((out / "event.json").read_text())
    assert ev["unused_params"] == {"opt_steps": "not used by the nmf masker", "lr": "not used by the nmf masker"}
    assert ev["notes"] == ["opt_steps, lr: not used by the nmf masker"]


def test_a_mixture_shorter_than_the_query_suggests_a_swap(sep, pair_files):
    r = sep.separate(pair_files / "query.wav", pair_files / "mix.wav")
    assert len(r.notes) == 1 and r.notes[0].startswith("the mixture (")
    assert r.notes[0].endswith(f"are {pair_files / 'query.wav'} and {pair_files / 'mix.wav'} swapped?")


def test_read_by_names_the_components():
    from sourcesep.reads import read_by

    assert read_by("opt_steps") == "seed, wiener maskers"
    assert read_by("min_dur_ms") == "ast, query, fused detectors"
    assert read_by("segments") == "oracle detector"
    assert read_by("nfft") == "every run"


def test_a_separator_says_what_it_would_ignore_without_separating(sep):
    assert sep.unused_params({}) == {}
    assert sep.unused_params({"opt_steps": 3, "min_dur_ms": 100}) == {"opt_steps": "not used by the nmf masker"}
    assert sep.unused_params({"masker": "wiener", "opt_steps": 3, "lambda_sat": 0.1}) == {
        "lambda_sat": "not used by the wiener masker"}
