"""Pieces every variant shares: the shipped mask and decomposition, the activity, the timbre-match
rule, band equalisation and frame gains.
"""

from __future__ import annotations

import copy

import numpy as np

NFFT, HOP, SR = 512, 256, 16000
N_ATOMS, N_ITER = 32, 40  # the shipped maskers' dictionary size and multiplicative updates


def with_activity(ctx: dict, activity: np.ndarray) -> dict:
    """A copy of ctx whose detection has ``activity`` (T,) on the mixture's STFT frames."""
    det = copy.copy(ctx["det"])
    det.activity, det.times_s = np.asarray(activity, dtype=np.float64), ctx["times"]
    return dict(ctx, det=det)


def shipped_mask(ctx: dict, query_mag=None, **kw) -> np.ndarray:
    """The shipped NMF mask (F, T), optionally with another query magnitude (F, Tq)."""
    from sourcesep import maskers

    q = ctx["Q"] if query_mag is None else query_mag  # a magnitude is its own |STFT|
    kw = {"frame_gain_power": ctx["frame_gain_power"], "second_pass_share": ctx["second_pass_share"],
          "matched_compression": ctx["matched_compression"], "seed": ctx["seed"], **kw}
    return maskers.mask_nmf(ctx["X"], q, ctx["det"], frame_times_s=ctx["times"], **kw).mask


def detected_activity(ctx: dict) -> np.ndarray:
    """The detection's activity (T,) in [0, 1] on the mixture's STFT frames."""
    from sourcesep import maskers

    return maskers.activity_on_grid(ctx["det"], ctx["V"].shape[1], ctx["times"])


def is_matched(ctx: dict) -> bool:
    """Whether the query's timbre matches the active frames (the shipped sharper-mask rule)."""
    from sourcesep import maskers, timbre

    match = timbre.timbre_match(ctx["V"], ctx["Vq"], detected_activity(ctx))
    return match is not None and match >= maskers.MATCHED_TIMBRE_THRESHOLD


def query_shifts(query_mag) -> tuple[float, ...]:
    """The transpositions the shipped maskers add to a clearly harmonic query's atoms."""
    from sourcesep import hpss, maskers

    harmonic = hpss.harmonic_fraction(query_mag) > maskers.HARMONIC_QUERY_THRESHOLD
    return maskers.HARMONIC_QUERY_SHIFTS if harmonic else ()


def band_weights(n_freqs: int, n_bands: int):
    """(n_bands, F) mel-band interpolation weights whose columns sum to 1 (bins below the first
    band's support go to the first band, above the last to the last)."""
    import torch

    from sourcesep import features

    fb = features.mel_filterbank(n_freqs, n_bands, SR, 50.0, 8000.0, norm=None, dtype=torch.float64)
    w = fb / fb.sum(0, keepdim=True).clamp_min(1e-12)
    empty = fb.sum(0) <= 0
    low = torch.arange(n_freqs) < n_freqs // 2
    w[:, empty] = 0.0
    w[0, empty & low] = 1.0
    w[-1, empty & ~low] = 1.0
    return w


def loud_mean_power(mag, loud_db: float = 40.0):
    """(F,) mean power over the frames within ``loud_db`` of the loudest."""
    import torch

    p = mag.double().square()
    level = 10 * torch.log10(p.sum(0) + 1e-20)
    return p[:, level > level.max() - loud_db].mean(1)


def eq_gain(target_power, query_power, n_bands: int, limit_db: float = 20.0, side: str = "both"):
    """(F,) magnitude gain that gives the query's long-term spectrum the target's, smoothed over
    ``n_bands`` mel bands and limited to ± ``limit_db``; its power-weighted mean log is 0.
    ``side`` "cut" keeps only the attenuations, "boost" only the gains."""
    w = band_weights(target_power.shape[0], n_bands)
    return gain_from_bands(w @ target_power.double(), w @ query_power.double(), w, limit_db, side)


