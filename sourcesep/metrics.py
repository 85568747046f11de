"""Separation quality metrics (numpy float64).

All functions take mono signals est (n,) and ref (n,) at the same sample rate; when the lengths
differ by a few samples (files written by different tools) both are cut to the shorter one.
Ratios in dB are clipped to [-100, 100] so a perfect or empty estimate gives a finite number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.signal

DB_LIMIT = 100.0
_TINY = 1e-20


def _pair(est: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(est, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    n = min(est.size, ref.size)
    return est[:n], ref[:n]


def _ratio_db(num: float, den: float) -> float:
    """10 log10(num / den) clipped to [-100, 100]; 0/0 counts as a perfect match (100)."""
    if den <= 0.0:
        return DB_LIMIT if num > 0.0 or num == den else -DB_LIMIT
    if num <= 0.0:
        return -DB_LIMIT
    return float(np.clip(10.0 * np.log10(num / den), -DB_LIMIT, DB_LIMIT))


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR (dB) of est (n,) against ref (n,), both made zero-mean first.

    target = (<est, ref> / <ref, ref>) ref; SI-SDR = 10 log10(|target|^2 / |est - target|^2),
    clipped to [-100, 100] (a scaled copy of ref gives 100). ref with no energy gives -100.
    """
    est, ref = _pair(est, ref)
    est = est - est.mean()
    ref = ref - ref.mean()
    ref_energy = float(ref @ ref)
    if ref_energy <= _TINY:
        return -DB_LIMIT
    target = (float(est @ ref) / ref_energy) * ref
    return _ratio_db(float(target @ target), float(np.sum(np.square(est - target))))


def sdr(est: np.ndarray, ref: np.ndarray, filter_len: int = 512) -> float:
    """BSS Eval SDR (dB) for one source, as ``mir_eval.separation.bss_eval_sources``.

    The target is the projection of est onto ref filtered by any FIR filter of ``filter_len`` taps
    (so gains, small delays and mild EQ are not counted as errors, unlike :func:`snr`);
    SDR = 10 log10(|target|^2 / |est - target|^2), clipped to [-100, 100].

    est, ref: (n,). Cost: two FFT correlations and one Toeplitz solve (filter_len^2).
    """
    est, ref = _pair(est, ref)
    n = ref.size
    if float(ref @ ref) <= _TINY:
        return -DB_LIMIT
    L = int(min(filter_len, n))
    nfft = int(2 ** np.ceil(np.log2(n + L - 1)))
    R = np.fft.rfft(ref, nfft)
    E = np.fft.rfft(est, nfft)
    acf = np.fft.irfft(R * np.conj(R), nfft)[:L]  # ref autocorrelation, lags 0..L-1
    xcf = np.fft.irfft(E * np.conj(R), nfft)[:L]  # <est[t + k], ref[t]>, lags 0..L-1
    acf = acf.copy()
    acf[0] += 1e-10 * acf[0] + _TINY  # keeps the Toeplitz system solvable for band-limited refs
    taps = scipy.linalg.solve_toeplitz(acf, xcf)
    target = scipy.signal.fftconvolve(ref, taps)  # (n + L - 1,)
    est_padded = np.concatenate([est, np.zeros(L - 1)])
    return _ratio_db(float(target @ target), float(np.sum(np.square(est_padded - target))))


def snr(est: np.ndarray, ref: np.ndarray) -> float:
    """Separation SNR (dB): 10 log10(|ref|^2 / |ref - est|^2), not scale-invariant; clipped to ±100."""
    est, ref = _pair(est, ref)
    return _ratio_db(float(ref @ ref), float(np.sum(np.square(ref - est))))


