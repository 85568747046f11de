"""AstModel: loading (local dir, hub cache, offline errors), position-embedding surgery against the
stock Hugging Face forward, batched window scoring, classification and patch similarity.

The surgery tests compare against ``ASTForAudioClassification`` run unmodified, either at the
checkpoint's full 1024 frames or as a model whose config ``max_length`` is the short input's frame
count, loaded with position embeddings cut by plain indexing (written out here independently).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ASTConfig, ASTForAudioClassification

from signals import SR, harmonic_tone, noise
from sourcesep.ast_model import (
    AstModel,
    cpu_has_native_bf16,
    cut_position_embeddings,
    frames_for,
    keep_heap_for_tensors,
    resolve_device,
    resolve_precision,
)
from sourcesep.errors import ModelError, ParamError
from sourcesep.features import ast_fbank

N_FREQ, N_TIME = 12, 101  # patch grid of the checkpoint geometry: 128 mels, 1024 frames


@pytest.fixture(scope="module")
def ast(tiny_ast_dir):
    # On the CPU everywhere: these tests compare against the stock model run on the CPU.
    return AstModel.load(tiny_ast_dir, offline=True, threads=2, device="cpu")


@pytest.fixture(scope="module")
def stock_full(tiny_ast_dir):
    return ASTForAudioClassification.from_pretrained(tiny_ast_dir).eval()


def stock_at_length(stock_full: ASTForAudioClassification, n_frames: int) -> ASTForAudioClassification:
    """The stock HF model with config max_length = n_frames and position embeddings cut by hand:
    keep the 2 prefix tokens, then for each frequency row f the first T' time columns t, i.e.
    indices 2 + f * 101 + t."""
    cfg = ASTConfig(**{**stock_full.config.to_dict(), "max_length": n_frames})
    short = ASTForAudioClassification(cfg).eval()
    t_keep = (n_frames - 16) // 10 + 1
    state = dict(stock_full.state_dict())
    key = "audio_spectrogram_transformer.embeddings.position_embeddings"
    keep = [0, 1] + [2 + f * N_TIME + t for f in range(N_FREQ) for t in range(t_keep)]
    state[key] = state[key][:, keep]
    short.load_state_dict(state)
    assert short.audio_spectrogram_transformer.embeddings.position_embeddings.shape[1] == 2 + N_FREQ * t_keep
    return short


def test_frames_for_matches_kaldi_snip_edges():
    assert frames_for(1.0) == 98  # 1 + (16000 - 400) // 160
    assert frames_for(1.5) == 148
    assert frames_for(10.0) == 998
    assert frames_for(0.02) == 0  # shorter than one 25 ms frame


def test_cut_position_embeddings_keeps_first_time_columns_of_each_frequency_row():
    hidden = 3
    pos = torch.zeros(1, 2 + N_FREQ * N_TIME, hidden)
    pos[0, :2] = torch.tensor([[-1.0, -1, -1], [-2, -2, -2]])
    f, t = torch.meshgrid(torch.arange(N_FREQ), torch.arange(N_TIME), indexing="ij")
    pos[0, 2:, 0] = f.flatten().float()  # HF lays the grid out frequency-major
    pos[0, 2:, 1] = t.flatten().float()
    cut = cut_position_embeddings(pos, N_FREQ, N_TIME, 9)
    assert cut.shape == (1, 2 + N_FREQ * 9, hidden)
    assert torch.equal(cut[0, :2], pos[0, :2])
    grid = cut[0, 2:].reshape(N_FREQ, 9, hidden)
    assert torch.equal(grid[..., 0], f[:, :9].float())
    assert torch.equal(grid[..., 1], t[:, :9].float())
    assert cut_position_embeddings(pos, N_FREQ, N_TIME, N_TIME) is pos
    with pytest.raises(ValueError):
        cut_position_embeddings(pos, N_FREQ, N_TIME, N_TIME + 1)


def test_load_local_dir(ast, tiny_ast_dir):
    assert ast.labels == ["Speech", "Music", "Dog", "Siren", "Chainsaw", "Sine wave"]
    assert ast.hidden_size == 32
    assert ast.device == torch.device("cpu")
    assert ast.precision == "fp32"
    assert ast.model_id == tiny_ast_dir and ast.revision is None
    assert not ast._model.training
    # The pretrained grid is untouched: surgery happens per forward.
    assert ast._base.embeddings.position_embeddings.shape == (1, 2 + N_FREQ * N_TIME, 32)


def test_load_sets_process_wide_threads(tiny_ast_dir):
    before = torch.get_num_threads()
    try:
        AstModel.load(tiny_ast_dir, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _hub_cache_with(model_dir, cache, repo_id: str, commit: str, monkeypatch) -> None:
    """Lay ``model_dir`` out as the hub cache's snapshot of ``repo_id`` at ``commit`` under
    ``cache``, and point huggingface_hub at that cache."""
    import huggingface_hub.constants as hf_constants

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))


def test_load_from_hub_cache_offline_records_revision(tiny_ast_dir, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    _hub_cache_with(tiny_ast_dir, tmp_path, "sourcesep-test/tiny-ast", commit, monkeypatch)
    m = AstModel.load("sourcesep-test/tiny-ast", offline=True)
    assert m.revision == commit
    assert m.model_id == "sourcesep-test/tiny-ast"
    assert m.labels[0] == "Speech"


@pytest.mark.parametrize("model", ["/nonexistent/ast-model-dir", "./no-such-dir", "nobody-owns-this/unknown-ast-model"])
def test_missing_model_is_a_quick_model_error_with_offline_hint(model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelError) as err:
        AstModel.load(model, offline=False)  # offline comes from HF_HUB_OFFLINE
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert model in msg
    if model.startswith(("/", ".")):  # a folder: no download advice for a path
        assert "save_pretrained" in msg and "--model none" in msg and "download" not in msg
    else:
        assert f"`hf download {model}`" in msg and "--model DIR" in msg and "--model none" in msg


def test_the_download_command_the_hint_names_is_installed():
    # The hint must name a command that exists where sourcesep is installed.
    hf = Path(sys.executable).parent / "hf"
    assert hf.exists(), "the Hugging Face CLI `hf` is not installed beside sourcesep"
    p = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--local-dir" in p.stdout


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_reachable_answers_from_a_tcp_connect(monkeypatch):
    import socket

    from sourcesep.ast_model import hub_reachable

    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        assert hub_reachable(timeout_s=2)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert not hub_reachable(timeout_s=2)


def test_unreachable_hub_uses_the_cache_or_fails_fast(tiny_ast_dir, tmp_path, monkeypatch):
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    _hub_cache_with(tiny_ast_dir, tmp_path, "sourcesep-test/cached-ast", commit, monkeypatch)
    m = AstModel.load("sourcesep-test/cached-ast", offline=False)
    assert m.revision == commit and m.labels[0] == "Speech"
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="the hub is unreachable") as err:
        AstModel.load("sourcesep-test/not-cached-ast", offline=False)
    assert time.perf_counter() - t0 < 10
    assert "--model none" in str(err.value)


def test_file_instead_of_dir_and_none_are_model_errors(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a model directory"):
        AstModel.load(str(f), offline=True)
    with pytest.raises(ModelError):
        AstModel.load("none", offline=True)


def test_bad_precision_and_device(tiny_ast_dir):
    with pytest.raises(ParamError):
        AstModel.load(tiny_ast_dir, precision="fp16")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA"):
            resolve_device("cuda")


def test_full_length_input_matches_stock_forward(ast, stock_full):
    """1024 frames: the any-length embeddings are exactly the stock ones."""
    n = 400 + 1023 * 160  # exactly 1024 frames
    wave = (harmonic_tone(n / SR, f0=500.0) + noise(n / SR))[None, :n]
    logits, emb = ast.logits_and_embeddings(wave)
    feats = ast_fbank(torch.from_numpy(wave), target_frames=1024)
    with torch.inference_mode():
        ref = stock_full(feats, output_hidden_states=False)
        ref_emb = stock_full.audio_spectrogram_transformer(feats).pooler_output
    np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(emb, ref_emb.numpy(), atol=1e-5, rtol=1e-5)


def test_windows_match_stock_model_configured_at_window_length(ast, stock_full, pair):
    """19 one-second windows in one batch == the stock forward of a model whose max_length is the
    window's 98 frames (position embeddings cut to the first 9 time columns per row)."""
    mix, query, _, _ = pair
    cls = ast.classify(query)
    ws = ast.score_windows(mix, cls, window_sec=1.0, hop_sec=0.5)
    assert ws.probs.shape == ws.cosine.shape == (19,) and ws.embeddings.shape == (19, 32)
    np.testing.assert_allclose(ws.starts_s, np.arange(19) * 0.5)

    short = stock_at_length(stock_full, frames_for(1.0))
    windows = np.stack([mix[int(s * SR): int(s * SR) + SR] for s in ws.starts_s])
    feats = ast_fbank(torch.from_numpy(windows))
    assert feats.shape == (19, 98, 128)
    with torch.inference_mode():
        out = short.audio_spectrogram_transformer(feats)
        ref_probs = torch.sigmoid(short.classifier(out.pooler_output))[:, cls.class_id].numpy()
    np.testing.assert_allclose(ws.probs, ref_probs, atol=1e-5)
    np.testing.assert_allclose(ws.embeddings, out.pooler_output.numpy(), atol=1e-5)
    ref_cos = out.pooler_output.numpy() @ cls.embedding / (
        np.linalg.norm(out.pooler_output.numpy(), axis=1) * np.linalg.norm(cls.embedding)
    )
    np.testing.assert_allclose(ws.cosine, ref_cos, atol=1e-5)


