"""The public API end to end on synthetic audio: arrays and files in, Result and files out."""

import json

import jsonschema
import numpy as np
import pytest
import soundfile as sf

from signals import SR, harmonic_tone, noise
from sourcesep import InputError, ModelError, ParamError, Separator
from sourcesep.event import load_schema


@pytest.fixture(scope="module")
def sep_none():
    return Separator(model="none", threads=1)


@pytest.fixture(scope="module")
def sep_ast(tiny_ast_dir):
    return Separator(model=tiny_ast_dir, threads=1, offline=True)


def _overlap(segments, truth):
    """Seconds of overlap between detected and true segments."""
    return sum(max(0.0, min(s.end, e) - max(s.start, b)) for s in segments for b, e in truth)


def test_weights_free_separation_finds_the_tone(sep_none, pair):
    mix, query, gt, truth = pair
    mix = np.round(mix * 32768) / np.float32(32768)  # as decoded from a 16-bit file
    r = sep_none.separate(mix, query, gt=gt)
    assert r.target.dtype == np.float32 and r.target.shape == mix.shape
    np.testing.assert_array_equal(r.target + r.residual, mix)
    assert r.target_found and not r.classification.available
    assert _overlap(r.segments, truth) > 2.5  # of 3.5 s of tone
    assert r.metrics["si_sdri"] > 3.0
    assert set(r.timings) >= {"load", "detect", "mask", "reconstruct"}


def test_result_event_validates_and_files_decode(sep_none, pair, tmp_path):
    mix, query, gt, _ = pair
    r = sep_none.separate(mix, query, gt=gt, opt_steps=3)
    files = r.write(tmp_path / "out", extra_event={"job": {"id": "abc"}})
    ev = json.loads((tmp_path / "out" / "event.json").read_text())
    jsonschema.validate(ev, load_schema())
    assert ev["job"] == {"id": "abc"}
    assert ev["params"]["opt_steps"] == 3 and ev["param_sources"]["opt_steps"] == "call"
    assert ev["classification"]["available"] is False
    # params keep "auto" as resolved; what it chose without a model is recorded beside them.
    assert ev["params"]["detector"] == ev["params"]["masker"] == "auto"
    assert ev["detection"]["detector"] == "query" and ev["masker"]["name"] == "nmf"
    assert set(files) >= {"target", "residual", "event", "comparison_plot", "timeline_plot"}
    assert files["comparison_plot"].name == "target_comparison.png"  # no class: named 'target'
    for role, path in files.items():
        assert path.exists() and path.stat().st_size > 0, role
    t, sr = sf.read(files["target"])
    assert sr == SR and len(t) == len(mix)


@pytest.mark.parametrize("fmt", ["PCM_16", "FLAC", "FLOAT"])
def test_written_target_and_residual_add_up_to_the_mixture(sep_none, pair, tmp_path, fmt):
    mix, query, _, _ = pair
    mix = np.round(mix * 32768) / np.float32(32768)  # a 16-bit mixture, as most inputs are
    files = sep_none.separate(mix, query, output_format=fmt, save_visualizations=False).write(tmp_path / fmt)
    t, _ = sf.read(files["target"], dtype="float32")
    r, _ = sf.read(files["residual"], dtype="float32")
    np.testing.assert_array_equal(t + r, mix)  # sample for sample, 16-bit files included


