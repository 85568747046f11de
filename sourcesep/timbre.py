"""How closely the query's timbre matches the mixture where the target is said to play.

A frame's log-mel *shape* is its log-mel spectrum minus its mean over bands: the spectral
envelope, independent of level. Single frames are noisy, but averaged over about half a second of
loud frames the shape describes a source and its recording channel well. A query cut from the
same recording as the target (another take, the other half of an utterance) usually matches the
mixture's active frames at a cosine of 0.9 or more; a different recording of the same kind of
sound rarely does (dev set: 11 of the 19 same-recording pairs the detector finds, 2 of the 35
others). The NMF maskers use it to decide how far to trust the query's atoms.
"""

from __future__ import annotations

import numpy as np
import torch

from . import features

# Band layout of the shape: 40 mel bands over the range where 16 kHz recordings carry timbre.
_N_MELS, _FMIN_HZ, _FMAX_HZ = 40, 50.0, 7600.0


def log_mel_shape(mag: torch.Tensor, sr: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Level-free log-mel shape of each frame, and each frame's level.

    Parameters
    ----------
    mag : (F, T) magnitude spectrogram (F = n_fft // 2 + 1), on any device.
    sr : sample rate (Hz).

    Returns
    -------
    shape : (40, T) float64, natural-log mel power minus its mean over the bands.
    level_db : (T,) float64 frame power in dB (arbitrary reference).
    """
    # On the CPU: a few thousand numbers, and the windowed averages below are numpy.
    V = torch.as_tensor(mag).detach().to("cpu", torch.float64)
    fb = features.mel_filterbank(V.shape[0], _N_MELS, sr, _FMIN_HZ, _FMAX_HZ, norm=None, dtype=torch.float64)
    power = V.square()
    mel = fb @ power
    # The floor sits 100 dB below the loudest band, so a scaled copy has exactly the same shape.
    logmel = torch.log(mel + 1e-10 * float(mel.max()) + 1e-30).numpy()
    level_db = 10.0 * np.log10(power.sum(0).numpy() + 1e-30)
    return logmel - logmel.mean(0, keepdims=True), level_db


def query_shape(query_mag: torch.Tensor, sr: int = 16000, loud_db: float = 30.0) -> np.ndarray | None:
    """The query's mean log-mel shape (40,) over its frames within ``loud_db`` of its loudest, or
    None for an all-zero query. ``query_mag`` (F, Tq) magnitude, on any device."""
    shape, level = log_mel_shape(query_mag, sr)
    if level.max() <= -290.0:  # an all-zero query
        return None
    return shape[:, level > level.max() - loud_db].mean(1)


def timbre_match(
    mix_mag: torch.Tensor,
    query_mag: torch.Tensor,
    activity: np.ndarray | torch.Tensor,
    *,
    sr: int = 16000,
    window_frames: int = 31,
    loud_db: float = 40.0,
    query_loud_db: float = 30.0,
    percentile: float = 90.0,
) -> float | None:
    """Cosine between the query's mean log-mel shape and the mixture's, over its active frames.

    Parameters
    ----------
    mix_mag : (F, T) mixture magnitude. query_mag : (F, Tq) query magnitude (same STFT geometry).
    activity : (T,) detector activity in [0, 1] on the mixture's frames; frames ≥ 0.5 count.
    window_frames : the mixture's shape is averaged over this many frames around each frame
        (31 frames of 256 samples at 16 kHz ≈ 0.5 s), loud frames only.
    loud_db, query_loud_db : frames within this many dB of the loudest frame are "loud" (quiet
        frames carry the noise floor's shape, not the source's).
    percentile : the match is this percentile of the windowed cosine over the active loud frames
        (a high percentile: the target need not dominate every active frame).

    Returns
    -------
    The match in [-1, 1], or None when the mixture has fewer than 6 active loud frames or the query
    is silent.
    """
    q_mean = query_shape(query_mag, sr, query_loud_db)
    if q_mean is None:
        return None
    shape, level = log_mel_shape(mix_mag, sr)
    loud = level > level.max() - loud_db
    kernel = np.ones(window_frames)
    weight = np.convolve(loud.astype(float), kernel, "same")
    summed = np.stack([np.convolve(band * loud, kernel, "same") for band in shape])
    local = summed / np.maximum(weight, 1e-9)
    cos = (q_mean @ local) / (np.linalg.norm(q_mean) * np.linalg.norm(local, axis=0) + 1e-12)
    act = torch.as_tensor(activity).detach().to("cpu", torch.float64).numpy()  # numpy or a tensor on any device
    # More than two loud frames in the window, so a lone click does not stand for a timbre.
    eligible = (act >= 0.5) & loud & (weight > 2)
    if int(eligible.sum()) < 6:
        return None
    return float(np.percentile(cos[eligible], percentile))