def test_classify_runs_at_query_length(ast, stock_full, pair):
    """A 1.5 s query is classified at its own 148 frames, not padded to 1024."""
    _, query, _, _ = pair
    cls = ast.classify(query)
    short = stock_at_length(stock_full, frames_for(1.5))
    with torch.inference_mode():
        out = short.audio_spectrogram_transformer(ast_fbank(torch.from_numpy(query)[None]))
        probs = torch.sigmoid(short.classifier(out.pooler_output))[0].numpy()
    assert cls.available and cls.class_id == int(np.argmax(probs))
    assert cls.class_name == ast.labels[cls.class_id]
    assert cls.confidence == pytest.approx(float(probs.max()), abs=1e-5)
    assert [d["id"] for d in cls.top5] == list(np.argsort(-probs)[:5])
    assert cls.embedding.shape == (32,) and cls.embedding.dtype == np.float32
    np.testing.assert_allclose(cls.embedding, out.pooler_output[0].numpy(), atol=1e-5)


def test_classify_unchanged_by_window_scoring(ast, pair):
    mix, query, _, _ = pair
    before = ast.classify(query)
    state = {k: v.clone() for k, v in ast._model.state_dict().items()}
    ast.score_windows(mix, before, 1.0, 0.5)
    ast.score_windows(mix, before, 2.0, 1.0)
    after = ast.classify(query)
    np.testing.assert_array_equal(before.embedding, after.embedding)
    assert before.top5 == after.top5
    for k, v in ast._model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_batched_windows_equal_single_window_forwards(ast, pair):
    mix, query, _, _ = pair
    cls = ast.classify(query)
    ws = ast.score_windows(mix, cls, 1.0, 0.5)
    for i in (0, 7, 18):
        s = int(ws.starts_s[i] * SR)
        _, emb = ast.logits_and_embeddings(mix[None, s: s + SR])
        np.testing.assert_allclose(ws.embeddings[i], emb[0], atol=1e-5)