def gain_from_bands(target_bands, query_bands, w, limit_db: float = 20.0, side: str = "both"):
    """As :func:`eq_gain`, from band powers (n_bands,) and the band weights w (n_bands, F)."""
    import torch

    a, b = target_bands, query_bands
    r = torch.log(a + 1e-12 * a.max()) - torch.log(b + 1e-12 * b.max())
    r = r - (r * b).sum() / b.sum()
    lim = limit_db / 10 * np.log(10)
    r = r.clamp(-lim if side != "boost" else 0.0, lim if side != "cut" else 0.0)
    return torch.exp(0.5 * (w.T @ r)).float()


def shipped(ctx: dict, **masker_kw) -> np.ndarray:
    """The shipped masker (`--masker nmf`); ``masker_kw`` are keyword arguments of
    :func:`sourcesep.maskers.mask_nmf` (e.g. ``shipped:n_iter=80,power=0.5``)."""
    return shipped_mask(ctx, **masker_kw)


def refined_activity(ctx: dict, dilate: int = 5) -> np.ndarray:
    """The detected activity (T,) times the frames where gt is within 30 dB of its loudest,
    dilated by ``dilate`` frames."""
    from scipy.ndimage import maximum_filter1d

    G = ctx["G"].double().square().sum(0).numpy()
    on = 10 * np.log10(G + 1e-20) > 10 * np.log10(G.max() + 1e-20) - 30
    return detected_activity(ctx) * maximum_filter1d(on.astype(float), dilate)


def shape_cos(u: np.ndarray, v: np.ndarray) -> float:
    """The cosine of two spectral shapes (n,): 1 for the same shape at any level."""
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12))


def frame_gate(share, gamma: float, floor: float, smooth: int):
    """(T,) gain :func:`sourcesep.maskers.frame_gain` (``gamma``, ``floor``) of a per-frame target
    share (T,), clipped to [0, 1] and first smoothed over ``smooth`` frames (edge-replicated)."""
    import torch

    from sourcesep import hpss, maskers

    s = torch.as_tensor(share, dtype=torch.float64).clamp(0, 1)
    if smooth > 1:
        s = hpss.smooth_along_time(s[None], int(smooth) | 1)[0]
    return maskers.frame_gain(s, power=gamma, floor=floor)


def relative_share(share, act, rel: float):
    """share (T,) divided by its ``rel``-th percentile over the active frames (activity ``act``
    (T,) ≥ 0.5; there must be some), clipped to 1."""
    import torch

    ref = torch.quantile(share[act >= 0.5].double(), rel / 100)
    return (share / ref.clamp_min(1e-6)).clamp(0, 1)


def mask_from_parts(ctx: dict, S, B, act, gain_share=None, gain_power: float | None = None, **ratio_kw):
    """The shipped mask (F, T) from given NMF parts S, B (F, T): :func:`sourcesep.maskers.ratio_mask`
    (``ratio_kw`` its keyword arguments, e.g. the exponents), the frame gain (from ``gain_share``
    (T,) when given, else from S and B) and the activity gate ``act`` (T,)."""
    from sourcesep import hpss, maskers

    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    m, _ = maskers.ratio_mask(V, Vq, S, B, act, harmonic_fraction=hpss.harmonic_fraction(Vq), **ratio_kw)
    gp = ctx["frame_gain_power"] if gain_power is None else gain_power
    if gp > 0:
        share = nmf_share(V, S, B) if gain_share is None else gain_share
        m = m * maskers.frame_gain(share, power=gp, floor=maskers.FRAME_GAIN_FLOOR)[None, :]
    return (m * act[None, :]).clamp(0, 1).numpy()


def nmf_share(V, S, B, width: int = 15):
    """(T,) the decomposition's target share of each frame's energy over ``width`` frames
    (:func:`sourcesep.maskers.frame_share`, as the shipped frame gain uses it)."""
    from sourcesep import maskers

    return maskers.frame_share(V, S, B, width=width)