def _magnitude_stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| (n_fft // 2 + 1, T) with the framing of :func:`sourcesep.features.stft` (periodic Hann,
    centred, reflect padding), in numpy so metrics need no torch."""
    pad = n_fft // 2
    x = np.pad(x, pad, mode="reflect" if x.size > pad else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]  # (T, n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * window, axis=-1)).T


def spectral_convergence(est: np.ndarray, ref: np.ndarray, n_fft: int = 512, hop: int = 256) -> float:
    """Spectral convergence ‖|S_ref| - |S_est|‖_F / ‖|S_ref|‖_F of the magnitude STFTs (n_fft/hop).

    0 is a perfect magnitude match, 1 means the error is as large as the reference. inf when ref is
    silent and est is not (0 when both are).
    """
    est, ref = _pair(est, ref)
    num = float(np.linalg.norm(_magnitude_stft(ref, n_fft, hop) - _magnitude_stft(est, n_fft, hop)))
    den = float(np.linalg.norm(_magnitude_stft(ref, n_fft, hop)))
    if den <= 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def cross_correlation(est: np.ndarray, ref: np.ndarray) -> float:
    """Peak of the normalised cross-correlation over all lags, max_k |<est[t + k], ref[t]>| / (|est| |ref|).

    In [0, 1]: 1 for a scaled, delayed or polarity-inverted copy; 0 if either signal is silent.
    """
    est, ref = _pair(est, ref)
    norm = float(np.linalg.norm(est) * np.linalg.norm(ref))
    if norm <= 0.0:
        return 0.0
    xc = scipy.signal.correlate(est, ref, mode="full", method="fft")
    return float(min(1.0, np.max(np.abs(xc)) / norm))


def energy_ratio(est: np.ndarray, ref: np.ndarray) -> float:
    """Energy of est relative to ref in dB: 10 log10(|est|^2 / |ref|^2), clipped to ±100.

    0 dB = the same level; negative = the estimate is quieter than the reference.
    """
    est, ref = _pair(est, ref)
    return _ratio_db(float(est @ est), float(ref @ ref))


def quality_band(si_sdr_db: float) -> str:
    """Verbal band for an SI-SDR in dB: "excellent" (> 10), "good" (> 5), "fair" (> 0), else "poor"."""
    if si_sdr_db > 10.0:
        return "excellent"
    if si_sdr_db > 5.0:
        return "good"
    if si_sdr_db > 0.0:
        return "fair"
    return "poor"


def is_absent(ref: np.ndarray, floor: float = 1e-8) -> bool:
    """True when the reference is (numerically) silent: RMS below ``floor`` (-160 dBFS by default)."""
    ref = np.asarray(ref, dtype=np.float64)
    return ref.size == 0 or float(np.sqrt(np.mean(np.square(ref)))) < floor


def evaluate(est: np.ndarray, ref: np.ndarray, mix: np.ndarray) -> dict[str, Any]:
    """All metrics of an estimate est (n,) against the ground truth ref (n,) and the mixture mix (n,).

    Returns a JSON-ready dict with keys si_sdr, sdr, si_sdr_mix (the mixture as estimate),
    si_sdri (= si_sdr - si_sdr_mix), snr, spectral_convergence, cross_correlation, energy_ratio_db,
    quality (:func:`quality_band` of si_sdr), target_present and leakage_db.

    When ref is silent (the query sound is absent from the mixture), the ratio metrics are
    meaningless: they are None and ``leakage_db`` = 10 log10(|est|^2 / |mix|^2) (clipped to
    ±100; -100 for an all-zero estimate) says how much of the mixture leaked into the target
    (lower is better). Otherwise leakage_db is None.
    """
    est, ref = _pair(est, ref)
    mix = np.asarray(mix, dtype=np.float64).reshape(-1)[: est.size]
    if is_absent(ref):
        return {
            "si_sdr": None, "sdr": None, "si_sdr_mix": None, "si_sdri": None, "snr": None,
            "spectral_convergence": None, "cross_correlation": None, "energy_ratio_db": None,
            "quality": None, "target_present": False,
            "leakage_db": _ratio_db(float(est @ est), float(mix @ mix)),
        }
    s = si_sdr(est, ref)
    s_mix = si_sdr(mix, ref)
    return {
        "si_sdr": s,
        "sdr": sdr(est, ref),
        "si_sdr_mix": s_mix,
        "si_sdri": s - s_mix,
        "snr": snr(est, ref),
        "spectral_convergence": spectral_convergence(est, ref),
        "cross_correlation": cross_correlation(est, ref),
        "energy_ratio_db": energy_ratio(est, ref),
        "quality": quality_band(s),
        "target_present": True,
        "leakage_db": None,
    }