def test_partial_last_window_is_zero_padded(ast, pair):
    mix, query, _, _ = pair
    cls = ast.classify(query)
    x = np.concatenate([mix, mix[: int(0.3 * SR)]])  # 10.3 s
    ws = ast.score_windows(x, cls, 1.0, 0.5)
    assert ws.probs.shape == (20,) and ws.starts_s[-1] == pytest.approx(9.5)
    last = np.zeros(SR, np.float32)
    last[: x.size - int(9.5 * SR)] = x[int(9.5 * SR):]
    _, emb = ast.logits_and_embeddings(last[None])
    np.testing.assert_allclose(ws.embeddings[-1], emb[0], atol=1e-5)
    # A mixture shorter than one window is one padded window.
    short = ast.score_windows(mix[: SR // 2], cls, 1.0, 0.5)
    assert short.probs.shape == (1,) and short.starts_s.tolist() == [0.0]


def test_score_windows_needs_a_classification(ast, pair):
    from sourcesep.types import Classification

    with pytest.raises(ValueError):
        ast.score_windows(pair[0], Classification(available=False), 1.0, 0.5)


def test_very_short_query_is_padded_to_one_patch(ast):
    cls = ast.classify(harmonic_tone(0.1, f0=800.0))
    assert cls.embedding.shape == (32,) and np.isfinite(cls.embedding).all()


def test_query_longer_than_max_length_uses_its_first_1024_frames(ast):
    long = np.concatenate([harmonic_tone(10.3, f0=700.0), noise(2.0, seed=5) * 10])  # 12.3 s
    head = long[: 400 + 1023 * 160]  # exactly the first 1024 frames
    np.testing.assert_allclose(ast.classify(long).embedding, ast.classify(head).embedding, atol=1e-6)


def test_patch_similarity_grid(ast, pair):
    mix, query, _, _ = pair
    cls = ast.classify(query)
    sim = ast.patch_similarity(mix, cls.embedding)
    assert sim.shape == (N_FREQ, (998 - 16) // 10 + 1) and sim.dtype == np.float32
    assert np.all(np.abs(sim) <= 1.0 + 1e-5)
    # Longer than 1024 frames: consecutive pieces, one seamless grid.
    long = np.tile(mix, 3)
    sim_long = ast.patch_similarity(long, cls.embedding)
    assert sim_long.shape == (N_FREQ, (frames_for(30.0) - 16) // 10 + 1)
    assert np.isfinite(sim_long).all()


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_agrees_with_fp32(tiny_ast_dir, ast, pair, precision):
    mix, query, _, _ = pair
    low = AstModel.load(tiny_ast_dir, precision=precision, device="cpu")
    assert low.precision == precision
    ref, got = ast.classify(query), low.classify(query)
    cos = ref.embedding @ got.embedding / (np.linalg.norm(ref.embedding) * np.linalg.norm(got.embedding))
    assert cos > 0.99
    ws_ref, ws = ast.score_windows(mix, ref, 1.0, 0.5), low.score_windows(mix, ref, 1.0, 0.5)
    np.testing.assert_allclose(ws.probs, ws_ref.probs, atol=0.03)
    assert ws.embeddings.dtype == np.float32


def test_cpu_bf16_detection_reads_cpuinfo_flags():
    head = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f"
    assert not cpu_has_native_bf16(head + "\n")
    assert cpu_has_native_bf16(head + " avx512_bf16\n")
    assert cpu_has_native_bf16(head + " amx_tile amx_bf16\n")
    assert not cpu_has_native_bf16("")  # no flags line (not x86, or unreadable): fp32
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    assert cpu_has_native_bf16() == cpu_has_native_bf16(flags)


def test_allocator_tuning_applies_on_glibc():
    import platform

    applied = keep_heap_for_tensors()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied
    else:
        assert applied in (True, False)


def test_precision_auto_resolves_from_the_hardware(tiny_ast_dir):
    cpu = torch.device("cpu")
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", cpu) == expected
    for p in ("fp32", "bf16", "int8"):
        assert resolve_precision(p, cpu) == p
    with pytest.raises(ParamError):
        resolve_precision("fp16", cpu)
    m = AstModel.load(tiny_ast_dir, offline=True, precision="auto", device="cpu")
    assert m.precision == expected  # the resolved value, never "auto"
    assert AstModel.wrap(ASTForAudioClassification.from_pretrained(tiny_ast_dir), precision="auto").precision == expected
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        assert resolve_precision("auto", dev) == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


def test_bf16_stores_matmul_weights_in_bf16_with_autocast_identical_results(tiny_ast_dir, pair):
    """Casting the Linear/Conv weights once gives exactly what autocast over fp32 weights gives
    (the same rounding), with half the weight memory."""
    mix = pair[0]
    low = AstModel.load(tiny_ast_dir, precision="bf16", device="cpu")
    lin = [m for m in low._model.modules() if isinstance(m, torch.nn.Linear)]
    assert lin and all(m.weight.dtype == torch.bfloat16 for m in lin)
    assert low._base.embeddings.position_embeddings.dtype == torch.float32
    # The float32 leftovers own their memory: none points into the mapped checkpoint file,
    # which would keep the whole mapping resident.
    if os.path.exists("/proc/self/maps"):
        mapped = []
        for line in open("/proc/self/maps"):
            if line.rstrip().endswith(".safetensors"):
                lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                mapped.append((lo, hi))
        for t in (*low._model.parameters(), *low._model.buffers()):
            if t.dtype == torch.float32:
                assert not any(lo <= t.data_ptr() < hi for lo, hi in mapped)
    ref = AstModel.load(tiny_ast_dir, precision="fp32", device="cpu")
    ref.precision = "bf16"  # autocast on, weights left in fp32: what autocast alone computes
    windows = np.stack([mix[i * 8000: i * 8000 + 16000] for i in range(5)])
    for a, b in zip(low.logits_and_embeddings(windows), ref.logits_and_embeddings(windows)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_surgery_on_base_size_checkpoint_shapes():
    """The real checkpoint's geometry (hidden 768, 12 layers, 527 classes, 1214 position
    embeddings), random weights: surgery loads and one 1 s window runs with 2 + 12 * 9 tokens."""
    torch.manual_seed(0)
    net = ASTForAudioClassification(ASTConfig(num_labels=527))
    m = AstModel.wrap(net, device="cpu")
    assert m._base.embeddings.position_embeddings.shape == (1, 1214, 768)
    x = harmonic_tone(1.0, f0=440.0) + noise(1.0)
    logits, emb = m.logits_and_embeddings(x[None])
    assert logits.shape == (1, 527) and emb.shape == (1, 768)
    assert np.isfinite(logits).all()
    sim = m.patch_similarity(x, emb[0])  # last-layer tokens: 2 prefix + 12 x 9 patches
    assert sim.shape == (12, 9)
