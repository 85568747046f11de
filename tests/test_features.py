"""sourcesep.features: STFT round trip, mel filterbanks, log-mel and AST fbank parity with transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sourcesep.features import (
    AST_MAX_FRAMES,
    AST_MEAN,
    AST_STD,
    ast_fbank,
    ast_num_frames,
    frame_times,
    istft,
    log_mel,
    mel_filterbank,
    shift_frequency,
    stft,
)

SR = 16000


# ---------------------------------------------------------------- STFT


@pytest.mark.parametrize("n", [16001, 12345, 1001, 257, 100])
@pytest.mark.parametrize("n_fft,hop", [(512, 256), (1024, 256), (400, 160)])
def test_stft_istft_perfect_reconstruction_odd_lengths(rng, n, n_fft, hop):
    x = torch.from_numpy(rng.standard_normal(n))  # float64 so the check is about the algorithm
    X = stft(x, n_fft, hop)
    assert X.shape == (n_fft // 2 + 1, 1 + n // hop) and X.is_complex()
    y = istft(X, n_fft, hop, length=n)
    assert y.shape == (n,)
    assert torch.max(torch.abs(y - x)).item() < 1e-10


def test_stft_float32_batched_and_numpy(rng):
    x = rng.standard_normal((2, 3, 16001)).astype(np.float32)
    X = stft(x, 512, 256)
    assert X.shape == (2, 3, 257, 63) and X.dtype == torch.complex64
    y = istft(X, 512, 256, length=16001)
    assert y.shape == (2, 3, 16001)
    np.testing.assert_allclose(y.numpy(), x, atol=1e-5)
    # each batch entry is transformed independently
    torch.testing.assert_close(X[1, 2], stft(torch.from_numpy(x[1, 2]), 512, 256))


def test_stft_tone_lands_in_its_bin():
    t = torch.arange(SR) / SR
    X = stft(torch.sin(2 * torch.pi * 1000.0 * t), 512, 256)
    assert int(X.abs().mean(dim=-1).argmax()) == 32  # 1000 Hz / (16000 / 512) = bin 32


def test_frame_times_match_stft_frames():
    X = stft(torch.zeros(16000), 512, 256)
    times = frame_times(X.shape[-1], 256, SR)
    assert times.shape == (X.shape[-1],)
    assert times[0] == 0.0 and times[1] == pytest.approx(0.016) and times[-1] == pytest.approx(62 * 0.016)


# ---------------------------------------------------------------- mel


def test_mel_filterbank_shapes_and_norms():
    fb = mel_filterbank(257, 64)
    assert fb.shape == (64, 257) and fb.dtype == torch.float32
    assert torch.all(fb >= 0)
    assert torch.all(fb.sum(dim=1) > 0)  # no empty band at 64 mels / 512-point FFT
    # slaney (default): area normalised, each triangle integrates to ~1 over Hz (bin width 31.25 Hz)
    area = fb[16:].sum(dim=1) * (SR / 512)
    torch.testing.assert_close(area, torch.ones_like(area), atol=0.05, rtol=0)
    fs = mel_filterbank(257, 64, norm="sum")
    torch.testing.assert_close(fs.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)
    fp = mel_filterbank(257, 64, norm=None)
    assert fp.max() <= 1.0
    # band centres increase with the band index
    centres = fp.argmax(dim=1)
    assert torch.all(centres[1:] >= centres[:-1])


def test_mel_filterbank_band_limits_and_tone():
    fb = mel_filterbank(257, 40, fmin=300.0, fmax=4000.0)
    freqs = torch.arange(257) * SR / 512
    assert torch.all(fb[:, freqs < 300.0] == 0) and torch.all(fb[:, freqs > 4000.0] == 0)

    fb = mel_filterbank(513, 64)
    t = torch.arange(SR) / SR
    power = stft(torch.sin(2 * torch.pi * 1000.0 * t), 1024, 256).abs().square()
    band = int(log_mel(power, fb).mean(dim=-1).argmax())
    lo, hi = (torch.nonzero(fb[band]).squeeze(1)[[0, -1]] * SR / 1024).tolist()
    assert lo <= 1000.0 <= hi


def test_log_mel_values_and_batch(rng):
    fb = mel_filterbank(257, 32)
    S = torch.from_numpy(rng.random((2, 257, 10)).astype(np.float32))
    L = log_mel(S, fb)
    assert L.shape == (2, 32, 10)
    torch.testing.assert_close(L[1], torch.log(1e-6 + fb @ S[1]))
    assert log_mel(np.zeros((257, 3), np.float32), fb).max().item() == pytest.approx(np.log(1e-6))


# ---------------------------------------------------------------- AST fbank


@pytest.fixture(scope="module")
def extractor():
    import warnings

    from transformers import ASTFeatureExtractor

    with warnings.catch_warnings():  # its 128-mel/257-bin bank has an empty lowest band, as in Kaldi
        warnings.simplefilter("ignore", UserWarning)
        return ASTFeatureExtractor()


def _test_waves(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(n) / SR
    return np.stack([
        0.1 * rng.standard_normal(n),                                 # white noise
        0.5 * np.sin(2 * np.pi * 440.0 * t),                          # pure tone
        0.3 * np.sin(2 * np.pi * 1000.0 * t) + 0.2 * np.sin(2 * np.pi * 3150.0 * t) + 0.05,  # tones + DC
        np.where(t < t[-1] / 2, 0.0, 0.2 * rng.standard_normal(n)),   # digital silence, then noise
    ]).astype(np.float32)


@pytest.mark.parametrize("seconds", [1, 10])
def test_ast_fbank_matches_transformers_extractor(extractor, seconds):
    waves = _test_waves(seconds * SR)
    ours = ast_fbank(torch.from_numpy(waves), target_frames=AST_MAX_FRAMES)
    assert ours.shape == (len(waves), AST_MAX_FRAMES, 128) and ours.dtype == torch.float32
    for i, w in enumerate(waves):
        ref = extractor(w, sampling_rate=SR, return_tensors="np")["input_values"][0]
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=1e-3, rtol=0)


def test_ast_fbank_long_input_is_cut_like_the_extractor(extractor):
    w = _test_waves(11 * SR)[0]
    ref = extractor(w, sampling_rate=SR, return_tensors="np")["input_values"][0]
    ours = ast_fbank(w, target_frames=AST_MAX_FRAMES)
    assert ours.shape == ref.shape == (1024, 128)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-3, rtol=0)


def test_ast_fbank_natural_frames_padding_and_cutting():
    waves = torch.from_numpy(_test_waves(SR))
    natural = ast_fbank(waves)
    assert natural.shape == (4, 98, 128)  # 1 + (16000 - 400) // 160
    assert ast_num_frames(SR) == 98 and ast_num_frames(399) == 0 and ast_num_frames(400) == 1

    padded = ast_fbank(waves, target_frames=120)
    torch.testing.assert_close(padded[:, :98], natural)
    # padding is zero log-energy, normalised the way the extractor does it
    pad_value = (0.0 - AST_MEAN) / (2 * AST_STD)
    torch.testing.assert_close(padded[:, 98:], torch.full((4, 22, 128), pad_value))

    cut = ast_fbank(waves, target_frames=50)
    torch.testing.assert_close(cut, natural[:, :50])

    raw = ast_fbank(waves, normalize=False)
    torch.testing.assert_close(raw, natural * (2 * AST_STD) + AST_MEAN, atol=1e-5, rtol=1e-5)


def test_ast_fbank_input_forms():
    w = _test_waves(SR)[1]
    single = ast_fbank(w)
    assert single.shape == (98, 128)
    f64 = ast_fbank(torch.from_numpy(w.astype(np.float64)))
    assert f64.dtype == torch.float64
    torch.testing.assert_close(f64.float(), single, atol=1e-4, rtol=0)

    tiny = np.zeros(399, np.float32)  # shorter than one frame
    assert ast_fbank(tiny).shape == (0, 128)
    # All padding: zero log-energy, normalised as the extractor does ((0 - mean) / (2 std)). (The
    # extractor itself refuses a sub-frame input when torchaudio is installed, so it is not asked.)
    padded = ast_fbank(tiny, target_frames=AST_MAX_FRAMES).numpy()
    np.testing.assert_allclose(padded, np.full((AST_MAX_FRAMES, 128), (0.0 - AST_MEAN) / (2 * AST_STD)), atol=1e-6)

    with pytest.raises(ValueError, match="16 kHz"):
        ast_fbank(w, sr=44100)


def test_ast_fbank_batch_rows_are_independent():
    waves = torch.from_numpy(_test_waves(SR))
    batch = ast_fbank(waves)
    for i in range(len(waves)):
        torch.testing.assert_close(batch[i], ast_fbank(waves[i]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.from_numpy(_test_waves(SR))
    X = stft(x.cuda(), 512, 256)
    assert X.device.type == "cuda"
    torch.testing.assert_close(istft(X, 512, 256, SR).cpu(), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ast_fbank(x.cuda(), target_frames=AST_MAX_FRAMES).cpu(),
                               ast_fbank(x, target_frames=AST_MAX_FRAMES), atol=1e-3, rtol=0)
    fb = mel_filterbank(257, 64, device="cuda")
    assert log_mel(X.abs().square(), fb).device.type == "cuda"


def test_shift_frequency_moves_partials_by_semitones():
    sr, n_fft = 16000, 512
    t = np.arange(sr) / sr
    M = stft(torch.from_numpy(np.sin(2 * np.pi * 1000 * t).astype(np.float32)), n_fft, 256).abs()
    up = shift_frequency(M, 12.0)  # an octave: 1000 Hz -> 2000 Hz
    assert int(M[:, 10].argmax()) == 32 and int(up[:, 10].argmax()) == 64
    down = shift_frequency(M, -5.0)
    assert abs(int(down[:, 10].argmax()) - 32 * 2 ** (-5 / 12)) <= 1
    assert torch.equal(shift_frequency(M, 0.0), M)
    assert up.shape == M.shape and float(shift_frequency(M, -24.0)[70:].abs().max()) == 0.0  # sources above the top bin