def test_ground_truth_of_another_length_is_refused(sep_none, pair):
    mix, query, gt, _ = pair
    with pytest.raises(InputError, match=r"gt: the ground truth is 0\.500 s long but the mixture is \d+\.\d{3} s"):
        sep_none.separate(mix, query, gt=gt[: SR // 2])
    near = sep_none.separate(mix, query, gt=gt[:-40])  # a few samples short: evened out
    assert near.metrics["si_sdri"] > 3.0


def test_seed_preset_with_ast_model(sep_ast, pair, tmp_path):
    mix, query, gt, _ = pair
    r = sep_ast.separate(mix, query, gt=gt, preset="seed")
    assert r.classification.available and r.classification.class_name
    assert len(r.classification.top5) == 5
    assert r.detection.name == "ast" and r.masker == "seed"
    assert r.detection.windows is not None and len(r.detection.windows.probs) == 19
    hist = r.mask_result.loss_history
    assert len(hist) == 19 and hist[-1] < hist[0]
    m = r.mask
    assert m.min() >= 0.0 and m.max() <= 1.0
    files = r.write(tmp_path)
    ev = json.loads(files["event"].read_text())
    jsonschema.validate(ev, load_schema())
    assert files["renamed_query"].exists() and files["renamed_query"].stem == r.class_name
    assert ev["versions"]["model_id"] and len(ev["detection"]["windows"]) == 19


def test_files_in_any_format_and_rate(sep_none, pair, tmp_path):
    mix, query, _, _ = pair
    import soxr

    mix44 = soxr.resample(np.stack([mix, mix], axis=1), SR, 44100)
    sf.write(tmp_path / "mix.flac", mix44, 44100)
    sf.write(tmp_path / "query.ogg", query, SR)
    r = sep_none.separate(tmp_path / "mix.flac", tmp_path / "query.ogg")
    assert r.inputs["mix"]["channels"] == 2 and r.inputs["mix"]["sample_rate"] == 44100
    assert abs(len(r.target) - len(mix)) <= 2


def test_long_query_is_trimmed(sep_none, pair):
    mix, _, _, _ = pair
    q = np.concatenate([0.001 * noise(2.0, seed=5), harmonic_tone(2.5, f0=1000.0), 0.001 * noise(2.0, seed=6)])
    r = sep_none.separate(mix, q)
    assert r.query_trim["trimmed"] and r.query_trim["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert 1.0 <= r.query_trim["start_s"] <= 2.0


def test_bad_inputs_raise_input_errors(sep_none, pair, tmp_path):
    mix, query, _, _ = pair
    with pytest.raises(InputError, match="silent"):
        sep_none.separate(mix, np.zeros(SR, np.float32))
    with pytest.raises(InputError, match="0.05.* s long"):
        sep_none.separate(mix, query[: int(0.05 * SR)])
    with pytest.raises(InputError, match="nope.wav"):
        sep_none.separate(tmp_path / "nope.wav", query)


def test_parameter_errors(sep_none, pair):
    mix, query, _, _ = pair
    with pytest.raises(ParamError, match="colour: unknown key"):
        sep_none.separate(mix, query, colour="red")
    with pytest.raises(ParamError, match="needs an AST model"):
        sep_none.separate(mix, query, detector="ast")


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match=r"no-such-model: model directory not found\. .*--model none"):
        Separator(model=str(tmp_path / "no-such-model"), offline=True)


def test_oracle_segments_from_file(sep_none, pair, tmp_path):
    mix, query, gt, truth = pair
    seg = tmp_path / "segments.txt"
    seg.write_text("".join(f"{s} {e}\n" for s, e in truth))
    r = sep_none.separate(mix, query, gt=gt, segments=str(seg))
    assert r.detection.name == "oracle"
    assert [(s.start, s.end) for s in r.segments] == truth
    # A segment past the end is refused, not dropped; one running over the end is clipped.
    dur = len(mix) / SR
    seg.write_text(f"1 2\n{dur + 40:g} {dur + 50:g}\n")
    with pytest.raises(InputError, match=rf"segments\.txt: segment {dur + 40:g}-{dur + 50:g} s starts after the end"):
        sep_none.separate(mix, query, segments=str(seg))
    seg.write_text(f"1 {dur + 5:g}\n")
    assert [(s.start, s.end) for s in sep_none.separate(mix, query, segments=str(seg)).segments] == [(1.0, dur)]


def test_long_mixture_is_chunked_without_seams(sep_none, pair, tmp_path):
    mix, query, gt, truth = pair
    long_mix, long_gt = np.round(np.tile(mix, 4) * 32768) / np.float32(32768), np.tile(gt, 4)  # 40 s, 16-bit
    seg = tmp_path / "segments.txt"
    seg.write_text("".join(f"{s + 10 * k} {e + 10 * k}\n" for k in range(4) for s, e in truth))
    whole = sep_none.separate(long_mix, query, gt=long_gt, segments=str(seg), masker="seed", opt_steps=0)
    chunked = sep_none.separate(long_mix, query, gt=long_gt, segments=str(seg), masker="seed", opt_steps=0, chunk_sec=12)
    assert chunked.mask_result.info["chunks"] == 3 and chunked.mask.shape == whole.mask.shape
    np.testing.assert_array_equal(chunked.target + chunked.residual, long_mix)
    assert [(round(s.start, 3), round(s.end, 3)) for s in chunked.segments] == [
        (s + 10 * k, e + 10 * k) for k in range(4) for s, e in truth
    ]
    from sourcesep.metrics import si_sdr

    assert si_sdr(chunked.target, whole.target) > 30.0


def test_nmf_target_comes_out_near_its_level(sep_none, pair):
    """The NMF maskers' soft factors leave their mask below 1 everywhere; the Separator scales it
    (one factor per mixture, over all chunks) to a largest value of 1, so the target is not
    written far below its true level, nor mostly left in the residual."""
    mix, query, gt, _ = pair
    long_mix, long_gt = np.round(np.tile(mix, 4) * 32768) / np.float32(32768), np.tile(gt, 4)  # 40 s, 16-bit
    whole = sep_none.separate(long_mix, query, gt=long_gt)
    chunked = sep_none.separate(long_mix, query, gt=long_gt, chunk_sec=12)
    for r in (whole, chunked):
        assert r.mask.max() == pytest.approx(1.0, abs=1e-6) and r.mask_result.info["mask_scale"] > 1.0
        level_db = 20 * np.log10(float(r.target @ long_gt) / float(long_gt @ long_gt))
        assert -2.5 < level_db < 1.0  # the projection of the target on the truth (unscaled: -3.2 dB)
        np.testing.assert_array_equal(r.target + r.residual, long_mix)
    assert chunked.mask_result.info["chunks"] == 3
    # One factor: off, the same target comes out that much quieter (so SI-SDR is the same).
    raw = sep_none.separate(long_mix, query, unit_peak_mask=False)
    assert "mask_scale" not in raw.mask_result.info and raw.mask.max() < 1.0
    np.testing.assert_allclose(whole.target, raw.target * whole.mask_result.info["mask_scale"], atol=1e-4)
    seeded = sep_none.separate(mix, query, masker="seed", opt_steps=0)
    assert "mask_scale" not in seeded.mask_result.info  # the seed masker's mask is its own


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("masker", ["nmf", "wiener", "seed"])
@pytest.mark.parametrize("detector", ["query", "ast", "fused"])
def test_cuda_separates_like_the_cpu(tiny_ast_dir, pair, tmp_path, detector, masker):
    """Every detector and masker runs on CUDA (STFTs, NMF, masks and AST on the device) and gives
    the CPU's target; the files are written from it."""
    from sourcesep.metrics import si_sdr

    mix, query, gt, _ = pair
    runs = {}
    for device in ("cpu", "cuda"):
        sep = Separator(model=tiny_ast_dir, threads=1, offline=True, device=device, precision="fp32")
        runs[device] = sep.separate(mix, query, gt=gt, detector=detector, masker=masker)
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert gpu.versions["device"].startswith("cuda")
    assert gpu.target_found == cpu.target_found
    assert [(round(s.start, 1), round(s.end, 1)) for s in gpu.segments] == [
        (round(s.start, 1), round(s.end, 1)) for s in cpu.segments]
    assert si_sdr(gpu.target, cpu.target) > 25.0
    files = gpu.write(tmp_path / "out")
    assert json.loads(files["event"].read_text())["versions"]["device"].startswith("cuda")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_chunked_and_oracle(pair, tmp_path):
    from sourcesep.metrics import si_sdr

    mix, query, gt, truth = pair
    long_mix = np.tile(mix, 3)
    seg = tmp_path / "segments.txt"
    seg.write_text("".join(f"{s + 10 * k} {e + 10 * k}\n" for k in range(3) for s, e in truth))
    out = {d: Separator(model="none", threads=1, device=d).separate(long_mix, query, chunk_sec=12, segments=str(seg))
           for d in ("cpu", "cuda")}
    assert out["cuda"].mask_result.info["chunks"] == 3  # 30 s in 12 s chunks: the 6 s tail is its own
    assert si_sdr(out["cuda"].target, out["cpu"].target) > 25.0
