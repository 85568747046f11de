"""Round 7: a harmonic comb at the target's F0 (from the mixture, or from the truth as a bound).
These variants may return a waveform (n,) instead of a mask (F, T).
"""

from __future__ import annotations

import inspect

import numpy as np

from .common import HOP, SR, detected_activity, shipped_mask

F0_MIN_HZ, F0_MAX_HZ, F0_STEP_ST = 50.0, 1000.0, 0.1  # the F0 candidate grid (log, semitone steps)


def _f0_grid(step_st: float = F0_STEP_ST) -> np.ndarray:
    """(C,) F0 candidates (Hz), log-spaced from F0_MIN_HZ to F0_MAX_HZ in ``step_st`` semitones."""
    n = int(np.floor(12 * np.log2(F0_MAX_HZ / F0_MIN_HZ) / step_st)) + 1
    return F0_MIN_HZ * 2.0 ** (np.arange(n) * step_st / 12)


def _comb_matrices(n_fft: int, f0s: np.ndarray, fmax: float, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic-sum weights on the ``n_fft``-point STFT's bins (F = n_fft // 2 + 1).

    Returns (D, N), each (C, F): ``D @ A`` is the comb-minus-interleaved-comb salience
    Σ_k k^-decay · (A(k·f0) − A((k − ½)·f0)) and ``N @ A`` the same with both terms added (its
    normaliser), k = 1 … while k·f0 ≤ ``fmax`` Hz, A sampled at those frequencies by linear
    interpolation between bins. ``(D @ A) / (N @ A)`` is ≈ 1 for a clean harmonic frame at f0,
    ≈ 0 for noise and for f0 an octave too high.
    """
    F = n_fft // 2 + 1
    bin_hz = SR / n_fft
    D = np.zeros((len(f0s), F))
    N = np.zeros((len(f0s), F))
    rows = np.arange(len(f0s))
    for k in range(1, int(fmax / f0s.min()) + 1):
        use = k * f0s <= fmax
        w = np.where(use, float(k) ** -decay, 0.0)
        for freq, sign in ((k * f0s, 1.0), ((k - 0.5) * f0s, -1.0)):
            pos = np.minimum(freq / bin_hz, F - 1.000001)
            lo = np.floor(pos).astype(int)
            frac = pos - lo
            for idx, wt in ((lo, 1 - frac), (lo + 1, frac)):
                np.add.at(D, (rows, idx), sign * w * wt)
                np.add.at(N, (rows, idx), w * wt)
    return D, N


def pitch_track(mag: np.ndarray, n_fft: int, f0_range: tuple[float, float] | None = None,
                 fmax: float = 4000.0, decay: float = 0.5, compress: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame F0 and voicing of a magnitude spectrogram.

    mag : (F, T) magnitudes of an ``n_fft``-point STFT at SR. f0_range : (lo, hi) Hz to search
    (default the whole grid). fmax : highest harmonic used (Hz). decay : harmonic weight k^-decay.
    compress : the salience is computed on mag**compress.

    Returns (f0 (T,) Hz, refined by parabolic interpolation on the log grid; voicing (T,) in
    [−1, 1], the normalised salience (D·A)/(N·A) at that F0: ≈ 1 clean harmonic, ≈ 0 noise).
    """
    f0s = _f0_grid()
    if f0_range is not None:
        f0s = f0s[(f0s >= f0_range[0]) & (f0s <= f0_range[1])]
    if f0s.size < 3:
        f0s = _f0_grid()
    D, N = _comb_matrices(n_fft, f0s, fmax, decay)
    A = np.asarray(mag, dtype=np.float64) ** compress
    sal, norm = D @ A, N @ A  # (C, T)
    best = sal.argmax(0)
    T = A.shape[1]
    cols = np.arange(T)
    voicing = sal[best, cols] / np.maximum(norm[best, cols], 1e-12)
    # Parabolic refinement of the peak on the log-frequency grid.
    inner = (best > 0) & (best < len(f0s) - 1)
    b = np.clip(best, 1, len(f0s) - 2)
    y0, y1, y2 = sal[b - 1, cols], sal[b, cols], sal[b + 1, cols]
    den = y0 - 2 * y1 + y2
    delta = np.where(inner & (den < 0), 0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
    step = np.log2(f0s[1] / f0s[0])
    f0 = f0s[best] * 2.0 ** (np.clip(delta, -0.5, 0.5) * step)
    return f0, voicing


def _harmonic_comb(f0: np.ndarray, weight: np.ndarray, n_fft: int, width_bins: float, jitter: float,
                   fmax: float, floor: float) -> np.ndarray:
    """(F, T) soft comb on an ``n_fft``-point STFT's bins: 1 at k·f0(t), Gaussian lobes of standard
    deviation sqrt((width_bins · bin spacing)² + (jitter · k·f0)²) Hz (nearest harmonic only, k ≥ 1),
    ``floor`` between lobes; pass-through (1) above ``fmax`` Hz. Frame t gets
    1 − weight(t) · (1 − comb): weight (T,) in [0, 1] is how voiced the frame is taken to be."""
    F = n_fft // 2 + 1
    bin_hz = SR / n_fft
    freqs = np.arange(F)[:, None] * bin_hz  # (F, 1)
    f0 = np.asarray(f0, dtype=np.float64)[None, :]  # (1, T)
    k = np.maximum(np.rint(freqs / f0), 1.0)
    sigma = np.sqrt((width_bins * bin_hz) ** 2 + (jitter * k * f0) ** 2)
    lobe = np.exp(-0.5 * ((freqs - k * f0) / sigma) ** 2)
    comb = floor + (1 - floor) * lobe
    comb[freqs[:, 0] > fmax] = 1.0
    return 1.0 - np.clip(weight, 0, 1)[None, :] * (1.0 - comb)


def pitch_comb(ctx: dict, gamma: float = 1.0, width: float = 1.0, jitter: float = 0.01, floor: float = 0.0,
               vthr: float = 0.3, vramp: float = 0.1, min_hq: float = 0.0, min_voiced: float = 0.3,
               margin_st: float = 3.0, fmax: float = 4000.0, n_fft: int = 2048, domain: int = 512,
               source: str = "masked", mode: str = "prod", decay: float = 0.5, boost: float = 1.0):
    """The shipped mask times a harmonic comb at the target's per-frame F0 (within-frame frequency
    selection), for harmonic queries.

    The query's F0 track (``n_fft``-point STFT, hop 256, harmonic-sum salience over 50-1000 Hz in
    0.1-semitone steps, harmonics up to ``fmax`` Hz weighted k^-``decay``) gives its pitch range:
    5th-95th percentile of its voiced loud frames (normalised salience ≥ ``vthr``, level within
    30 dB of its loudest) widened by ``margin_st`` semitones. The query qualifies when its harmonic
    fraction (sourcesep.hpss, 512-point) is ≥ ``min_hq`` and ≥ ``min_voiced`` of its loud frames
    are voiced; otherwise the shipped mask is returned. The mixture's F0 is tracked inside that
    range on the mixture's spectrum (``source`` "mix") or on the mixture times the shipped mask
    upsampled to ``n_fft`` (``source`` "masked": the NMF's first estimate, so an interferer in the
    same pitch range competes less). A frame's voicing weight rises linearly from 0 at ``vthr`` to 1
    at ``vthr + vramp``. The comb (:func:`_harmonic_comb`: lobes of ``width`` bins of the
    ``domain``-point STFT plus ``jitter`` · k·f0, ``floor`` between lobes) is built on the
    ``domain``-point grid: 512 → the result is a mask m·comb^γ (``mode`` "prod") or
    max(m, ``boost``·a·w·lobes) (``mode`` "max": the mask raised towards the comb's lobes below
    ``fmax``, a the detector's activity, w the voicing weight; γ and ``floor`` unused) on the
    shipped grid;
    2048 → the shipped mask is upsampled to 2048 bins, combined there and the target waveform (n,)
    is returned (``gamma=0`` with ``domain=2048`` measures the re-gridding alone).
    """
    import torch

    from sourcesep import features, hpss
    from sourcesep.mask import interp_axis

    m = shipped_mask(ctx)
    if hpss.harmonic_fraction(ctx["Vq"]) < min_hq:
        return m
    hop = HOP
    Qb = features.magnitude(features.stft(ctx["q"], n_fft, hop)).numpy()
    qf0, qv = pitch_track(Qb, n_fft, fmax=fmax, decay=decay)
    qlevel = 10 * np.log10((Qb.astype(np.float64) ** 2).sum(0) + 1e-20)
    loud = qlevel > qlevel.max() - 30
    voiced = loud & (qv >= vthr)
    if loud.sum() == 0 or voiced.sum() < max(3, min_voiced * loud.sum()):
        return m
    lo, hi = np.percentile(qf0[voiced], [5, 95])
    rng = (lo * 2 ** (-margin_st / 12), hi * 2 ** (margin_st / 12))
    Xb = features.stft(ctx["x"], n_fft, hop)
    Vb = features.magnitude(Xb).numpy()
    # (257, T) → (n_fft // 2 + 1, T): both axes span 0 … SR/2
    m_up = interp_axis(torch.from_numpy(np.asarray(m, np.float64)),
                       torch.from_numpy(np.linspace(0, m.shape[0] - 1, Vb.shape[0])), 0).numpy()
    if source == "gt":  # the bound of pitch_comb_gt: the true target's own F0 track
        Vt = features.magnitude(features.stft(ctx["g"], n_fft, hop)).numpy()
    else:
        Vt = Vb * m_up if source == "masked" else Vb
    f0, v = pitch_track(Vt, n_fft, rng, fmax=fmax, decay=decay)
    weight = np.clip((v - vthr) / max(vramp, 1e-6), 0, 1)
    comb = _harmonic_comb(f0, weight, domain, width, jitter, fmax, floor)
    if mode == "max":  # raise the mask towards the lobes of voiced active frames, below fmax
        lobes = _harmonic_comb(f0, np.ones_like(weight), domain, width, jitter, fmax, 0.0)
        lobes[np.arange(lobes.shape[0]) * SR / domain > fmax] = 0.0
        lift = boost * detected_activity(ctx)[None, :] * weight[None, :] * lobes
    if domain == 512:
        out = np.maximum(m, lift) if mode == "max" else m * comb ** gamma
        return out.astype(np.float32)
    if domain != n_fft:
        raise ValueError(f"domain must be 512 or n_fft ({n_fft}), got {domain}")
    mask = np.maximum(m_up, lift) if mode == "max" else m_up * comb ** gamma
    y = features.istft(Xb * torch.from_numpy(mask).to(Xb.real.dtype), n_fft, hop, ctx["x"].shape[-1])
    return y.numpy().astype(np.float64)


def pitch_comb_gt(ctx: dict, **kw):
    """Bound: :func:`pitch_comb` with the F0 track and voicing taken from gt.wav (the true
    target's own pitch, inside the query's range) instead of the mixture; same parameters."""
    return pitch_comb(ctx, **dict(kw, source="gt"))
pitch_comb_gt.__signature__ = inspect.signature(pitch_comb).replace(  # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(pitch_comb).parameters.values() if p.name != "source"])
