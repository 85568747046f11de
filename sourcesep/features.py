"""Time-frequency features in torch: STFT/iSTFT, mel filterbanks, log-mel and the AST (Kaldi) fbank.

Every function works on CPU or CUDA tensors (numpy arrays are accepted and converted) and is
vectorised over leading batch dimensions; nothing loops over frames in Python.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

# AudioSet statistics AST was trained with (ASTFeatureExtractor defaults).
AST_MEAN = -4.2677393
AST_STD = 4.5689974
AST_MAX_FRAMES = 1024  # the frame count ASTFeatureExtractor pads/cuts every input to
AST_FRAME_LENGTH = 400  # 25 ms at 16 kHz
AST_FRAME_SHIFT = 160  # 10 ms at 16 kHz
_AST_FFT = 512
_AST_LOG_FLOOR = 1.192092955078125e-07  # float32 eps, the extractor's mel floor


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def stft(x: torch.Tensor | np.ndarray, n_fft: int, hop: int) -> torch.Tensor:
    """Short-time Fourier transform with a periodic Hann window, centred frames.

    Parameters
    ----------
    x : Tensor (..., n) real waveform (any leading batch shape).
    n_fft : FFT size and window length (samples).
    hop : hop between frames (samples).

    Returns
    -------
    Tensor (..., n_fft // 2 + 1, T) complex, T = 1 + n // hop. Frame t is centred on sample t * hop
    (reflect padding by n_fft // 2 at both ends; zero padding when the signal is too short to reflect).
    """
    x = _as_tensor(x)
    if not x.is_floating_point():
        x = x.float()
    lead, n = x.shape[:-1], x.shape[-1]
    window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype, device=x.device)
    # reflect padding needs more samples than the pad width; constant padding keeps istft exact.
    pad_mode = "reflect" if n > n_fft // 2 else "constant"
    X = torch.stft(
        x.reshape(-1, n), n_fft, hop_length=hop, window=window, center=True, pad_mode=pad_mode,
        return_complex=True,
    )
    return X.reshape(*lead, *X.shape[-2:])


def istft(X: torch.Tensor | np.ndarray, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """Inverse of :func:`stft` (weighted overlap-add), exact for hop <= n_fft // 2.

    Parameters
    ----------
    X : Tensor (..., n_fft // 2 + 1, T) complex spectrogram.
    n_fft, hop : as given to :func:`stft`.
    length : output length in samples (the original signal length).

    Returns
    -------
    Tensor (..., length) real waveform.
    """
    X = _as_tensor(X)
    lead = X.shape[:-2]
    real_dtype = X.real.dtype
    window = torch.hann_window(n_fft, periodic=True, dtype=real_dtype, device=X.device)
    y = torch.istft(
        X.reshape(-1, *X.shape[-2:]), n_fft, hop_length=hop, window=window, center=True, length=length
    )
    return y.reshape(*lead, length)


def magnitude(spec: torch.Tensor | np.ndarray) -> torch.Tensor:
    """|spec| as a float32 tensor on ``spec``'s device: a complex STFT (F, T) → its magnitude;
    a magnitude spectrogram is passed through (converted to float32)."""
    t = _as_tensor(spec)
    return (t.abs() if t.is_complex() else t).float()


def shift_frequency(mag: torch.Tensor, semitones: float) -> torch.Tensor:
    """A magnitude spectrogram transposed in pitch by scaling its frequency axis.

    Parameters
    ----------
    mag : (F, T) magnitudes on a linear frequency axis (bin f at f * sr / n_fft Hz).
    semitones : the shift; bin f of the result takes the input at f / 2**(semitones / 12)
        (linear interpolation), so +12 moves every partial up an octave. Bins whose source lies
        above the top bin are 0.

    Returns
    -------
    (F, T) tensor, same dtype and device. Partials move, the frame rate does not (no time
    stretch): a stand-in for the same sound played a few semitones higher or lower.
    """
    F = mag.shape[0]
    src = torch.arange(F, dtype=torch.float32, device=mag.device) / (2.0 ** (semitones / 12.0))
    i0 = src.floor().long().clamp(0, F - 1)
    i1 = (i0 + 1).clamp(max=F - 1)
    w = (src - i0.to(src.dtype)).clamp(0.0, 1.0)[:, None].to(mag.dtype)
    out = mag[i0] * (1 - w) + mag[i1] * w
    out[src > F - 1] = 0
    return out


def frame_times(n_frames: int, hop: int, sr: int) -> np.ndarray:
    """Centre times (s) of the frames of a centred STFT: (n_frames,) float64, t * hop / sr."""
    return np.arange(n_frames, dtype=np.float64) * (hop / sr)


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m: np.ndarray | float) -> np.ndarray | float:
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def _mel_filterbank_np(n_freqs: int, n_mels: int, sr: int, fmin: float, fmax: float, norm: str | None) -> np.ndarray:
    fft_freqs = np.linspace(0.0, sr / 2.0, n_freqs)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (fft_freqs[None, :] - lower) / (centre - lower)
    down = (upper - fft_freqs[None, :]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down))  # (n_mels, n_freqs)
    if norm == "slaney":
        fb *= (2.0 / (upper - lower))
    elif norm == "sum":
        fb /= np.maximum(fb.sum(axis=1, keepdims=True), 1e-12)
    fb.setflags(write=False)
    return fb


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sr: int = 16000,
    fmin: float = 0.0,
    fmax: float | None = None,
    *,
    norm: str | None = "slaney",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Triangular mel filterbank on the HTK mel scale (2595 log10(1 + f / 700)).

    Parameters
    ----------
    n_freqs : number of linear frequency bins, n_fft // 2 + 1 (bin k is at k * sr / n_fft Hz).
    n_mels : number of mel bands.
    sr : sample rate (Hz).
    fmin, fmax : band edges (Hz); fmax None means sr / 2.
    norm : "slaney" (default) = area-normalised like librosa ``norm="slaney"``: each triangle is
        scaled by 2 / (upper - lower edge in Hz), so bands carry roughly equal energy per Hz;
        "sum" = each row sums to 1 (a weighted mean of the bins it covers); None = peak 1.

    Returns
    -------
    Tensor (n_mels, n_freqs) non-negative. Apply as ``fb @ power`` for power of shape (..., n_freqs, T).
    Very narrow low bands may be all zero when n_mels is large for the FFT size.
    """
    if norm not in ("slaney", "sum", None):
        raise ValueError(f"norm must be 'slaney', 'sum' or None, not {norm!r}")
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fb = _mel_filterbank_np(int(n_freqs), int(n_mels), int(sr), float(fmin), fmax, norm)
    return torch.tensor(fb, dtype=dtype, device=device)


def log_mel(mag_or_power: torch.Tensor | np.ndarray, fb: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Natural-log mel spectrogram: log(1e-6 + fb @ S).

    Parameters
    ----------
    mag_or_power : Tensor (..., F, T) magnitude or power spectrogram (the caller picks which).
    fb : Tensor (n_mels, F) filterbank from :func:`mel_filterbank`.

    Returns
    -------
    Tensor (..., n_mels, T).
    """
    S = _as_tensor(mag_or_power)
    fb = _as_tensor(fb).to(dtype=S.dtype, device=S.device)
    return torch.log(1e-6 + torch.matmul(fb, S))


@functools.lru_cache(maxsize=8)
def _kaldi_mel_filters_np(num_mel_bins: int, sr: int, n_fft: int, low_hz: float) -> np.ndarray:
    """Kaldi filters, triangular in Kaldi mel space (1127 ln(1 + f / 700)), no normalisation.

    Matches transformers' ``mel_filter_bank(..., mel_scale="kaldi", triangularize_in_mel_space=True)``
    (= torchaudio.compliance.kaldi.fbank's bank; the Nyquist bin gets weight 0 either way).
    Returns (n_fft // 2 + 1, num_mel_bins) float64.
    """
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    n_freqs = n_fft // 2 + 1
    bin_mels = mel(np.arange(n_freqs) * (sr / n_fft))
    edges = np.linspace(mel(low_hz), mel(sr / 2.0), num_mel_bins + 2)
    up = (bin_mels[:, None] - edges[None, :-2]) / np.diff(edges)[None, :-1]
    down = (edges[None, 2:] - bin_mels[:, None]) / np.diff(edges)[None, 1:]
    fb = np.maximum(0.0, np.minimum(up, down))
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=2)
def _ast_window_np() -> np.ndarray:
    # The extractor passes window_type="hanning" (symmetric Hann), not Kaldi's default povey window.
    w = np.hanning(AST_FRAME_LENGTH)
    w.setflags(write=False)
    return w


def ast_num_frames(n_samples: int) -> int:
    """Number of AST fbank frames for n_samples at 16 kHz (Kaldi snip_edges: 1 + (n - 400) // 160, >= 0)."""
    return max(0, 1 + (int(n_samples) - AST_FRAME_LENGTH) // AST_FRAME_SHIFT)


def ast_fbank(
    waves: torch.Tensor | np.ndarray,
    sr: int = 16000,
    num_mel_bins: int = 128,
    target_frames: int | None = None,
    *,
    mean: float = AST_MEAN,
    std: float = AST_STD,
    normalize: bool = True,
) -> torch.Tensor:
    """AST input features for a batch of waveforms, equal to ``ASTFeatureExtractor`` (numpy path).

    Kaldi-compatible log-mel fbank: 25 ms frames (400 samples) every 10 ms (160), snip_edges (only
    whole frames), per-frame DC removal, pre-emphasis 0.97 (first sample x[0] * 0.03), symmetric
    Hann window, 512-point FFT, power spectrum, ``num_mel_bins`` Kaldi-mel triangles from 20 Hz to
    Nyquist, natural log with a floor of float32 eps, no dither, no energy term, no 2**15 scaling.
    Then AST normalisation (fbank - mean) / (2 * std).

    Parameters
    ----------
    waves : Tensor (B, n) or (n,) waveform at 16 kHz (float; full scale 1.0).
    sr : sample rate; AST features are only defined at 16 kHz.
    num_mel_bins : mel bands (128 for AST checkpoints).
    target_frames : None -> the natural frame count ``ast_num_frames(n)`` (no padding);
        an int -> cut or pad to that many frames. Padding is the extractor's: zeros in log-fbank
        space, i.e. ``(0 - mean) / (2 * std)`` after normalisation. Use ``AST_MAX_FRAMES`` (1024) to
        reproduce ``ASTFeatureExtractor()(x)`` exactly.
    mean, std : normalisation statistics (the checkpoint's feature-extractor config values).
    normalize : False returns the raw log-mel fbank (padding then stays 0).

    Returns
    -------
    Tensor (B, frames, num_mel_bins) (or (frames, num_mel_bins) for 1-D input), on the input's
    device, in its float dtype (integer input becomes float32).
    """
    if sr != 16000:
        raise ValueError(f"AST features need 16 kHz audio, got sr={sr}")
    x = _as_tensor(waves)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waves must be (B, n) or (n,), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    B, n = x.shape
    T = ast_num_frames(n)
    fb = torch.tensor(_kaldi_mel_filters_np(num_mel_bins, sr, _AST_FFT, 20.0), dtype=x.dtype, device=x.device)
    if T > 0:
        frames = x.unfold(-1, AST_FRAME_LENGTH, AST_FRAME_SHIFT)  # (B, T, 400), a strided view
        frames = frames - frames.mean(dim=-1, keepdim=True)
        # Kaldi pre-emphasis within each frame; the first sample is emphasised against itself.
        frames = torch.cat([frames[..., :1] * (1.0 - 0.97), frames[..., 1:] - 0.97 * frames[..., :-1]], dim=-1)
        frames = frames * torch.tensor(_ast_window_np(), dtype=x.dtype, device=x.device)
        power = torch.fft.rfft(frames, n=_AST_FFT).abs().square()  # (B, T, 257)
        feats = torch.log(torch.clamp(power @ fb, min=_AST_LOG_FLOOR))  # (B, T, mel)
    else:
        feats = x.new_zeros((B, 0, num_mel_bins))
    if target_frames is not None:
        if target_frames < T:
            feats = feats[:, :target_frames]
        elif target_frames > T:
            feats = torch.nn.functional.pad(feats, (0, 0, 0, target_frames - T))
    if normalize:
        feats = (feats - mean) / (std * 2.0)
    return feats[0] if squeeze else feats