def shipped_parts(ctx: dict, alpha: float = 1.0, alpha_matched: float | None = None, **fit_kw):
    """(activity (T,), V (F, T), Vq (F, Tq), S, B) of the shipped masker's decomposition, or None
    when the activity is zero everywhere (the caller returns a zero mask). ``fit_kw``: further
    keyword arguments of :func:`sourcesep.maskers.nmf_fit` (iterations, sizes, β). The
    decomposition runs on magnitudes raised to the compression :func:`compressed_inputs` picks from
    ``alpha`` and ``alpha_matched`` (as shipped by default: ``--matched-compression`` for a
    matching query, none otherwise); S and B are taken back to magnitudes."""
    from sourcesep import maskers

    if (inputs := compressed_inputs(ctx, alpha, alpha_matched)) is None:
        return None
    act, alpha, Vc, Vqc = inputs
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    S, B, _ = maskers.nmf_two_pass(Vc, Vqc, act,
                                   threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                   n_free_atoms=maskers.free_atoms_for(ctx["det"]), query_shifts=query_shifts(Vq),
                                   seed=ctx["seed"], **fit_kw)
    return act, V, Vq, S.pow(1 / alpha), B.pow(1 / alpha)


def compressed_inputs(ctx: dict, alpha: float = 1.0, alpha_matched: float | None = None):
    """(activity (T,), a, V^a (F, T), Vq^a (F, Tq)) with a the magnitude compression for this pair:
    ``alpha_matched`` (default ``--matched-compression``, as shipped) for a matching query, else
    ``alpha`` (1 as shipped), or None when the activity is zero everywhere (the caller returns a
    zero mask)."""
    import torch

    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    if float(act.max()) <= 0:
        return None
    if is_matched(ctx):
        alpha = ctx["matched_compression"] if alpha_matched is None else alpha_matched
    return act, alpha, ctx["V"].float().pow(alpha), ctx["Vq"].float().pow(alpha)


def first_decomposition(ctx: dict):
    """(activity (T,), a, V^a (F, T), Vq^a (F, Tq), the shipped masker's first decomposition of
    V^a (:class:`sourcesep.maskers.Decomposition`)), a the compression :func:`compressed_inputs`
    picks, or None when the activity is zero everywhere (the caller returns a zero mask)."""
    from sourcesep import maskers

    if (inputs := compressed_inputs(ctx)) is None:
        return None
    act, alpha, Vc, Vqc = inputs
    first = maskers.nmf_fit(Vc, Vqc, act, n_free_atoms=maskers.free_atoms_for(ctx["det"]),
                            query_shifts=query_shifts(ctx["Vq"]), seed=ctx["seed"])
    return act, alpha, Vc, Vqc, first


def second_pass_activity(ctx: dict, share, act):
    """The activity (T,) of the shipped second decomposition
    (:func:`sourcesep.maskers.second_pass_activity` at this run's threshold), from the first
    decomposition's target share (T,) and the activity ``act`` (T,)."""
    from sourcesep import maskers

    return maskers.second_pass_activity(share, act, maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]))[0]


def zero_mask(ctx: dict) -> np.ndarray:
    return np.zeros(tuple(ctx["V"].shape), np.float32)


def if_matched(ctx: dict, **masker_kw) -> np.ndarray:
    """The shipped masker, with ``masker_kw`` (keyword arguments of
    :func:`sourcesep.maskers.mask_nmf`) only for a query whose timbre matches the active frames."""
    return shipped_mask(ctx, **(masker_kw if is_matched(ctx) else {}))


def if_unmatched(ctx: dict, **masker_kw) -> np.ndarray:
    """The shipped masker, with ``masker_kw`` (keyword arguments of
    :func:`sourcesep.maskers.mask_nmf`) only for a query whose timbre does not match."""
    return shipped_mask(ctx, **({} if is_matched(ctx) else masker_kw))
