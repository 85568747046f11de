#!/usr/bin/env python3
"""Masker and detector experiments on a benchmark split: one table row per variant.

  python benchmarks/experiments.py --cases ../shared/bench/dev shipped eq-gt:bands=16,power=0.5 \
      [--segments-from-gt] [--per-case] [--jobs 2] [--seeds K]

Each VARIANT is ``NAME`` or ``NAME:key=value,...`` (see ``--list``). Every variant runs the
shipped query detector (or oracle segments from gt.wav with ``--segments-from-gt``, as in
quality.py), builds its mask and applies it to the mixture STFT (or returns the target waveform
itself, as the phase-reconstruction variant does), and scores the estimate with the
benchmark's own SI-SDR (imported from CASES/../score.py). The row gives the scorer's mean / median
over the present cases, the same over the cases with an audible target and with silent estimates
counted as 0 (the scorer rewards silence), group means over the audible cases (event same-class,
event same-source, music, speech), and the leakage of the absent cases that were not silenced;
with ``--seeds K``, each figure's mean over NMF seeds 0..K-1 and the range of the medians.
``shipped`` equals ``quality.py --detector query --masker nmf``.

Variants named ``*-gt`` read gt.wav: they are bounds (what a perfect estimate of one quantity
would give), not methods. The round-6 to round-15 logs in benchmarks/RESULTS.md were measured with
this script.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NFFT, HOP, SR = 512, 256, 16000
INAUDIBLE_PEAK = 1e-3  # gt.wav peaks below this: the target is inaudible (quality.py's caveats)
N_ATOMS, N_ITER = 32, 40  # the shipped maskers' dictionary size and multiplicative updates


# --------------------------------------------------------------------------- shared pieces

def _ctx_with_activity(ctx: dict, activity: np.ndarray) -> dict:
    """A copy of ctx whose detection has ``activity`` (T,) on the mixture's STFT frames."""
    det = copy.copy(ctx["det"])
    det.activity, det.times_s = np.asarray(activity, dtype=np.float64), ctx["times"]
    return dict(ctx, det=det)


def _shipped_mask(ctx: dict, query_mag=None, **kw) -> np.ndarray:
    """The shipped NMF mask (F, T), optionally with another query magnitude (F, Tq)."""
    from sourcesep import maskers

    q = ctx["Q"] if query_mag is None else query_mag  # a magnitude is its own |STFT|
    kw = {"frame_gain_power": ctx["frame_gain_power"], "second_pass_share": ctx["second_pass_share"],
          "matched_compression": ctx["matched_compression"], "seed": ctx["seed"], **kw}
    return maskers.mask_nmf(ctx["X"], q, ctx["det"], frame_times_s=ctx["times"], **kw).mask


def _activity(ctx: dict) -> np.ndarray:
    from sourcesep import maskers

    return maskers.activity_on_grid(ctx["det"], ctx["V"].shape[1], ctx["times"])


def _matched(ctx: dict) -> bool:
    """Whether the query's timbre matches the active frames (the shipped sharper-mask rule)."""
    from sourcesep import maskers, timbre

    match = timbre.timbre_match(ctx["V"], ctx["Vq"], _activity(ctx))
    return match is not None and match >= maskers.MATCHED_TIMBRE_THRESHOLD


def _query_shifts(query_mag) -> tuple[float, ...]:
    """The transpositions the shipped maskers add to a clearly harmonic query's atoms."""
    from sourcesep import hpss, maskers

    harmonic = hpss.harmonic_fraction(query_mag) > maskers.HARMONIC_QUERY_THRESHOLD
    return maskers.HARMONIC_QUERY_SHIFTS if harmonic else ()


def _band_weights(n_freqs: int, n_bands: int):
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


def _loud_mean_power(mag, loud_db: float = 40.0):
    """(F,) mean power over the frames within ``loud_db`` of the loudest."""
    import torch

    p = mag.double().square()
    level = 10 * torch.log10(p.sum(0) + 1e-20)
    return p[:, level > level.max() - loud_db].mean(1)


def _eq_gain(target_power, query_power, n_bands: int, limit_db: float = 20.0, side: str = "both"):
    """(F,) magnitude gain that gives the query's long-term spectrum the target's, smoothed over
    ``n_bands`` mel bands and limited to ± ``limit_db``; its power-weighted mean log is 0.
    ``side`` "cut" keeps only the attenuations, "boost" only the gains."""
    w = _band_weights(target_power.shape[0], n_bands)
    return _band_gain(w @ target_power.double(), w @ query_power.double(), w, limit_db, side)


def _band_gain(target_bands, query_bands, w, limit_db: float = 20.0, side: str = "both"):
    """As :func:`_eq_gain`, from band powers (n_bands,) and the band weights w (n_bands, F)."""
    import torch

    a, b = target_bands, query_bands
    r = torch.log(a + 1e-12 * a.max()) - torch.log(b + 1e-12 * b.max())
    r = r - (r * b).sum() / b.sum()
    lim = limit_db / 10 * np.log(10)
    r = r.clamp(-lim if side != "boost" else 0.0, lim if side != "cut" else 0.0)
    return torch.exp(0.5 * (w.T @ r)).float()


# --------------------------------------------------------------------------- variants

def shipped(ctx: dict, **masker_kw) -> np.ndarray:
    """The shipped masker (`--masker nmf`); ``masker_kw`` are keyword arguments of
    :func:`sourcesep.maskers.mask_nmf` (e.g. ``shipped:n_iter=80,power=0.5``)."""
    return _shipped_mask(ctx, **masker_kw)


def eq_gt(ctx: dict, bands: int = 16, power: float = 0.25, side: str = "both", refine: bool = False) -> np.ndarray:
    """Bound: the query equalised to the true target's long-term spectrum (``bands`` mel bands),
    mask exponent ``power`` (a matching timbre still raises it to 0.5); ``refine`` also trims the
    activity as ``refine-gt`` does (both bounds at once)."""
    if refine:
        ctx = _ctx_with_activity(ctx, _refined_activity(ctx))
    G = ctx["G"]
    if float(G.sum()) <= 0:
        return _shipped_mask(ctx, power=power)
    g = _eq_gain(_loud_mean_power(G), _loud_mean_power(ctx["Vq"]), bands, side=side)
    return _shipped_mask(ctx, ctx["Vq"] * g[:, None], power=power)


def eq_mix(ctx: dict, bands: int = 16, strength: float = 1.0, limit_db: float = 20.0, side: str = "both",
           skip_matched: bool = False) -> np.ndarray:
    """The query equalised towards the mixture's active frames (target and interferers together),
    ``strength`` 1 fully, 0.5 half-way in dB, limited to ± ``limit_db``; ``side`` "cut" or
    "boost" keeps one direction only; ``skip_matched`` leaves a query whose timbre matches
    (sourcesep.timbre) as it is."""
    act = _activity(ctx) >= 0.5
    if act.sum() < 6:
        return shipped(ctx)
    if skip_matched and _matched(ctx):
        return shipped(ctx)
    g = _eq_gain(_loud_mean_power(ctx["V"][:, act]), _loud_mean_power(ctx["Vq"]), bands, limit_db, side)
    return _shipped_mask(ctx, ctx["Vq"] * g.pow(strength)[:, None])


def eq_bound(ctx: dict, bands: int = 16, share: float = 0.3, power: float = 0.25) -> np.ndarray:
    """The query cut only where it cannot match the target: power adds, so the target's share of
    any band is at most the mixture's active frames' share divided by the target's share of their
    energy (at least ``share``); query bands above that bound are lowered to it."""
    import torch

    act = _activity(ctx) >= 0.5
    if act.sum() < 6:
        return shipped(ctx)
    w = _band_weights(ctx["V"].shape[0], bands)
    m = w @ _loud_mean_power(ctx["V"][:, act])
    q = w @ _loud_mean_power(ctx["Vq"])
    m, q = m / m.sum(), q / q.sum()
    cut = torch.clamp(m / (share * q + 1e-30), max=1.0)
    return _shipped_mask(ctx, ctx["Vq"] * (w.T @ cut.sqrt()).float()[:, None], power=power)


def eq_robust(ctx: dict, bands: int = 16, percentile: float = 20.0, strength: float = 1.0,
              limit_db: float = 12.0) -> np.ndarray:
    """The query equalised by a low percentile over the active loud frames of the band-wise log
    ratio mixture / query (each frame's median band removed): interferers that come and go raise
    the upper percentiles only."""
    import torch

    act = _activity(ctx)
    w = _band_weights(ctx["V"].shape[0], bands)
    logmel = lambda m: torch.log(w @ m.double().square() + 1e-20).numpy()  # noqa: E731
    M, Mq = logmel(ctx["V"]), logmel(ctx["Vq"])
    level = np.log(ctx["V"].double().square().sum(0).numpy() + 1e-20)
    sel = (act >= 0.5) & (level > level.max() - 30 / 4.343)
    if sel.sum() < 6:
        return shipped(ctx)
    qlevel = np.log(ctx["Vq"].double().square().sum(0).numpy() + 1e-20)
    q_mean = np.log(np.exp(Mq[:, qlevel > qlevel.max() - 30 / 4.343]).mean(1) + 1e-20)
    d = M[:, sel] - q_mean[:, None]
    d = d - np.median(d, axis=0, keepdims=True)
    r = np.percentile(d, percentile, axis=1)
    r = np.clip((r - r.mean()) * strength, -limit_db / 4.343, limit_db / 4.343)
    g = torch.exp(0.5 * (w.T @ torch.from_numpy(r))).float()
    return _shipped_mask(ctx, ctx["Vq"] * g[:, None])


def eq_masked(ctx: dict, bands: int = 16, strength: float = 1.0, rounds: int = 1, mask_power: float = 1.0,
              power: float = 0.25) -> np.ndarray:
    """The query equalised towards the long-term spectrum of a first estimate of the target:
    the mixture's active frames weighted by the NMF ratio ``(S^q / (S^q + B^q))²`` (q =
    ``mask_power``), repeated ``rounds`` times with the equalised query."""
    import torch

    from sourcesep import maskers

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    on = act >= 0.5
    if int(on.sum()) < 6:
        return shipped(ctx)
    q_power = _loud_mean_power(Vq)
    g = torch.ones(V.shape[0])
    for _ in range(rounds):
        S, B = maskers.nmf_parts(V, Vq * g[:, None], act, n_free_atoms=maskers.free_atoms_for(ctx["det"]))
        m = S.pow(mask_power) / (S.pow(mask_power) + B.pow(mask_power) + 1e-12)
        est = (m * V)[:, on]
        g = _eq_gain(_loud_mean_power(est), q_power, bands).pow(strength)
    return _shipped_mask(ctx, Vq * g[:, None], power=power)


def eq_top(ctx: dict, bands: int = 16, top: float = 0.2, strength: float = 1.0, limit_db: float = 20.0,
           smooth: int = 9, skip_matched: bool = False, power: float = 0.25) -> np.ndarray:
    """The query equalised towards the mixture's spectrum over its most target-like active loud
    frames: the ``top`` fraction by the first pass's query share S / (S + B) (smoothed over
    ``smooth`` frames)."""
    import torch

    from sourcesep import maskers

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    level = 10 * torch.log10(V.double().square().sum(0) + 1e-20)
    cand = ((act >= 0.5) & (level > level.max() - 30)).numpy()
    if cand.sum() < 10 or (skip_matched and _matched(ctx)):
        return shipped(ctx)
    S, B = maskers.nmf_parts(V, Vq, act, n_free_atoms=maskers.free_atoms_for(ctx["det"]))
    share = (S.sum(0) / (S.sum(0) + B.sum(0)).clamp_min(1e-12)).numpy()
    share = np.convolve(share, np.ones(smooth) / smooth, "same")
    chosen = cand & (share >= np.quantile(share[cand], 1 - top))
    g = _eq_gain(_loud_mean_power(V[:, torch.from_numpy(chosen)]), _loud_mean_power(Vq), bands, limit_db)
    return _shipped_mask(ctx, Vq * g.pow(strength)[:, None], power=power)


def eq_onset(ctx: dict, bands: int = 16, half: int = 16, strength: float = 1.0, limit_db: float = 20.0,
             pick: str = "similar", min_rise_db: float = 3.0, power: float = 0.25,
             skip_matched: bool = False) -> np.ndarray:
    """The query equalised towards the spectrum a source adds when it starts: at each onset in or
    just before the active region (band power over the ``half`` frames after minus the ``half``
    before, a local maximum of the total rise of at least ``min_rise_db``), the positive part of
    that difference is the new source's spectrum, whatever sounded before. ``pick`` "similar"
    takes the onset whose added spectrum is closest to the query's (cosine of 16-band dB
    spectra), "strongest" the largest rise, "mean" a rise-weighted mean of all. ``skip_matched``
    leaves a query whose timbre matches as it is."""
    import torch

    act = _activity(ctx) >= 0.5
    if act.sum() < 6 or (skip_matched and _matched(ctx)):
        return shipped(ctx)
    w = _band_weights(ctx["V"].shape[0], bands)
    P = (w @ ctx["V"].double().square()).numpy()  # (bands, T)
    T = P.shape[1]
    q = (w @ _loud_mean_power(ctx["Vq"])).numpy()
    csum = np.concatenate([np.zeros((bands, 1)), np.cumsum(P, 1)], 1)
    # Candidate onsets: active frames and the half-window before the activity starts.
    region = np.convolve(act.astype(float), np.ones(2 * half + 1), "same") > 0
    rise = np.full(T, -np.inf)
    added = np.zeros((bands, T))
    for t in range(half, T - half):
        if not region[t]:
            continue
        before = (csum[:, t] - csum[:, t - half]) / half
        after = (csum[:, t + half] - csum[:, t]) / half
        added[:, t] = np.maximum(after - before, 0.0)
        rise[t] = 10 * np.log10((after.sum() + 1e-20) / (before.sum() + 1e-20))
    peaks = [t for t in range(half, T - half) if rise[t] >= min_rise_db
             and rise[t] == rise[max(0, t - half):t + half + 1].max() and added[:, t].sum() > 0]
    if not peaks:
        return shipped(ctx)
    db = lambda x: 10 * np.log10(x / x.sum() + 1e-12)  # noqa: E731
    if pick == "strongest":
        spec = added[:, max(peaks, key=lambda t: rise[t])]
    elif pick == "mean":
        wts = np.array([10 ** (rise[t] / 10) for t in peaks])
        spec = sum(wt * added[:, t] / added[:, t].sum() for wt, t in zip(wts, peaks))
    else:
        qd = db(q) - db(q).mean()
        spec = added[:, max(peaks, key=lambda t: _shape_cos(qd, db(added[:, t]) - db(added[:, t]).mean()))]
    g = _band_gain(torch.from_numpy(spec), torch.from_numpy(q), w, limit_db)
    return _shipped_mask(ctx, ctx["Vq"] * g.pow(strength)[:, None], power=power)


def eq_fit(ctx: dict, bands: int = 16, limit_db: float = 20.0, free: int = 8, n_iter: int = 40,
           power: float = 0.25, two_pass: bool = False, only_matched: bool = False) -> np.ndarray:
    """The query equalised by a smooth gain fitted inside the semi-supervised NMF: the mixture ≈
    diag(g) W_q H_q + W_b H_b + W_f H_f on the active frames, g = ``bands`` mel-band gains
    (multiplicative KL updates, limited to ± ``limit_db``), then the shipped mask with the
    equalised query. With ``two_pass`` the background atoms of that fit also learn on the active
    frames the shipped first decomposition gives a target share below the second pass's threshold
    (as the shipped second decomposition's do), so fewer interferers are left for g to absorb.
    With ``only_matched``, only for a query whose timbre matches the active frames (else shipped)."""
    import torch

    from sourcesep import maskers, nmf

    if only_matched and not _matched(ctx):
        return _shipped_mask(ctx)

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    act_b = act
    if two_pass and float(act.max()) > 0:
        first = maskers.nmf_fit(V, Vq, act, n_free_atoms=free, n_iter=n_iter, query_shifts=_query_shifts(Vq),
                                seed=ctx["seed"])
        low = maskers.frame_share(V, *first.parts(), width=5) < maskers.SECOND_PASS_SHARE
        act_b = torch.where(low, torch.zeros_like(act), act)
    Wq, Wb, Wf, fixed_b = maskers.nmf_dictionaries(V, Vq, act_b, n_free_atoms=free, n_iter=n_iter,
                                                   query_shifts=_query_shifts(Vq), seed=ctx["seed"])
    kq = Wq.shape[1]
    others = torch.cat([Wb, Wf], 1)
    H = torch.full((kq + others.shape[1], V.shape[1]), float(V.mean()) + nmf.EPS)
    learn = torch.zeros(H.shape[0], dtype=torch.bool)
    learn[kq + (Wb.shape[1] if fixed_b else 0):] = True
    bw = _band_weights(V.shape[0], bands).float()
    c = torch.ones(bands)
    lim = 10 ** (limit_db / 20)
    for _ in range(n_iter):
        # One multiplicative step of the shipped fit with the query atoms equalised by g, then g's.
        g = bw.T @ c
        We, H = nmf.beta_nmf(V, torch.cat([Wq * g[:, None], others], 1), H, n_iter=1, update_w=learn)
        others = We[:, kq:]
        S0 = Wq @ H[:kq]
        ratio = V / (We @ H).clamp_min(nmf.EPS)
        c = c * (bw @ (S0 * ratio * act_b).sum(1)) / (bw @ (S0 * act_b).sum(1)).clamp_min(1e-12)
        lc = torch.log(c.clamp_min(1e-12))  # a band the active frames leave empty
        c = torch.exp(lc - lc.mean()).clamp(1 / lim, lim)
    return _shipped_mask(ctx, Vq * (bw.T @ c)[:, None], power=power)


def query_loud(ctx: dict, loud_db: float = 30.0) -> np.ndarray:
    """The query's atoms learned only from its frames within ``loud_db`` of its loudest (its
    quiet frames hold the query recording's own background, not the sound)."""
    level = 10 * np.log10(ctx["Vq"].double().square().sum(0).numpy() + 1e-20)
    keep = level > level.max() - loud_db
    if keep.sum() < 4:
        return shipped(ctx)
    return _shipped_mask(ctx, ctx["Vq"][:, keep])


def query_denoise(ctx: dict, percentile: float = 10.0, alpha: float = 1.0, beta: float = 0.1) -> np.ndarray:
    """The query's own stationary background removed before its atoms are learned: power spectral
    subtraction of ``alpha`` times its per-bin ``percentile`` over frames, floored at ``beta`` of
    the original power."""
    import torch

    P = ctx["Vq"].double().square()
    noise = torch.quantile(P, percentile / 100, dim=1, keepdim=True)
    clean = torch.maximum(P - alpha * noise, beta * P).sqrt().float()
    return _shipped_mask(ctx, clean)


def band_atoms(ctx: dict, bands: int = 3, keep_full: bool = True, skip_matched: bool = True) -> np.ndarray:
    """Query atoms that each cover one of ``bands`` mel-spaced frequency regions (learned from
    band-limited copies of the query's frames, beside the full frames with ``keep_full``), so the
    fit can weight the regions independently: a target whose spectral envelope differs from the
    query's is still explained by the query's atoms. ``skip_matched`` keeps the shipped atoms for a
    query whose timbre matches."""
    import torch

    if skip_matched and _matched(ctx):
        return shipped(ctx)
    w = _band_weights(ctx["Vq"].shape[0], bands).float()  # (bands, F), soft triangular regions
    copies = [ctx["Vq"] * w[b][:, None] for b in range(bands)]
    return _shipped_mask(ctx, torch.cat(([ctx["Vq"]] if keep_full else []) + copies, 1))


def refine_gt(ctx: dict, dilate: int = 5, part: str = "both") -> np.ndarray:
    """Bound: the detected activity kept only on frames where the true target is within 30 dB of
    its loudest frame (dilated by ``dilate`` frames): a perfect refinement of the detection.
    ``part`` (round 14) says where the refined activity is used: "both" (the decompositions and
    the gate), "gate" (the shipped decompositions, the refined gate) or "atoms" (the
    decompositions of the refined activity, the detected gate)."""
    import torch

    refined = _refined_activity(ctx, dilate)
    if part == "both":
        return _shipped_mask(_ctx_with_activity(ctx, refined))
    if part == "gate":
        return _shipped_mask(ctx) * (refined > 0)[None, :]
    if part != "atoms":
        raise ValueError(f"part must be 'both', 'gate' or 'atoms', got {part!r}")
    if (parts := _shipped_parts(_ctx_with_activity(ctx, refined))) is None:
        return _shipped_mask(ctx)
    _, _, _, S, B = parts
    return _mask_from_parts(ctx, S, B, torch.as_tensor(_activity(ctx), dtype=torch.float32))


def _refined_activity(ctx: dict, dilate: int = 5) -> np.ndarray:
    """The detected activity (T,) times the frames where gt is within 30 dB of its loudest,
    dilated by ``dilate`` frames."""
    from scipy.ndimage import maximum_filter1d

    G = ctx["G"].double().square().sum(0).numpy()
    on = 10 * np.log10(G + 1e-20) > 10 * np.log10(G.max() + 1e-20) - 30
    return _activity(ctx) * maximum_filter1d(on.astype(float), dilate)


def _shape_cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12))


def pieces(ctx: dict, half: int = 16, novelty: float = 0.1, delta: float = 0.25, floor: float = 0.0,
           soft: float = 0.0, min_frames: int = 8) -> np.ndarray:
    """Timbre gate over homogeneous pieces: the active region is cut where the mean log-mel shape
    of the ``half`` frames before and after differs (1 − cosine, local maxima above ``novelty``);
    a piece whose shape is more than ``delta`` (cosine) less query-like than the most query-like
    piece (of ≥ ``min_frames`` loud frames) keeps ``floor`` of its activity (``soft`` > 0: a
    logistic of that slope instead of a step)."""
    from sourcesep import timbre

    act = _activity(ctx).copy()
    shape, level = timbre.log_mel_shape(ctx["V"])
    q_mean = timbre.query_shape(ctx["Vq"])
    loud = level > level.max() - 40
    T = shape.shape[1]
    csum = np.concatenate([np.zeros((shape.shape[0], 1)), np.cumsum(shape * loud, 1)], 1)
    cnt = np.concatenate([[0], np.cumsum(loud)])

    def mean_shape(a: int, b: int):
        n = cnt[b] - cnt[a]
        return None if n < 3 else (csum[:, b] - csum[:, a]) / n

    nov = np.zeros(T)
    for t in range(half, T - half):
        left, right = mean_shape(t - half, t), mean_shape(t, t + half)
        if left is not None and right is not None:
            nov[t] = 1 - _shape_cos(left, right)
    on = act >= 0.5
    cuts = {0, T} | {t for t in range(1, T) if on[t] != on[t - 1]}
    cuts |= {t for t in range(1, T - 1) if nov[t] > novelty and nov[t] == nov[max(0, t - half):t + half + 1].max()}
    cuts = sorted(cuts)
    spans = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if on[a:b].any():
            ms = mean_shape(a, b)
            spans.append((a, b, None if ms is None else _shape_cos(q_mean, ms), cnt[b] - cnt[a]))
    eligible = [s for _, _, s, n in spans if s is not None and n >= min_frames]
    if not eligible:
        return shipped(ctx)
    best = max(eligible)
    for a, b, sim, _ in spans:
        if sim is None:
            continue
        if soft > 0:
            keep = 1 / (1 + np.exp(-(sim - (best - delta)) / soft))
        else:
            keep = float(sim >= best - delta)
        act[a:b] *= floor + (1 - floor) * keep
    return _shipped_mask(_ctx_with_activity(ctx, act))


def _modulation_features(logmel: np.ndarray, window: int) -> np.ndarray:
    """(2·B, T): per band, the rms frame-to-frame change and the standard deviation of its dB
    level over ``window`` frames around each frame."""
    k = np.ones(window) / window
    box = lambda x: np.stack([np.convolve(r, k, "same") for r in x])  # noqa: E731
    d = np.diff(logmel, axis=1, prepend=logmel[:, :1])
    mu = box(logmel)
    return np.concatenate([np.sqrt(box(d ** 2)), np.sqrt(np.maximum(box(logmel ** 2) - mu ** 2, 0))])


def modulation(ctx: dict, theta: float = -1.0, slope: float = 3.0, floor: float = 0.0,
               with_timbre: bool = False, window: int = 31, smooth: int = 9) -> np.ndarray:
    """Activity weighted by a frame score: z-scored (over the active frames) closeness of the
    frame's modulation features (20 mel bands, ``window`` frames) to the query's median, plus the
    z-scored frame level (plus the 0.5 s timbre cosine with ``with_timbre``); a logistic of
    ``slope`` around ``theta`` keeps the frame."""
    import torch

    from sourcesep import features, timbre

    act = _activity(ctx).copy()
    on = act >= 0.5
    if on.sum() < 10:
        return shipped(ctx)
    fb = features.mel_filterbank(ctx["V"].shape[0], 20, SR, 50.0, 7600.0, norm=None, dtype=torch.float64)
    logmel = lambda m: 10 * np.log10((fb @ m.double().square()).numpy() + 1e-10)  # noqa: E731
    L, Lq = logmel(ctx["V"]), logmel(ctx["Vq"])
    L, Lq = np.maximum(L, L.max() - 60), np.maximum(Lq, Lq.max() - 60)
    F, Fq = _modulation_features(L, window), _modulation_features(Lq, window)
    q_loud = Lq.max(0) > np.percentile(Lq.max(0), 30)
    closeness = -np.sqrt(((F - np.median(Fq[:, q_loud], 1)[:, None]) ** 2).mean(0))
    shape, level = timbre.log_mel_shape(ctx["V"])
    z = lambda v: (v - v[on].mean()) / (v[on].std() + 1e-9)  # noqa: E731
    parts = [z(closeness), z(level)]
    if with_timbre:
        q_mean = timbre.query_shape(ctx["Vq"])
        k = np.ones(31) / 31
        local = np.stack([np.convolve(r, k, "same") for r in shape])
        parts.append(z(q_mean @ local / (np.linalg.norm(q_mean) * np.linalg.norm(local, axis=0) + 1e-12)))
    score = np.sum(parts, 0) / np.sqrt(len(parts))
    if smooth > 1:
        score = np.convolve(score, np.ones(smooth) / smooth, "same")
    keep = floor + (1 - floor) / (1 + np.exp(-slope * (score - theta)))
    return _shipped_mask(_ctx_with_activity(ctx, act * keep))


def hp_strength(ctx: dict, gamma: float = 0.25, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """The harmonic/percussive prior's exponent set to ``gamma`` for queries whose harmonic
    fraction lies in [``low``, ``high``] (the shipped exponent 0.25 elsewhere)."""
    from sourcesep import hpss

    hq = hpss.harmonic_fraction(ctx["Vq"])
    return _shipped_mask(ctx, hp_prior=gamma if low <= hq <= high else 0.25)


def clusters(ctx: dict, free: int = 16, groups: int = 3, n_iter: int = 60, smooth: int = 9,
             power: float = 0.25, hp_prior: float = 0.25, margin: float = 1.0) -> np.ndarray:
    """The target's components taken from the mixture itself, the query only choosing them: ``free``
    atoms learned on the active frames (beside fixed background atoms from the inactive ones),
    grouped into ``groups`` sources by co-modulation (average-linkage clustering of the correlation
    of their smoothed log activations); each atom's query share is the part of it that the query's
    atoms explain when it is fitted by query and background atoms together; the group with the
    highest energy-weighted share, and any group within ``margin`` times the runner-up gap of it
    (1: the best group only), is the target."""
    import torch
    from scipy.cluster.hierarchy import fcluster, linkage

    from sourcesep import hpss, maskers, nmf

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    on = act >= 0.5
    if int(on.sum()) < 10 or int((~on).sum()) < 10:
        return shipped(ctx)
    hq = hpss.harmonic_fraction(Vq)
    Wq, Wb, Wf, _ = maskers.nmf_dictionaries(V, Vq, act, n_free_atoms=free, query_shifts=_query_shifts(Vq))
    W0 = torch.cat([Wb, Wf], 1)
    H0 = torch.full((W0.shape[1], V.shape[1]), float(V.mean()) + nmf.EPS)
    learn = torch.zeros(W0.shape[1], dtype=torch.bool)
    learn[Wb.shape[1]:] = True
    W, H = nmf.beta_nmf(V, W0, H0, n_iter=n_iter, update_w=learn, frame_weight=on.float())
    Wf, Hf = W[:, Wb.shape[1]:], H[Wb.shape[1]:]
    both = torch.cat([Wq, Wb], 1)
    Hfit = nmf.fit_activations(Wf, both, n_iter=60)  # each free atom as a mix of query and background atoms
    qpart = (Wq @ Hfit[:Wq.shape[1]]).sum(0)
    share = (qpart / (both @ Hfit).sum(0).clamp_min(nmf.EPS)).numpy()
    k = np.ones(smooth) / smooth
    logs = np.stack([np.convolve(np.log(h + 1e-6 * float(Hf.max())), k, "same") for h in Hf[:, on].numpy()])
    corr = np.nan_to_num(np.corrcoef(logs), nan=0.0)
    dist = np.clip(1 - corr[np.triu_indices(free, 1)], 0, 2)
    label = fcluster(linkage(dist, "average"), t=groups, criterion="maxclust")
    energy = Hf[:, on].sum(1).numpy()
    scores = {g: float((share[label == g] * energy[label == g]).sum() / energy[label == g].sum()) for g in set(label)}
    ranked = sorted(scores.values(), reverse=True)
    gap = ranked[0] - ranked[1] if len(ranked) > 1 else 1.0
    chosen = {g for g, sc in scores.items() if sc >= ranked[0] - (margin - 1) * gap}
    sel = torch.as_tensor(np.isin(label, list(chosen)))
    S = Wf[:, sel] @ Hf[sel]
    B = Wb @ H[:Wb.shape[1]] + Wf[:, ~sel] @ Hf[~sel]
    m = S.pow(power) / (S.pow(power) + B.pow(power) + nmf.EPS)
    if hp_prior > 0:
        mh = hpss.harmonic_mask(V)
        m = m * (hq * mh + (1 - hq) * (1 - mh)).pow(hp_prior)
    return (m * act[None]).clamp(0, 1).numpy()


def power_ramp(ctx: dict, low: float = 0.85, high: float = 0.95, p0: float = 0.25, p1: float = 0.5) -> np.ndarray:
    """The mask exponent rises linearly from ``p0`` at timbre match ``low`` to ``p1`` at ``high``
    (the shipped rule is a step from 0.25 to 0.5 at 0.9)."""
    from sourcesep import timbre

    match = timbre.timbre_match(ctx["V"], ctx["Vq"], _activity(ctx))
    w = 0.0 if match is None else float(np.clip((match - low) / (high - low), 0, 1))
    return _shipped_mask(ctx, power=p0 + (p1 - p0) * w, matched_threshold=2.0)


# --------------------------------------------------------------------------- round 7: pitch comb, MISI
#
# These two variants may return a waveform instead of a mask: a 1-D array (n,) is scored as the
# target estimate itself (see _score_case); a 2-D (F, T) array is a mask on the 512-point STFT.

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


def _pitch_track(mag: np.ndarray, n_fft: int, f0_range: tuple[float, float] | None = None,
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

    m = _shipped_mask(ctx)
    if hpss.harmonic_fraction(ctx["Vq"]) < min_hq:
        return m
    hop = HOP
    Qb = features.magnitude(features.stft(ctx["q"], n_fft, hop)).numpy()
    qf0, qv = _pitch_track(Qb, n_fft, fmax=fmax, decay=decay)
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
    f0, v = _pitch_track(Vt, n_fft, rng, fmax=fmax, decay=decay)
    weight = np.clip((v - vthr) / max(vramp, 1e-6), 0, 1)
    comb = _harmonic_comb(f0, weight, domain, width, jitter, fmax, floor)
    if mode == "max":  # raise the mask towards the lobes of voiced active frames, below fmax
        lobes = _harmonic_comb(f0, np.ones_like(weight), domain, width, jitter, fmax, 0.0)
        lobes[np.arange(lobes.shape[0]) * SR / domain > fmax] = 0.0
        lift = boost * _activity(ctx)[None, :] * weight[None, :] * lobes
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


def misi(ctx: dict, iters: int = 5, output: str = "stft"):
    """MISI (multiple input spectrogram inversion, Gunawan & Sen 2010) from the shipped mask m.

    Two sources on the 512-point STFT, target m·X and residual (1 − m)·X, keep their magnitudes
    |m·X| and |(1 − m)·X| while their phases are re-estimated ``iters`` times: each source's time
    signal y_j = iSTFT(Ŝ_j) gets half of the mixture error e = x − y_1 − y_2, and Ŝ_j takes the
    phase of STFT(y_j + e/2). ``output`` "stft" returns iSTFT(Ŝ_target) (the magnitude-constrained
    estimate), "time" the last y_target + e/2 (the two estimates then sum to the mixture).
    ``iters=0`` returns the shipped estimate. Returns the target waveform (n,) float64.
    """
    import torch

    from sourcesep import features

    X, x = ctx["X"], ctx["x"]
    n = x.shape[-1]
    m = torch.from_numpy(np.asarray(_shipped_mask(ctx), dtype=np.float32))
    A = torch.stack([m * X.abs(), (1 - m) * X.abs()])  # (2, F, T) fixed magnitudes
    S = torch.stack([m * X, (1 - m) * X])  # (2, F, T) complex, mixture phase to start
    y = features.istft(S, NFFT, HOP, n)
    for _ in range(iters):
        e = x - y.sum(0)
        Y = features.stft(y + 0.5 * e, NFFT, HOP)
        S = A * Y / Y.abs().clamp_min(1e-12)
        y = features.istft(S, NFFT, HOP, n)
    if output == "time" and iters > 0:
        return (y[0] + 0.5 * (x - y.sum(0))).numpy().astype(np.float64)
    return y[0].numpy().astype(np.float64)


def _random_envelopes(n: int, w, eq_db: float, gen):
    """(n, F) random smooth magnitude gains: per example, one gain per band of w (n_bands, F),
    the mel-band interpolation weights of :func:`_band_weights` (triangular, columns summing to
    1), drawn uniformly in ± ``eq_db`` dB and interpolated across the F bins, so the gain varies
    smoothly over frequency. ``gen`` a torch.Generator; returns float32 linear magnitude factors
    (1 = unchanged)."""
    import torch

    db = (torch.rand(n, w.shape[0], generator=gen) * 2 - 1) * eq_db  # (n, bands) dB
    return torch.pow(10.0, (db @ w) / 20)  # (n, F)


def _random_crops(P, n: int, length: int, gen):
    """(n, F, length) random time crops of the magnitude pool P (F, Tp) (tiled when Tp < length)."""
    import torch

    if P.shape[1] < length:
        P = P.repeat(1, length // P.shape[1] + 1)
    start = torch.randint(0, P.shape[1] - length + 1, (n,), generator=gen)
    return torch.stack([P[:, s:s + length] for s in start.tolist()])


def ttt_eq(ctx: dict, gamma: float = 0.25, combine: str = "pow", eq_db: float = 6.0, eq_bands: int = 8,
           shift_st: float = 0.0, snr_lo: float = -10.0, snr_hi: float = 5.0, bg: str = "resid",
           bg_sharp: float = 4.0, additive: str = "power", loss: str = "sa", feat: str = "mel",
           n_mels: int = 24, channels: int = 16, kernel: int = 5, steps: int = 120, batch: int = 8,
           crop: int = 32, lr: float = 0.01, q_loud_db: float = 40.0, q_shifts: bool = True,
           m2_floor: float = 0.0, bg_eq_db: float = 0.0) -> np.ndarray:
    """A test-time-trained mask network (round 4's idea) whose training queries get random
    spectral envelopes, so it cannot learn the query recording's envelope, only its class-like
    structure; its mask m₂ then refines the shipped mask m_nmf (F, T).

    Training (per pair, ``steps`` Adam steps at learning rate ``lr``, ``batch`` examples of
    ``crop`` frames of the 512-point / hop-256 STFT, torch seeded with 0): target = a random crop
    of the query magnitude |Q| (F, Tq) restricted to its frames within ``q_loud_db`` dB of its
    loudest (digital silence and near-silence dropped; tiled when shorter than ``crop``) or, with
    ``q_shifts`` and a clearly harmonic query (the shipped rule, :func:`_query_shifts`), with equal
    probability of one of its copies transposed by the shipped HARMONIC_QUERY_SHIFTS, times a
    random smooth envelope (:func:`_random_envelopes`:
    ``eq_bands`` mel-band gains uniform in ± ``eq_db`` dB; 0 turns the augmentation off, the
    round-4 control) and transposed by a uniform ± ``shift_st`` semitones; background = a random
    crop of the first pass's residual: ``bg`` "resid" |X|·(1 − m_s) over all frames, m_s the
    shipped mask sharpened to m^k / (m^k + (1 − m)^k), k = ``bg_sharp`` (k 4 undoes the shipped
    exponent 0.25, giving about the NMF's magnitude ratio); "inactive" the mixture's frames with
    activity < 0.5 (fall back to "resid" when fewer than ``crop``); "both" either with
    probability 1/2; its crops get random envelopes of ± ``bg_eq_db`` dB too (0: none), so that
    neither side's envelope identifies it. The target is scaled to a target-to-background energy ratio uniform in
    [``snr_lo``, ``snr_hi``] dB and the two are added as powers (``additive`` "power":
    |Y| = √(|S|² + |N|²)) or magnitudes ("mag": |Y| = |S| + |N|). Loss ``loss`` "sa": mean
    squared error of m₂·|Y| against |S|, divided by the batch's mean |S|² (signal
    approximation); "bce": binary cross-entropy of m₂ against |S|² / (|S|² + |N|²).

    Network: input log(``n_mels``-band mel power + 1e-8), (``feat`` "mel"; "lin": log of the 257
    bins' power), minus the mixture's own mean of it (a level reference shared by training and
    inference); two temporal 1-D convolutions of ``kernel`` frames with ``channels`` channels
    and ReLU, then a per-frame linear layer to 257 bins and a sigmoid: m₂ (F, T) in [0, 1].

    Output (F, T) float32 in [0, 1], with m₂ first raised to at least ``m2_floor`` (bounds what
    the network can remove): ``combine`` "pow": m_nmf · m₂^``gamma``; "sqrt": √(m_nmf · m₂);
    "only": m₂ times the detector's activity (T,).
    """
    import torch

    from sourcesep import features

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    m_nmf = torch.from_numpy(np.asarray(_shipped_mask(ctx), dtype=np.float32))
    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    F = V.shape[0]
    if float(act.max()) <= 0 or float(Vq.sum()) <= 0:
        return m_nmf.numpy()
    q_level = 10 * torch.log10(Vq.double().square().sum(0) + 1e-20)
    Vq = Vq[:, q_level > q_level.max() - q_loud_db]
    q_pool = [Vq] + [features.shift_frequency(Vq, float(st)) for st in (_query_shifts(ctx["Vq"]) if q_shifts else ())]
    k = bg_sharp
    ms = m_nmf.pow(k) / (m_nmf.pow(k) + (1 - m_nmf).pow(k) + 1e-12)
    resid = V * (1 - ms)  # (F, T)
    inactive = V[:, act < 0.5]
    pools = {"resid": [resid], "inactive": [inactive if inactive.shape[1] >= crop else resid]}
    pools["both"] = pools["resid"] + pools["inactive"]
    pool = pools[bg]

    if feat == "mel":
        fb = features.mel_filterbank(F, n_mels, SR, 50.0, 8000.0, norm=None)  # (n_mels, F)
    else:
        fb = torch.eye(F)
    ref = torch.log(fb @ V.square() + 1e-8).mean()

    def net_in(mag):  # (n, F, L) magnitude → (n, n_in, L) features
        return torch.log(torch.einsum("mf,nfl->nml", fb, mag.square()) + 1e-8) - ref

    net = torch.nn.Sequential(
        torch.nn.Conv1d(fb.shape[0], channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, F, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    env_w = _band_weights(F, eq_bands).float()  # (eq_bands, F)
    for _ in range(steps):
        S = torch.cat([_random_crops(q_pool[i], 1, crop, gen)
                       for i in torch.randint(0, len(q_pool), (batch,), generator=gen).tolist()])
        if eq_db > 0:
            S = S * _random_envelopes(batch, env_w, eq_db, gen)[:, :, None]
        if shift_st > 0:
            shifts = ((torch.rand(batch, generator=gen) * 2 - 1) * shift_st).tolist()
            S = torch.stack([features.shift_frequency(s, st) for s, st in zip(S, shifts)])
        which = torch.randint(0, len(pool), (batch,), generator=gen).tolist()
        N = torch.cat([_random_crops(pool[i], 1, crop, gen) for i in which])
        if bg_eq_db > 0:
            N = N * _random_envelopes(batch, env_w, bg_eq_db, gen)[:, :, None]
        snr = snr_lo + torch.rand(batch, generator=gen) * (snr_hi - snr_lo)
        es, en = S.square().sum((1, 2)), N.square().sum((1, 2))
        S = S * torch.sqrt(en * torch.pow(10.0, snr / 10) / es.clamp_min(1e-20))[:, None, None]
        Y = torch.sqrt(S.square() + N.square()) if additive == "power" else S + N
        logits = net(net_in(Y))
        if loss == "bce":
            target = S.square() / (S.square() + N.square()).clamp_min(1e-20)
            err = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        else:
            err = (torch.sigmoid(logits) * Y - S).square().mean() / S.square().mean().clamp_min(1e-20)
        opt.zero_grad()
        err.backward()
        opt.step()
    with torch.no_grad():
        m2 = torch.sigmoid(net(net_in(V[None])))[0].clamp_min(m2_floor)  # (F, T)
    if combine == "sqrt":
        out = torch.sqrt(m_nmf * m2)
    elif combine == "only":
        out = m2 * act[None, :]
    else:
        out = m_nmf * m2.pow(gamma)
    return out.clamp(0, 1).numpy().astype(np.float32)


def _frame_gate(share, gamma: float, floor: float, smooth: int):
    """(T,) gain :func:`sourcesep.maskers.frame_gain` (``gamma``, ``floor``) of a per-frame target
    share (T,), clipped to [0, 1] and first smoothed over ``smooth`` frames (edge-replicated)."""
    import torch

    from sourcesep import hpss, maskers

    s = torch.as_tensor(share, dtype=torch.float64).clamp(0, 1)
    if smooth > 1:
        s = hpss.smooth_along_time(s[None], int(smooth) | 1)[0]
    return maskers.frame_gain(s, power=gamma, floor=floor)


def share_gt(ctx: dict, gamma: float = 0.5, floor: float = 0.0, smooth: int = 1) -> np.ndarray:
    """Bound: the shipped mask times a frame gain from the true target's share of each frame's
    energy, sum_f |G|² / sum_f |X|² (clipped to 1; :func:`_frame_gate`): what a perfect frame-level
    presence score would give when it gates the detected activity softly."""
    import torch

    m = torch.from_numpy(np.asarray(_shipped_mask(ctx), dtype=np.float32))
    share = ctx["G"].double().square().sum(0) / ctx["V"].double().square().sum(0).clamp_min(1e-20)
    return (m * _frame_gate(share, gamma, floor, smooth)[None, :]).clamp(0, 1).numpy()


def _ttt_share(ctx: dict, m_nmf, eq_db: float = 12.0,
             eq_bands: int = 8, snr_lo: float = -10.0, snr_hi: float = 5.0, bg_sharp: float = 4.0,
             p_absent: float = 0.25, p_part: float = 0.5, n_mels: int = 24, channels: int = 16,
             kernel: int = 5, steps: int = 150, batch: int = 8, crop: int = 32, lr: float = 0.01,
             q_loud_db: float = 40.0, bg: str = "resid", seed: int = 0):
    """(T,) per-frame target share from one network trained as :func:`ttt_gate` describes."""
    import torch

    from sourcesep import features

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    F = V.shape[0]
    q_level = 10 * torch.log10(Vq.double().square().sum(0) + 1e-20)
    Vq = Vq[:, q_level > q_level.max() - q_loud_db]
    q_pool = [Vq] + [features.shift_frequency(Vq, float(st)) for st in _query_shifts(ctx["Vq"])]
    k = bg_sharp
    ms = m_nmf.pow(k) / (m_nmf.pow(k) + (1 - m_nmf).pow(k) + 1e-12)
    inactive = V[:, act < 0.5]
    pool = V * (1 - ms) if bg == "resid" or inactive.shape[1] < crop else inactive
    fb = features.mel_filterbank(F, n_mels, SR, 50.0, 8000.0, norm=None)
    ref = torch.log(fb @ V.square() + 1e-8).mean()

    def net_in(mag):
        return torch.log(torch.einsum("mf,nfl->nml", fb, mag.square()) + 1e-8) - ref

    net = torch.nn.Sequential(
        torch.nn.Conv1d(n_mels, channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    env_w = _band_weights(F, eq_bands).float()
    for _ in range(steps):
        S = torch.cat([_random_crops(q_pool[i], 1, crop, gen)
                       for i in torch.randint(0, len(q_pool), (batch,), generator=gen).tolist()])
        S = S * _random_envelopes(batch, env_w, eq_db, gen)[:, :, None]
        on = torch.ones(batch, crop)
        u = torch.rand(batch, generator=gen)
        for b in range(batch):
            if u[b] < p_absent:
                on[b] = 0
            elif u[b] < p_absent + p_part:
                a, z = sorted(torch.randint(0, crop + 1, (2,), generator=gen).tolist())
                on[b] = 0
                on[b, a:max(z, a + 1)] = 1
        N = _random_crops(pool, batch, crop, gen)
        snr = snr_lo + torch.rand(batch, generator=gen) * (snr_hi - snr_lo)
        es = (S.square().sum(1) * on).sum(1) / on.sum(1).clamp_min(1)
        en = N.square().sum((1, 2)) / crop
        scale = torch.sqrt(en * torch.pow(10.0, snr / 10) / es.clamp_min(1e-20))
        S = S * scale[:, None, None] * on[:, None, :]
        ps, pn = S.square().sum(1), N.square().sum(1)  # (batch, crop)
        label = ps / (ps + pn).clamp_min(1e-20)
        logits = net(net_in(torch.sqrt(S.square() + N.square())))[:, 0]
        err = torch.nn.functional.binary_cross_entropy_with_logits(logits, label)
        opt.zero_grad()
        err.backward()
        opt.step()
    with torch.no_grad():
        return torch.sigmoid(net(net_in(V[None]))[0, 0])


def nmf_gate(ctx: dict, gamma: float = 0.5, floor: float = 0.1, smooth: int = 5, sharp: float = 4.0,
             rel: float = 0.0) -> np.ndarray:
    """The shipped mask times a frame gain (:func:`_frame_gate`) from the shipped decomposition's
    own target share of each frame's energy, sum_f m_s·|X|² / sum_f |X|², m_s the shipped mask
    sharpened to m^k / (m^k + (1 − m)^k), k = ``sharp`` (4 undoes the exponent 0.25: about the
    NMF's magnitude ratio); the baseline for ``ttt-gate``. ``rel`` > 0 divides the share by its
    ``rel``-th percentile over the active frames (clipped to 1), so the gate is relative to how
    much the query atoms explain where they explain the most."""
    import torch

    m = torch.from_numpy(np.asarray(_shipped_mask(ctx), dtype=np.float32))
    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    ungated = m / act.clamp_min(1e-6)[None, :]
    ms = ungated.pow(sharp) / (ungated.pow(sharp) + (1 - ungated).clamp_min(0).pow(sharp) + 1e-12)
    P = ctx["V"].float().square()
    share = (ms * P).sum(0) / P.sum(0).clamp_min(1e-20)
    if rel > 0 and bool((act >= 0.5).any()):
        share, smooth = _relative(_frame_gate(share, 1.0, 0.0, smooth), act, rel), 1
    return (m * _frame_gate(share, gamma, floor, smooth)[None, :]).clamp(0, 1).numpy()


def _relative(share, act, rel: float):
    """share (T,) divided by its ``rel``-th percentile over the active frames (activity ``act``
    (T,) ≥ 0.5; there must be some), clipped to 1."""
    import torch

    ref = torch.quantile(share[act >= 0.5].double(), rel / 100)
    return (share / ref.clamp_min(1e-6)).clamp(0, 1)


def ttt_gate(ctx: dict, gamma: float = 0.5, floor: float = 0.1, smooth: int = 5, ensemble: int = 1,
             **kw) -> np.ndarray:
    """A test-time-trained *frame* detector: a small network learns, per pair, each frame's target
    share of the energy from synthetic mixtures, and its output gates the shipped mask in time
    (the masks of rounds 4 and 8 worked per bin; this works per frame, where many bins agree).

    Training (``steps`` Adam steps, ``batch`` examples of ``crop`` frames, torch seeded with 0):
    target = a random crop of the query's loud frames (within ``q_loud_db`` of its loudest; its
    transposed copies for a clearly harmonic query, the shipped rule) times a random smooth
    envelope of ± ``eq_db`` dB over ``eq_bands`` mel bands (so the envelope cannot identify it);
    with probability ``p_absent`` no target, with ``p_part`` the target only on a random
    contiguous part of the crop (so the network sees onsets and offsets); background = a crop of
    the first pass's residual |X|·(1 − m_s) (``bg`` "resid", m_s the shipped mask sharpened with
    exponent ``bg_sharp``) or of the frames with activity < 0.5 ("inactive"). Target-to-background
    energy ratio uniform in [``snr_lo``, ``snr_hi``] dB over the target's frames, added as powers.
    Label per frame: the target's share of the frame's energy; loss: binary cross-entropy.
    Network: log-mel (``n_mels`` bands) minus the mixture's mean, two temporal convolutions of
    ``kernel`` frames and ``channels`` channels with ReLU, a linear layer to one logit per frame.

    Output: the shipped mask times :func:`_frame_gate` of the network's share on the mixture
    (``gamma``, ``floor``, ``smooth``). ``seed`` seeds torch (initialisation and sampling); with
    ``ensemble`` > 1 that many networks (seeds ``seed``, ``seed`` + 1, …) are trained and their
    shares averaged."""
    import torch

    m_nmf = torch.from_numpy(np.asarray(_shipped_mask(ctx), dtype=np.float32))
    if float(_activity(ctx).max()) <= 0 or float(ctx["Vq"].sum()) <= 0:
        return m_nmf.numpy()
    seed = int(kw.pop("seed", 0))
    share = torch.stack([_ttt_share(ctx, m_nmf, seed=seed + i, **kw) for i in range(max(1, ensemble))]).mean(0)
    return (m_nmf * _frame_gate(share, gamma, floor, smooth)[None, :]).clamp(0, 1).numpy()


ttt_gate.passes_to = _ttt_share  # its **kw: listed by --list


def _mask_from_parts(ctx: dict, S, B, act, gain_share=None, gain_power: float | None = None, **ratio_kw):
    """The shipped mask (F, T) from given NMF parts S, B (F, T): :func:`sourcesep.maskers.ratio_mask`
    (``ratio_kw`` its keyword arguments, e.g. the exponents), the frame gain (from ``gain_share``
    (T,) when given, else from S and B) and the activity gate ``act`` (T,)."""
    from sourcesep import hpss, maskers

    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    m, _ = maskers.ratio_mask(V, Vq, S, B, act, harmonic_fraction=hpss.harmonic_fraction(Vq), **ratio_kw)
    gp = ctx["frame_gain_power"] if gain_power is None else gain_power
    if gp > 0:
        share = _nmf_share(V, S, B) if gain_share is None else gain_share
        m = m * maskers.frame_gain(share, power=gp, floor=maskers.FRAME_GAIN_FLOOR)[None, :]
    return (m * act[None, :]).clamp(0, 1).numpy()


def _nmf_share(V, S, B, width: int = 15):
    """(T,) the decomposition's target share of each frame's energy over ``width`` frames
    (:func:`sourcesep.maskers.frame_share`, as the shipped frame gain uses it)."""
    from sourcesep import maskers

    return maskers.frame_share(V, S, B, width=width)


def _shipped_parts(ctx: dict, alpha: float = 1.0, alpha_matched: float | None = None, **fit_kw):
    """(activity (T,), V (F, T), Vq (F, Tq), S, B) of the shipped masker's decomposition, or None
    when the activity is zero everywhere (the caller returns a zero mask). ``fit_kw``: further
    keyword arguments of :func:`sourcesep.maskers.nmf_fit` (iterations, sizes, β). The
    decomposition runs on magnitudes raised to the compression :func:`_compressed` picks from
    ``alpha`` and ``alpha_matched`` (as shipped by default: ``--matched-compression`` for a
    matching query, none otherwise); S and B are taken back to magnitudes."""
    from sourcesep import maskers

    if (inputs := _compressed(ctx, alpha, alpha_matched)) is None:
        return None
    act, alpha, Vc, Vqc = inputs
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    S, B, _ = maskers.nmf_two_pass(Vc, Vqc, act,
                                   threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                   n_free_atoms=maskers.free_atoms_for(ctx["det"]), query_shifts=_query_shifts(Vq),
                                   seed=ctx["seed"], **fit_kw)
    return act, V, Vq, S.pow(1 / alpha), B.pow(1 / alpha)


def _compressed(ctx: dict, alpha: float = 1.0, alpha_matched: float | None = None):
    """(activity (T,), a, V^a (F, T), Vq^a (F, Tq)) with a the magnitude compression for this pair:
    ``alpha_matched`` (default ``--matched-compression``, as shipped) for a matching query, else
    ``alpha`` (1 as shipped), or None when the activity is zero everywhere (the caller returns a
    zero mask)."""
    import torch

    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    if float(act.max()) <= 0:
        return None
    if _matched(ctx):
        alpha = ctx["matched_compression"] if alpha_matched is None else alpha_matched
    return act, alpha, ctx["V"].float().pow(alpha), ctx["Vq"].float().pow(alpha)


def _zero_mask(ctx: dict) -> np.ndarray:
    return np.zeros(tuple(ctx["V"].shape), np.float32)


def two_pass(ctx: dict, thr: float = 0.3, width: int = 15, passes: int = 2, rel: float = 0.0,
             cap: float = 1.0, skip_above: float = 1.0) -> np.ndarray:
    """A second decomposition whose background atoms also learn from the active frames that the
    first one gives a low target share (below ``thr``; share as the shipped frame gain's, over
    ``width`` frames): interferers that sound only inside the detected activity then get
    background atoms. Mask as shipped, from the second decomposition (with ``passes`` > 2, each
    further pass takes its background frames from the previous one's share). A pass that would
    hand over more than ``skip_above`` of the active frames is not run."""
    import torch

    from sourcesep import maskers

    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    on = act >= 0.5
    for _ in range(passes - 1):
        share = _nmf_share(V, S, B, width)
        limit = thr
        if rel > 0 and bool(on.any()):
            limit = thr * float(torch.quantile(share[on], rel / 100))
        low = share < limit
        if cap < 1 and bool(on.any()):
            limit_cap = float(torch.quantile(share[on], cap))
            low &= share < limit_cap
        if not bool((low & on).any()):
            break  # nothing new for the background atoms: the decomposition stays as it is
        if float((low & on).sum()) > skip_above * float(on.sum()):
            break  # (nearly) every active frame would go: the first decomposition is kept
        act_b = torch.where(low, torch.zeros_like(act), act)
        S, B = maskers.nmf_parts(V, Vq, act_b, n_free_atoms=maskers.free_atoms_for(ctx["det"]),
                                 query_shifts=_query_shifts(Vq), seed=ctx["seed"])
    return _mask_from_parts(ctx, S, B, act)


def iters(ctx: dict, dict_iter: int = 40, fit_iter: int = 40) -> np.ndarray:
    """The shipped two-pass masker with ``dict_iter`` multiplicative updates for learning the query
    and background dictionaries and ``fit_iter`` for the decompositions (shipped: 40 for both)."""
    if (parts := _shipped_parts(ctx, n_iter=dict_iter, fit_iter=fit_iter)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    return _mask_from_parts(ctx, S, B, act)


def share_floor(ctx: dict, lam: float = 0.5, k: float = 2.0, width: int = 15) -> np.ndarray:
    """The shipped mask (scaled to a largest value of 1) relaxed towards the mixture where the
    decomposition gives a frame a high target share: m + (1 − m)·``lam``·share^``k`` inside the
    activity (share as the frame gain's, over ``width`` frames), so frames the target dominates
    keep more of the mixture and lose less of the target to the mask's errors."""
    import torch

    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    m = torch.as_tensor(_mask_from_parts(ctx, S, B, act))
    if float(m.max()) <= 0:
        return m.numpy()
    m = m / m.max()
    phi = lam * _nmf_share(V, S, B, width).clamp(0, 1).pow(k) * act
    return (m + (1 - m) * phi[None, :]).clamp(0, 1).numpy()


def adapt_q(ctx: dict, lam: float = 0.3, n_iter: int = 40) -> np.ndarray:
    """The shipped two-pass masker whose second decomposition also adapts the query atoms to the
    mixture, on the frames still counted as the target's (active, not handed to the background),
    each step pulled back towards the query's own atoms: W_q ← W_q0^(1 − ``lam``) · W_q'^``lam``
    (W_q' the multiplicative update, columns renormalised). ``lam`` 0 is the shipped masker."""
    import torch

    from sourcesep import maskers, nmf

    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    if float(act.max()) <= 0:
        return _zero_mask(ctx)
    kw = dict(n_free_atoms=maskers.free_atoms_for(ctx["det"]), query_shifts=_query_shifts(Vq), seed=ctx["seed"])
    first = maskers.nmf_fit(V, Vq, act, **kw)
    kq = first.n_query_atoms
    low = maskers.frame_share(V, *first.parts(), width=5) < maskers.second_pass_for(ctx["det"], ctx["second_pass_share"])
    act_b = torch.where(low, torch.zeros_like(act), act)
    Wq0, Wb, Wf, fixed_b = maskers.nmf_dictionaries(V, Vq, act_b, query_atoms=first.W[:, :kq], **kw)
    W = torch.cat([Wq0, Wb, Wf], dim=1)
    H = torch.full((W.shape[1], V.shape[1]), float(V.mean()) + nmf.EPS)
    learn = torch.zeros(W.shape[1], dtype=torch.bool)
    learn[kq + (Wb.shape[1] if fixed_b else 0):] = True
    learn_q = torch.zeros_like(learn)
    learn_q[:kq] = True
    target_frames = (act_b >= 0.5).float()
    for _ in range(n_iter):
        W, H = nmf.beta_nmf(V, W, H, n_iter=1, update_w=learn)
        if lam > 0 and float(target_frames.sum()) > 0:
            Wu, _ = nmf.beta_nmf(V, W, H, n_iter=1, update_w=learn_q, update_h=False, frame_weight=target_frames)
            Wq = Wq0.clamp_min(nmf.EPS).pow(1 - lam) * Wu[:, :kq].pow(lam)
            W = torch.cat([Wq / Wq.sum(0, keepdim=True), W[:, kq:]], dim=1)
    S, B = W[:, :kq] @ H[:kq], W[:, kq:] @ H[kq:]
    return _mask_from_parts(ctx, S, B, act)


def share_mix(ctx: dict, weight: float = 0.5, mode: str = "geo", width: int = 15) -> np.ndarray:
    """The frame gain from a blend of two shares: the masker's decomposition's (as shipped) and the
    query detector's own (query atoms' share of its semi-supervised IS-NMF of the whole mixture,
    :func:`sourcesep.querydetect.query_scores`, energy-weighted per frame), ``weight`` on the
    detector's; ``mode`` "geo" (weighted geometric mean) or "mean" (arithmetic)."""
    from sourcesep.querydetect import query_scores

    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    a = _nmf_share(V, S, B, width)
    det_parts = query_scores(V, Vq)
    b = _nmf_share(V, det_parts["query_mag"], det_parts["background_mag"], width)
    if mode == "geo":
        share = a.clamp_min(1e-6).pow(1 - weight) * b.clamp_min(1e-6).pow(weight)
    else:
        share = (1 - weight) * a + weight * b
    return _mask_from_parts(ctx, S, B, act, gain_share=share)


def matched_gain(ctx: dict, p1: float = 0.5, rel: float = 0.0) -> np.ndarray:
    """The frame gain's exponent raised to ``p1`` when the query's timbre matches the active frames
    (the shipped rule that sharpens the mask: a query from the target's own recording, whose
    atoms explain the target well, so its share is trustworthy); ``rel`` > 0 also divides the
    share by its ``rel``-th percentile over the active frames for such queries."""
    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, _, S, B = parts
    if not _matched(ctx):
        return _mask_from_parts(ctx, S, B, act)
    share = _nmf_share(V, S, B)
    if rel > 0 and bool((act >= 0.5).any()):
        share = _relative(share, act, rel)
    return _mask_from_parts(ctx, S, B, act, gain_share=share, gain_power=p1)


def share_from(ctx: dict, beta: float = 1.0, kq: int = 32, kb: int = 32, free: int = -1, env_db: float = 0.0,
               env_copies: int = 0, n_iter: int = 40, width: int = 15) -> np.ndarray:
    """The shipped mask, with the frame gain's share taken from another decomposition: β
    divergence ``beta`` (1 KL as shipped, 0 Itakura-Saito), ``kq`` query / ``kb`` background atoms,
    ``free`` free atoms (−1: as shipped), and ``env_copies`` copies of the query's frames under
    random smooth envelopes of ± ``env_db`` dB (8 mel bands) added to the query atoms' training
    frames (so they model the class more than the recording's envelope). Like the shipped one, the
    other decomposition runs a second pass (``--second-pass-share``)."""
    import torch

    from sourcesep import maskers

    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    n_free = maskers.free_atoms_for(ctx["det"]) if free < 0 else free
    Vq2 = Vq
    if env_copies > 0 and env_db > 0:
        gen = torch.Generator().manual_seed(0)
        w = _band_weights(V.shape[0], 8).float()
        Vq2 = torch.cat([Vq] + [Vq[:, ::2] * _random_envelopes(1, w, env_db, gen)[0][:, None]
                                for _ in range(env_copies)], dim=1)
    S2, B2, _ = maskers.nmf_two_pass(V, Vq2, act, threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                     n_query_atoms=kq, n_background_atoms=kb, n_free_atoms=n_free, n_iter=n_iter,
                                     beta=beta, query_shifts=_query_shifts(Vq), seed=ctx["seed"])
    return _mask_from_parts(ctx, S, B, act, gain_share=_nmf_share(V, S2, B2, width))


# --------------------------------------------------------------------------- round 11

def seed_ensemble(ctx: dict, n: int = 3) -> np.ndarray:
    """The mean of ``n`` shipped masks whose decompositions start from different random atoms
    (NMF seeds ``n·seed`` … ``n·seed + n − 1``, so the runs of ``--seeds`` use disjoint sets)."""
    return np.mean([_shipped_mask(ctx, seed=n * ctx["seed"] + i) for i in range(n)], axis=0)


def prune_atoms(ctx: dict, thr: float = 0.8) -> np.ndarray:
    """Query atoms that a background atom resembles (cosine ≥ ``thr``) counted as background: a
    query atom the inactive frames also hold models the interferer as much as the target. Mask as
    shipped from the re-attributed parts of one decomposition (no change without fixed background
    atoms; ``thr`` > 1 gives the mask of ``--second-pass-share 0``)."""
    import torch

    from sourcesep import maskers

    act = torch.as_tensor(_activity(ctx), dtype=torch.float32)
    if float(act.max()) <= 0:
        return _zero_mask(ctx)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    kq = kb = 32
    W, H, _, fixed_b = maskers.nmf_fit(V, Vq, act, n_query_atoms=kq, n_background_atoms=kb,
                                       n_free_atoms=maskers.free_atoms_for(ctx["det"]),
                                       query_shifts=_query_shifts(Vq), seed=ctx["seed"])
    keep = torch.ones(kq)
    if fixed_b:
        unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-12)
        keep = ((unit[:, :kq].T @ unit[:, kq:kq + kb]).max(1).values < thr).float()
    S = (W[:, :kq] * keep) @ H[:kq]
    return _mask_from_parts(ctx, S, W @ H - S, act)


def band_gain(ctx: dict, bands: int = 4, width: int = 15) -> np.ndarray:
    """The frame gain computed per frequency band: the decomposition's target share of each of
    ``bands`` mel-spaced bands (averaged over ``width`` frames), linearly interpolated across the
    bins, so a frame whose low band the target fills and whose high band an interferer fills is
    turned down only where the interferer is. ``bands=1`` is the shipped gain."""
    import torch

    from sourcesep import features, hpss, maskers

    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    m, _ = maskers.ratio_mask(V, Vq, S, B, act, harmonic_fraction=hpss.harmonic_fraction(Vq))
    F = V.shape[0]
    hz = features._mel_to_hz(np.linspace(0.0, features._hz_to_mel(SR / 2), bands + 1))
    edges = (hz / (SR / 2) * (F - 1)).round().astype(int)
    rows = [slice(lo, max(hi, lo + 1)) for lo, hi in zip(edges[:-1], edges[1:])]  # each band's bins
    shares = [maskers.frame_share(V[r], S[r], B[r], width=width) for r in rows]
    centres = (edges[:-1] + edges[1:]) / 2
    interp = torch.as_tensor(np.stack([np.interp(np.arange(F), centres, row) for row in np.eye(bands)]),
                             dtype=torch.float32)  # (bands, F): each bin between its two nearest bands
    gain = maskers.frame_gain(interp.T @ torch.stack(shares), power=ctx["frame_gain_power"])
    return (m * gain * act[None, :]).clamp(0, 1).numpy()


def _exemplar_dictionary(V, n_components: int, *, n_iter: int = 80, beta: float = 1.0, seed: int = 0):
    """:func:`sourcesep.nmf.learn_dictionary` started from ``n_components`` of V's own frames, evenly
    spaced in their order of loudness, instead of random atoms (``seed`` unused)."""
    import torch

    from sourcesep import nmf

    V = torch.as_tensor(V, dtype=torch.float32)
    order = torch.argsort(V.sum(0), descending=True)
    pick = order[torch.linspace(0, len(order) - 1, n_components).round().long()]
    W0 = V[:, pick] + 1e-3 * float(V.mean()) + nmf.EPS
    H0 = torch.full((n_components, V.shape[1]), float(V.mean()) * V.shape[0] / n_components + nmf.EPS)
    W0, H0 = nmf.normalise_columns(W0, H0)
    return nmf.beta_nmf(V, W0, H0, n_iter=n_iter, beta=beta)[0]


def exemplar_init(ctx: dict) -> np.ndarray:
    """The shipped mask with the query and background dictionaries learned from exemplar frames
    (:func:`_exemplar_dictionary`) instead of random atoms: does a deterministic start remove the
    seed's spread? (The free atoms stay random.)"""
    from unittest import mock

    from sourcesep import nmf

    with mock.patch.object(nmf, "learn_dictionary", _exemplar_dictionary):
        return _shipped_mask(ctx)


def ratio_score(ctx: dict, weight: float = 0.5, harmonic_only: bool = False, matched_only: bool = False) -> np.ndarray:
    """The query detector's score weighted by the fraction of each frame the query atoms explain:
    its level computed from ``s_q · (s_q / s_all)^weight`` instead of ``s_q`` (for clearly
    harmonic queries only with ``harmonic_only``; only for a query whose timbre matches the
    shipped detection's active frames with ``matched_only``), the detection (segments and
    presence) redone with it, then the shipped mask. Cases the shipped detector misses stay
    silent."""
    from unittest import mock

    from sourcesep import querydetect

    if harmonic_only and not _query_shifts(ctx["Vq"]):  # not clearly harmonic
        return _shipped_mask(ctx)
    if matched_only and not _matched(ctx):
        return _shipped_mask(ctx)
    plain = querydetect.query_scores

    def weighted(mix_mag, query_mag, **kw):
        parts = plain(mix_mag, query_mag, **kw)
        s_q, s_b = parts["query_mag"].sum(0), parts["background_mag"].sum(0)
        w = (s_q / (s_q + s_b).clamp_min(1e-30)).clamp(1e-6, 1.0).pow(weight)
        q = parts["query_mag"] * w[None, :]  # the whole frame's sum (s_all) is unchanged
        return dict(parts, query_mag=q, background_mag=parts["background_mag"] + parts["query_mag"] - q)

    with mock.patch.object(querydetect, "query_scores", weighted):
        det = querydetect.detect_query(ctx["x"].numpy(), ctx["q"].numpy(), mix_stft=ctx["X"], query_stft=ctx["Q"],
                                       seed=ctx["seed"])
    if not det.found:
        return _zero_mask(ctx)
    return _shipped_mask(dict(ctx, det=det))


def domain(ctx: dict, alpha: float = 1.0, beta: float = 1.0, alpha_matched: float | None = None,
           beta_matched: float | None = None) -> np.ndarray:
    """Round 13: the two-pass masker (as shipped before the matched compression, which
    ``alpha_matched=0.5`` gives) with its decompositions on compressed magnitudes |X|^``alpha``
    (query and mixture alike; 1: none, 0.5: square-root, 2: power) under the beta-divergence
    ``beta`` (1: Kullback-Leibler, as shipped; 0: Itakura-Saito); the parts are taken back to
    magnitudes (S^(1/alpha)) before the shipped mask and frame gain. ``alpha_matched`` replaces
    ``alpha`` when the query's timbre matches the active frames (the shipped sharper-mask rule), and
    ``beta_matched`` (round 14) replaces ``beta`` for such a pair."""
    if beta_matched is not None and _matched(ctx):
        beta = beta_matched
    if (parts := _shipped_parts(ctx, alpha, alpha if alpha_matched is None else alpha_matched, beta=beta)) is None:
        return _zero_mask(ctx)
    act, _, _, S, B = parts
    return _mask_from_parts(ctx, S, B, act)


def _stack_frames(V, offsets):
    """(F·len(offsets), T): V (F, T) with each frame followed by its neighbours at ``offsets``
    frames (edge-replicated), so one atom spans several frames."""
    import torch

    T = V.shape[1]
    idx = torch.arange(T)
    return torch.cat([V[:, (idx + o).clamp(0, T - 1)] for o in offsets], dim=0)


def context(ctx: dict, r: int = 1, step: int = 1, average: bool = True, alpha: float = 1.0,
            alpha_matched: float | None = None) -> np.ndarray:
    """Round 13: the two-pass masker (as shipped before the matched compression) with atoms that
    span 2·``r`` + 1 frames ``step`` apart (frame-stacked NMF: an atom learns a sound's short-time
    evolution, not only its spectrum).
    The target and background parts of frame t are the mean of every stacked block's estimate of
    that frame (``average``) or the centre block's. ``alpha`` compresses the magnitudes as
    :func:`domain` does (``alpha_matched`` instead when the query's timbre matches the active
    frames, the shipped sharper-mask rule)."""
    import torch

    from sourcesep import features, maskers

    if (inputs := _compressed(ctx, alpha, alpha if alpha_matched is None else alpha_matched)) is None:
        return _zero_mask(ctx)
    act, alpha, V, Vq = inputs
    shifts = _query_shifts(ctx["Vq"])
    offsets = [k * step for k in range(-r, r + 1)]
    copies = [Vq] + [features.shift_frequency(Vq, st) for st in shifts]
    Q = torch.cat([_stack_frames(c, offsets)[:, ::(2 if i else 1)] for i, c in enumerate(copies)], dim=1)
    S, B, _ = maskers.nmf_two_pass(_stack_frames(V, offsets), Q, act,
                                   threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                   n_free_atoms=maskers.free_atoms_for(ctx["det"]), seed=ctx["seed"])
    F, T = V.shape

    def unstack(X):
        if not average:
            return X[r * F:(r + 1) * F]
        out = torch.zeros(F, T)
        idx = torch.arange(T)
        for j, o in enumerate(offsets):
            # block j of column t estimates frame t + o
            out.index_add_(1, (idx + o).clamp(0, T - 1), X[j * F:(j + 1) * F])
        return out / len(offsets)

    return _mask_from_parts(ctx, unstack(S).pow(1 / alpha), unstack(B).pow(1 / alpha), act)


def blur(ctx: dict, bins: int = 5, matched: bool = False) -> np.ndarray:
    """The shipped masker with the query's magnitudes smoothed along frequency (a moving average
    over ``bins`` bins) before its atoms are learned, so a same-class query's atoms describe its
    class's spectral shape rather than its own recording's fine structure; a matching query keeps
    its own unless ``matched``."""
    import torch

    if _matched(ctx) and not matched:
        return _shipped_mask(ctx)
    Vq = ctx["Vq"].float()
    k = torch.ones(1, 1, bins) / bins
    sm = torch.nn.functional.conv1d(torch.nn.functional.pad(Vq.T[:, None, :], (bins // 2, bins // 2), mode="replicate"), k)
    return _shipped_mask(ctx, query_mag=sm[:, 0, :].T.contiguous())


def if_matched(ctx: dict, **masker_kw) -> np.ndarray:
    """The shipped masker, with ``masker_kw`` (keyword arguments of
    :func:`sourcesep.maskers.mask_nmf`) only for a query whose timbre matches the active frames."""
    return _shipped_mask(ctx, **(masker_kw if _matched(ctx) else {}))


def if_unmatched(ctx: dict, **masker_kw) -> np.ndarray:
    """The shipped masker, with ``masker_kw`` (keyword arguments of
    :func:`sourcesep.maskers.mask_nmf`) only for a query whose timbre does not match."""
    return _shipped_mask(ctx, **({} if _matched(ctx) else masker_kw))


def bootstrap(ctx: dict, top: float = 0.2, k: int = 8, min_share: float = 0.5, width: int = 5, raw: bool = False,
              select: str = "share", only: bool = False, matched_only: bool = False) -> np.ndarray:
    """The shipped two-pass masker whose second decomposition's target dictionary also holds ``k``
    atoms learned from the mixture itself: from the first decomposition's target part of the
    active frames it trusts most (share over ``width`` frames at least ``min_share`` and in the top
    ``top`` fraction of the active frames), so the target's own recording, not only the query's,
    shapes the atoms. Round 15: ``raw`` learns them from the mixture's own magnitudes on those
    frames (not the target part, which only the query atoms' span can hold); ``select`` "gt" picks
    the frames by the true target's share of their energy instead (a bound: the mixture's cleanest
    target frames); ``only`` uses the new atoms alone as the target dictionary; ``matched_only``
    leaves a query whose timbre does not match the active frames as shipped."""
    import torch

    from sourcesep import maskers, nmf

    if select not in ("share", "gt"):
        raise ValueError(f"select must be 'share' or 'gt', got {select!r}")
    if matched_only and not _matched(ctx):
        return _shipped_mask(ctx)
    if (inputs := _compressed(ctx)) is None:
        return _zero_mask(ctx)
    act, alpha, Vc, Vqc = inputs
    kw = dict(n_free_atoms=maskers.free_atoms_for(ctx["det"]), query_shifts=_query_shifts(ctx["Vq"]), seed=ctx["seed"])
    first = maskers.nmf_fit(Vc, Vqc, act, **kw)
    S, B = first.parts()
    share = maskers.frame_share(Vc, S, B, width=width)
    on = act >= 0.5
    Wq = first.W[:, :first.n_query_atoms]
    if bool(on.any()):
        if select == "gt":
            score = (ctx["G"].double().square().sum(0) / ctx["V"].double().square().sum(0).clamp_min(1e-20)).float()
        else:
            score = share
        trusted = on & (score >= max(min_share, float(torch.quantile(score[on], 1 - top))))
        if k > 0 and int(trusted.sum()) >= 3:
            own = (Vc if raw else Vc * S / (S + B + nmf.EPS))[:, trusted]
            Wn = nmf.learn_dictionary(own, min(k, int(trusted.sum())), seed=ctx["seed"] + 11)
            Wq = Wn if only else torch.cat([Wq, Wn], dim=1)
    low = share < maskers.second_pass_for(ctx["det"], ctx["second_pass_share"])
    second = torch.where(low, torch.zeros_like(act), act) if bool((low & on).any()) else act
    S, B = maskers.nmf_fit(Vc, Vqc, second, **kw, query_atoms=Wq).parts()
    return _mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)


def exemplars(ctx: dict, n: int = 64, matched_only: bool = True) -> np.ndarray:
    """The shipped two-pass masker whose target dictionary is ``n`` of the query's own frames
    (evenly spaced over its frames within 40 dB of its loudest, each normalised to unit sum)
    instead of atoms learned from it: a query from the target's own recording is then modelled
    frame by frame (only for such a query with ``matched_only``)."""
    import torch

    from sourcesep import maskers, nmf

    if matched_only and not _matched(ctx):
        return _shipped_mask(ctx)
    if (inputs := _compressed(ctx)) is None:
        return _zero_mask(ctx)
    act, alpha, Vc, Vqc = inputs
    e = ctx["Vq"].float().square().sum(0)
    loud = torch.nonzero(e >= e.max() * 1e-4).flatten()
    pick = loud[torch.linspace(0, len(loud) - 1, min(n, len(loud))).round().long()]
    Wq = nmf.normalise_columns(Vqc[:, pick] + nmf.EPS)[0]
    S, B, _ = maskers.nmf_two_pass(Vc, Vqc, act,
                                   threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                   n_free_atoms=maskers.free_atoms_for(ctx["det"]), seed=ctx["seed"], query_atoms=Wq)
    return _mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)


def det_compress(ctx: dict, a: float = 0.5, beta: float = 0.0) -> np.ndarray:
    """The query detector run on compressed magnitudes |X|^``a`` (its dB thresholds, hysteresis
    and logistic width scaled by ``a`` to match) under the beta-divergence ``beta`` (0:
    Itakura-Saito, as shipped), then the shipped masker on its detection. Cases it misses stay
    silent."""
    from sourcesep import querydetect

    det = querydetect.detect_query(ctx["x"].numpy(), ctx["q"].numpy(), mix_stft=ctx["V"].float().pow(a),
                                   query_stft=ctx["Vq"].float().pow(a), seed=ctx["seed"], beta=beta,
                                   hysteresis_db=3.0 * a, softness_db=2.0 * a)
    if not det.found:
        return _zero_mask(ctx)
    return _shipped_mask(dict(ctx, det=det))


def smooth_h(ctx: dict, lam: float = 0.3, target_only: bool = False) -> np.ndarray:
    """Round 14: the shipped masker whose mixture fits penalise the activations' frame-to-frame
    change (temporal continuity, Virtanen 2007) with weight ``lam``, on every atom or only the
    query's (``target_only``)."""
    if (parts := _shipped_parts(ctx, smooth_h=lam, smooth_background=not target_only)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    return _mask_from_parts(ctx, S, B, act)


def dead_zone(ctx: dict, tau: float = 0.03, q: float = 1.0, matched_only: bool = False) -> np.ndarray:
    """Round 14: the shipped mask times ``min(1, r / tau)^q`` with r = S / (S + B) the
    decomposition's magnitude ratio: bins where the target explains less than ``tau`` of the
    magnitude go to 0 instead of keeping the soft mask's floor (p 0.25 keeps (S/B)^0.25)."""
    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    if matched_only and not _matched(ctx):
        return _mask_from_parts(ctx, S, B, act)
    r = S / (S + B + 1e-10)
    return _mask_from_parts(ctx, S, B, act) * (r / tau).clamp(max=1.0).pow(q).numpy()


def redetect(ctx: dict, thr: float = 0.3, hyst: float = 3.0, smooth_ms: float = 120.0, pad_ms: float = 100.0,
             gap_ms: float = 500.0, lo_pct: float = 10.0, hi_pct: float = 95.0, share: bool = False,
             act_only: bool = True) -> np.ndarray:
    """Round 14: the detector's segment rule run again on the shipped decomposition's target part
    S (whose background atoms learned on the first activity's inactive frames, a better model of
    the interferers than the detector's free atoms): the level of S per frame (or its share of the
    frame with ``share``), smoothed over ``smooth_ms``, thresholded ``thr`` of the way from its
    ``lo_pct``-th to its ``hi_pct``-th percentile (over the active frames with ``act_only``) with
    ``hyst`` dB hysteresis and only inside the old activity, then merged and padded as the detector
    does; the new activity is the old one inside the new segments, and the shipped masker runs on
    it."""
    from sourcesep import detect
    from sourcesep.querydetect import _hysteresis, _smooth

    if (parts := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, V, Vq, S, B = parts
    a = act.numpy().astype(np.float64)
    s_q = S.sum(0).double().numpy()
    s_all = s_q + B.sum(0).double().numpy()
    floor = 1e-4 * float(s_all.max()) + 1e-12
    if share:
        x = 20.0 * np.log10(s_q / (s_all + floor) + 1e-4)
    else:
        x = 20.0 * np.log10(s_q + floor)
    times = ctx["times"]
    step = float(np.median(np.diff(times)))
    score = _smooth(x, int(round(smooth_ms / 1000.0 / step)))
    on = a >= 0.5
    ref = score[on] if act_only and on.sum() > 10 else score
    lo, hi = np.percentile(ref, [lo_pct, hi_pct])
    t = lo + thr * (hi - lo)
    active = _hysteresis(score, t, t - hyst) & on
    segs = detect.segments_from_mask(active, times - step / 2, step, score, min_dur_ms=300.0, merge_gap_ms=gap_ms,
                                     padding_ms=pad_ms, duration_s=len(ctx["x"]) / SR)
    if not segs:
        return _shipped_mask(ctx)
    inside = np.zeros(len(a), bool)
    for sg in segs:
        inside |= (times >= sg.start) & (times <= sg.end)
    return _shipped_mask(_ctx_with_activity(ctx, np.where(inside, a, 0.0)))


def relax(ctx: dict, gamma: float = 0.5) -> np.ndarray:
    """Round 14: the shipped mask (scaled to a largest value of 1) raised to ``gamma`` inside the
    activity (1: as shipped; 0: the activity gate alone)."""
    m = _shipped_mask(ctx)
    if m.max() <= 0:
        return m
    m = m / m.max()
    return np.where(m > 0, np.power(m, gamma), 0.0).astype(np.float32)


def det_ensemble(ctx: dict, n: int = 3, vote: float = 0.5) -> np.ndarray:
    """Round 14: the query detector run with ``n`` NMF seeds (``n·seed`` … ``n·seed + n − 1``);
    a frame stays active where at least ``vote`` of the runs that find the target hold it, with
    their mean activity; then the shipped masker (seeded as the run's own) on that activity. When
    fewer than half of the runs find the target, the estimate is silent."""
    from sourcesep import querydetect

    dets = [querydetect.detect_query(ctx["x"].numpy(), ctx["q"].numpy(), mix_stft=ctx["X"], query_stft=ctx["Q"],
                                     seed=n * ctx["seed"] + i) for i in range(n)]
    found = [d for d in dets if d.found]
    if len(found) < n / 2:
        return _zero_mask(ctx)
    acts = np.stack([np.interp(ctx["times"], d.times_s, d.activity) for d in found])
    inside = (acts > 0).mean(0) >= vote
    return _shipped_mask(_ctx_with_activity(ctx, np.where(inside, np.maximum(acts.mean(0), 0.5), 0.0)))


def level_gain(ctx: dict, d: float = 30.0, gamma: float = 0.5, pct: float = 95.0, smooth: int = 5) -> np.ndarray:
    """Round 14: the shipped mask times a gain from each active frame's mixture level: 0 at ``d`` dB
    below the ``pct``-th percentile of the active frames' levels, 1 at it, linear in dB in between,
    raised to ``gamma`` (level smoothed over ``smooth`` frames)."""
    from sourcesep.querydetect import _smooth

    m = _shipped_mask(ctx)
    on = _activity(ctx) >= 0.5
    if m.max() <= 0 or on.sum() < 2:
        return m
    lev = _smooth(10 * np.log10(ctx["V"].double().pow(2).sum(0).numpy() + 1e-12), smooth)
    top = np.percentile(lev[on], pct)
    g = np.clip((lev - (top - d)) / d, 0.0, 1.0) ** gamma
    return (m * g[None, :]).astype(np.float32)


def pass_blend(ctx: dict, w: float = 0.5, geometric: bool = False) -> np.ndarray:
    """Round 14: the masks of the shipped masker's two decompositions blended, ``w`` times the
    first's plus (1 − ``w``) times the second's (or their weighted geometric mean), instead of the
    second's alone: a hedge for the pairs whose first share is low on the target itself. (The
    first decomposition is the one ``--second-pass-share 0`` gives; where no frame is handed
    over, both masks are the first's.)"""
    if (second := _shipped_parts(ctx)) is None:
        return _zero_mask(ctx)
    act, _, _, S2, B2 = second
    _, _, _, S1, B1 = _shipped_parts(dict(ctx, second_pass_share=0.0))
    m1, m2 = _mask_from_parts(ctx, S1, B1, act), _mask_from_parts(ctx, S2, B2, act)
    if geometric:
        return (np.power(m1, w) * np.power(m2, 1 - w)).astype(np.float32)
    return (w * m1 + (1 - w) * m2).astype(np.float32)


def fine_gate(ctx: dict, score: str = "target", db: float = 30.0, dilate: int = 5, smooth: int = 1) -> np.ndarray:
    """Round 14: the shipped mask times a hard frame gate built as ``refine-gt`` builds its bound,
    from an estimate instead of gt.wav: frames whose ``score`` energy (smoothed over ``smooth``
    frames) is within ``db`` dB of its loudest active frame, dilated by ``dilate`` frames. Scores:
    "target" (the decomposition's target part as the mask passes it, |m·X|²), "parts" (the
    decomposition's S²), "mix" (the mixture itself)."""
    from scipy.ndimage import maximum_filter1d

    from sourcesep.querydetect import _smooth

    m = _shipped_mask(ctx)
    on = _activity(ctx) >= 0.5
    if m.max() <= 0 or on.sum() < 2:
        return m
    V2 = ctx["V"].double().pow(2).numpy()
    if score == "target":
        e = (m.astype(np.float64) ** 2 * V2).sum(0)
    elif score == "parts":
        if (parts := _shipped_parts(ctx)) is None:
            return m
        e = parts[3].double().pow(2).sum(0).numpy()
    elif score == "mix":
        e = V2.sum(0)
    else:
        raise ValueError(f"score must be 'target', 'parts' or 'mix', got {score!r}")
    lev = _smooth(10 * np.log10(e + 1e-20), smooth)
    keep = lev > lev[on].max() - db
    gate = maximum_filter1d(keep.astype(float), max(1, dilate))
    return (m * gate[None, :]).astype(np.float32)


def _fit_given(Vc, Wq, Wb, n_free: int, seed: int):
    """(S, B) (F, T) of one KL fit of Vc (F, T) with the query atoms Wq (F, Kq) and background
    atoms Wb (F, Kb) fixed and ``n_free`` free atoms learned (counted as background), as
    :func:`sourcesep.maskers.nmf_fit` does with its own dictionaries."""
    import torch

    from sourcesep import nmf

    Wf = nmf.normalise_columns(nmf.random_init(Vc.shape[0], n_free, seed=seed + 7))[0]
    W0 = torch.cat([Wq, Wb, Wf], 1)
    H0 = torch.full((W0.shape[1], Vc.shape[1]), float(Vc.mean()) + nmf.EPS)
    learn = torch.zeros(W0.shape[1], dtype=torch.bool)
    learn[Wq.shape[1] + Wb.shape[1]:] = True
    W, H = nmf.beta_nmf(Vc, W0, H0, n_iter=N_ITER, update_w=learn)
    k = Wq.shape[1]
    return W[:, :k] @ H[:k], W[:, k:] @ H[k:]


def atoms_gt(ctx: dict, side: str = "both", free: int = 8, loud_db: float = 40.0, power: float = 0.25,
             matched_power: float = 0.5, gain: float = -1.0) -> np.ndarray:
    """Round 15 bound: the shipped mask from a decomposition whose dictionaries are learned from
    the true sources. ``side`` "q": the query atoms learned from gt.wav's frames within ``loud_db``
    of its loudest (the target as it sits in the mixture) and the shipped background atoms (two
    passes); "b": the shipped query atoms and background atoms learned from the whole interference
    (mix − gt); "both": both, one fit. ``free`` free atoms are learned in the fit. Splits what a
    perfect dictionary is worth into the target's and the interference's side. ``power`` and
    ``matched_power``: the mask's exponents (shipped 0.25, and 0.5 for a matching query);
    ``gain``: the frame gain's exponent (−1: as shipped)."""
    import torch

    from sourcesep import features, maskers, nmf

    if side not in ("q", "b", "both"):
        raise ValueError(f"side must be 'q', 'b' or 'both', got {side!r}")
    if (inputs := _compressed(ctx)) is None:
        return _zero_mask(ctx)
    act, alpha, Vc, Vqc = inputs
    G = ctx["G"].float()
    level = 10 * torch.log10(G.square().sum(0) + 1e-20)
    Wq_gt = nmf.learn_dictionary(G[:, level > level.max() - loud_db].pow(alpha), N_ATOMS, n_iter=N_ITER,
                                 seed=ctx["seed"])
    if side == "q":
        S, B, _ = maskers.nmf_two_pass(Vc, Vqc, act,
                                       threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                       n_free_atoms=free, query_atoms=Wq_gt, seed=ctx["seed"])
    else:
        Wq = Wq_gt if side == "both" else maskers.nmf_dictionaries(
            Vc, Vqc, act, query_shifts=_query_shifts(ctx["Vq"]), seed=ctx["seed"])[0]
        interference = features.magnitude(features.stft(ctx["x"] - ctx["g"], NFFT, HOP)).float().pow(alpha)
        Wb = nmf.learn_dictionary(interference, N_ATOMS, n_iter=N_ITER, seed=ctx["seed"] + 3)
        S, B = _fit_given(Vc, Wq, Wb, free, ctx["seed"])
    return _mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act, gain_power=None if gain < 0 else gain,
                            power=power, matched_power=matched_power)


def resid_bg(ctx: dict, k: float = 1.0, mode: str = "replace") -> np.ndarray:
    """Round 15: a second decomposition whose background atoms are learned from the first one's
    estimate of the interference on every frame, bin by bin: |X|·(1 − r)^``k`` with r = S / (S + B)
    the first decomposition's magnitude ratio (0 on the inactive frames), so the interferers that
    sound only under the target (what ``atoms-gt:side=b`` learns from the truth) get atoms of their
    own. ``mode`` "replace": those atoms instead of the shipped background atoms; "add": beside
    them. Query and free atoms as shipped; one fit, the shipped mask."""
    import torch

    from sourcesep import maskers, nmf

    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
    if (inputs := _compressed(ctx)) is None:
        return _zero_mask(ctx)
    act, alpha, Vc, Vqc = inputs
    n_free = maskers.free_atoms_for(ctx["det"])
    first = maskers.nmf_fit(Vc, Vqc, act, n_free_atoms=n_free, query_shifts=_query_shifts(ctx["Vq"]),
                            seed=ctx["seed"])
    S, B = first.parts()
    r = torch.where(act[None, :] >= 0.5, S / (S + B + nmf.EPS), torch.zeros_like(S))
    Wr = nmf.learn_dictionary(Vc * (1 - r).pow(k), N_ATOMS, n_iter=N_ITER, seed=ctx["seed"] + 5)
    nq = first.n_query_atoms
    Wq, Wb = first.W[:, :nq], first.W[:, nq:first.W.shape[1] - n_free]
    S, B = _fit_given(Vc, Wq, Wr if mode == "replace" else torch.cat([Wb, Wr], 1), n_free, ctx["seed"])
    return _mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)

def coupled_q(ctx: dict, lam: float = 1.0, n_iter: int = N_ITER) -> np.ndarray:
    """Round 15: the target dictionary learned from the query and the mixture together (coupled
    KL-NMF), an estimate of ``atoms-gt:side=q``. The shipped two passes pick the background atoms
    (inactive frames, then also the first decomposition's low-share active frames); the second
    decomposition then updates the query atoms W_q on the mixture (V ≈ W_q H_q + W_b H_b + W_f H_f)
    and, in the same step, on the query's own frames (Vq ≈ W_q H'_q, only the query atoms; without
    a harmonic query's transposed copies), the
    query frames weighted so that together they count ``lam`` times the mixture's frames: the
    atoms move towards what the mixture's target needs only as far as they still explain the
    query. As ``lam`` grows the atoms stay the query's (the shipped masker, up to the query frames'
    further updates)."""
    import torch

    from sourcesep import maskers, nmf

    if (inputs := _compressed(ctx)) is None:
        return _zero_mask(ctx)
    act, alpha, Vc, Vqc = inputs
    kw = dict(n_free_atoms=maskers.free_atoms_for(ctx["det"]), query_shifts=_query_shifts(ctx["Vq"]), seed=ctx["seed"])
    first = maskers.nmf_fit(Vc, Vqc, act, **kw)
    S, B = first.parts()
    nq = first.n_query_atoms
    Wq = first.W[:, :nq]
    low = maskers.frame_share(Vc, S, B, width=5) < maskers.second_pass_for(ctx["det"], ctx["second_pass_share"])
    second = torch.where(low, torch.zeros_like(act), act) if bool((low & (act >= 0.5)).any()) else act
    _, Wb, Wf, fixed_b = maskers.nmf_dictionaries(Vc, Vqc, second, query_atoms=Wq, n_free_atoms=kw["n_free_atoms"],
                                                  seed=ctx["seed"])
    W = torch.cat([Wq, Wb, Wf], 1)
    learn = torch.ones(W.shape[1], dtype=torch.bool)
    if fixed_b:
        learn[nq:nq + Wb.shape[1]] = False
    H = torch.full((W.shape[1], Vc.shape[1]), float(Vc.mean()) + nmf.EPS)
    Hq = torch.full((nq, Vqc.shape[1]), float(Vqc.mean()) + nmf.EPS)
    wq = lam * Vc.shape[1] / Vqc.shape[1]  # per query frame
    for _ in range(n_iter):
        H = H * (W.T @ (Vc / (W @ H).clamp_min(nmf.EPS))) / W.sum(0)[:, None].clamp_min(nmf.EPS)
        Hq = Hq * (Wq.T @ (Vqc / (Wq @ Hq).clamp_min(nmf.EPS))) / Wq.sum(0)[:, None].clamp_min(nmf.EPS)
        A = Vc / (W @ H).clamp_min(nmf.EPS)
        num, den = A @ H.T, H.sum(1)[None, :].expand(W.shape[0], -1).clone()
        Aq = Vqc / (Wq @ Hq).clamp_min(nmf.EPS)
        num[:, :nq] += wq * (Aq @ Hq.T)
        den[:, :nq] += wq * Hq.sum(1)[None, :]
        Wn = W * num / den.clamp_min(nmf.EPS)
        W = torch.where(learn[None, :], Wn, W)
        sc = torch.where(learn, W.sum(0).clamp_min(nmf.EPS), torch.ones_like(W[0]))
        W, H = W / sc, H * sc[:, None]
        Hq = Hq * sc[:nq, None]
        Wq = W[:, :nq]
    S, B = W[:, :nq] @ H[:nq], W[:, nq:] @ H[nq:]
    return _mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)


VARIANTS = {
    "shipped": shipped,
    "eq-gt": eq_gt,
    "eq-mix": eq_mix,
    "eq-robust": eq_robust,
    "eq-bound": eq_bound,
    "eq-masked": eq_masked,
    "eq-onset": eq_onset,
    "eq-top": eq_top,
    "eq-fit": eq_fit,
    "query-loud": query_loud,
    "query-denoise": query_denoise,
    "band-atoms": band_atoms,
    "refine-gt": refine_gt,
    "pieces": pieces,
    "modulation": modulation,
    "power-ramp": power_ramp,
    "clusters": clusters,
    "hp-strength": hp_strength,
    "pitch-comb": pitch_comb,
    "pitch-comb-gt": pitch_comb_gt,
    "misi": misi,
    "ttt-eq": ttt_eq,
    "share-gt": share_gt,
    "ttt-gate": ttt_gate,
    "nmf-gate": nmf_gate,
    "two-pass": two_pass,
    "iters": iters,
    "share-floor": share_floor,
    "adapt-q": adapt_q,
    "share-mix": share_mix,
    "matched-gain": matched_gain,
    "share-from": share_from,
    "seed-ensemble": seed_ensemble,
    "prune-atoms": prune_atoms,
    "band-gain": band_gain,
    "exemplar-init": exemplar_init,
    "ratio-score": ratio_score,
    "domain": domain,
    "context": context,
    "blur": blur,
    "if-matched": if_matched,
    "if-unmatched": if_unmatched,
    "bootstrap": bootstrap,
    "exemplars": exemplars,
    "det-compress": det_compress,
    "smooth-h": smooth_h,
    "dead-zone": dead_zone,
    "redetect": redetect,
    "relax": relax,
    "det-ensemble": det_ensemble,
    "level-gain": level_gain,
    "pass-blend": pass_blend,
    "fine-gate": fine_gate,
    "atoms-gt": atoms_gt,
    "resid-bg": resid_bg,
    "coupled-q": coupled_q,
}


# --------------------------------------------------------------------------- running and scoring

def parse_variant(spec: str) -> tuple[str, dict]:
    """``NAME`` or ``NAME:key=value,...`` → (name, kwargs) with numbers and booleans parsed."""
    from quality import _parse_value

    name, _, rest = spec.partition(":")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    kw = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise SystemExit(f"variant {spec!r}: {item!r} is not key=value")
        kw[key.replace("-", "_")] = _parse_value(val)
    return name, kw


def run_case(job: tuple) -> tuple[str, float, bool]:
    """Score one case (folder, variant spec, oracle segments?, the shipped mask's frame-gain
    exponent[, keyword arguments of the query detector[, NMF seed[, the shipped masker's
    second-pass share (None: as shipped)[, whether a mask is scaled to a largest value of 1, as the
    Separator scales the NMF maskers' (default True)[, the magnitude compression of a matching
    query's decompositions (None: as shipped)]]]]]): (case, figure, silent), the figure SI-SDRi (dB) when
    the target is present, else leakage (dB re mixture; ``-inf`` for an exactly silent estimate),
    ``silent`` whether the estimate is all zeros. The seed (default 0) seeds the query detector
    (unless the detector keywords name one) and the shipped masker's decomposition. Any failure is
    raised as a RuntimeError that names the case and the variant."""
    case_dir, spec, oracle, gain_power, *rest = job
    detector_kw = rest[0] if rest else {}
    seed = int(rest[1]) if len(rest) > 1 else 0
    masker_kw = {"frame_gain_power": gain_power, "second_pass_share": rest[2] if len(rest) > 2 else None, "seed": seed}
    peak_scale = bool(rest[3]) if len(rest) > 3 else True
    from sourcesep.maskers import MATCHED_COMPRESSION

    masker_kw["matched_compression"] = rest[4] if len(rest) > 4 and rest[4] is not None else MATCHED_COMPRESSION
    try:
        return _score_case(Path(case_dir), spec, oracle, {"seed": seed, **detector_kw}, masker_kw, peak_scale)
    except Exception as e:  # noqa: BLE001 - re-raised with the case's name
        raise RuntimeError(f"case {Path(case_dir).name}, variant {spec}: {type(e).__name__}: {e}") from e


def _score_case(d: Path, spec: str, oracle: bool, detector_kw: dict, masker_kw: dict,
                peak_scale: bool = True) -> tuple[str, float, bool]:
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    from quality import gt_segments

    from sourcesep import detect, features, reconstruct
    from sourcesep.querydetect import detect_query
    from sourcesep.types import Segment

    mix = sf.read(d / "mix.wav", dtype="float32")[0]
    query = sf.read(d / "query.wav", dtype="float32")[0]
    gt = sf.read(d / "gt.wav", dtype="float32")[0]
    meta = json.loads((d / "meta.json").read_text())
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(query), NFFT, HOP)
    times = features.frame_times(X.shape[1], HOP, SR)
    if oracle:
        segs = [Segment(a, b, 1.0) for a, b in gt_segments(gt, floor_db=-30.0, merge_gap_s=0.1)]
        det = detect.detect_oracle(segs, len(mix) / SR, times)
    else:
        det = detect_query(mix, query, mix_stft=X, query_stft=Q, **detector_kw)
    if det.found:
        name, kw = parse_variant(spec)
        ctx = dict(X=X, Q=Q, V=features.magnitude(X), Vq=features.magnitude(Q), times=times, det=det,
                   G=features.magnitude(features.stft(torch.from_numpy(gt), NFFT, HOP)),
                   x=torch.from_numpy(mix), q=torch.from_numpy(query), g=torch.from_numpy(gt),
                   **masker_kw)
        out = np.asarray(VARIANTS[name](ctx, **kw))
        if out.ndim == 1:  # a waveform estimate (n,), e.g. from a phase reconstruction
            est = out.astype(np.float64)
        else:  # a mask (F, T) on the mixture's STFT
            if peak_scale and out.max() > 0:  # as the Separator scales the NMF maskers' masks
                out = np.minimum(out / out.max(), 1.0)
            est = np.asarray(reconstruct.apply_mask(X, torch.as_tensor(out), NFFT, HOP, len(mix)), dtype=np.float64)
    else:
        est = np.zeros(len(mix))
    from quality import load_scorer

    scorer = load_scorer(d.parent.parent / "score.py")
    mix64, gt64 = mix.astype(np.float64), gt.astype(np.float64)
    silent = not bool(np.any(est))
    if meta["target_present"]:
        return d.name, float(scorer.si_sdr(est, gt64) - scorer.si_sdr(mix64, gt64)), silent
    e = float(est @ est)
    return d.name, (10 * np.log10(e / float(mix64 @ mix64)) if e > 0 else -np.inf), silent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", help="NAME or NAME:key=value,... (see --list)")
    ap.add_argument("--cases", help="benchmark split folder (with manifest.json)")
    ap.add_argument("--segments-from-gt", action="store_true", help="oracle segments instead of the query detector")
    ap.add_argument("--per-case", action="store_true", help="also print every case's figure per variant")
    ap.add_argument("--jobs", type=int, default=2, help="cases in parallel (1 thread each)")
    ap.add_argument("--frame-gain-power", type=float, default=None, metavar="P",
                    help="the shipped mask's frame-gain exponent (default: the shipped "
                         "maskers.FRAME_GAIN_POWER; 0 turns it off: rounds 6-8 were measured without it, "
                         "and rounds 6-9 with --detector-params threshold_frac=0.5,activity_mode=soft)")
    ap.add_argument("--second-pass-share", type=float, default=None, metavar="S",
                    help="the shipped masker's second-pass share (default: as shipped, "
                         "maskers.second_pass_for; 0: one decomposition, as rounds 1-10 were measured)")
    ap.add_argument("--matched-compression", type=float, default=None, metavar="A",
                    help="the magnitude compression of a matching query's decompositions in the shipped "
                         "masker and the variants built on its decomposition (default: as shipped, "
                         "maskers.MATCHED_COMPRESSION; 1: none, as rounds 1-13 were measured)")
    ap.add_argument("--detector-params", default="", metavar="KEY=VALUE,...",
                    help="keyword arguments of the query detector (sourcesep.querydetect.detect_query), "
                         "e.g. threshold_frac=0.4,activity_mode=segments")
    ap.add_argument("--seeds", type=int, default=1, metavar="K",
                    help="run every variant with the NMF seeds 0..K-1 (query detector and shipped masker) "
                         "and give the mean of each figure over them: one seed's median moves by a few "
                         "tenths of a dB (benchmarks/RESULTS.md, round 11)")
    ap.add_argument("--raw-scale", action="store_true",
                    help="leave each mask at its own scale instead of scaling it to a largest value of 1 "
                         "(as the Separator does since round 12); only the leakage changes: rounds 1-11 "
                         "were measured so")
    ap.add_argument("--list", action="store_true", help="list the variants and their parameters")
    args = ap.parse_args(argv)
    if args.list:
        for name, fn in VARIANTS.items():
            params = [p for p in list(inspect.signature(fn).parameters.values())[1:]
                      if p.kind != p.VAR_KEYWORD]
            if hasattr(fn, "passes_to"):
                params += list(inspect.signature(fn.passes_to).parameters.values())[2:]
            defaults = ",".join(f"{p.name}={p.default}" for p in params)
            print(f"{name}{':' + defaults if defaults else ''}\n    {' '.join((fn.__doc__ or '').split())}")
        return 0
    if not args.cases or not args.variants:
        ap.error("--cases and at least one variant are needed (or --list)")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    for spec in args.variants:
        parse_variant(spec)
    detector_kw = parse_variant("shipped:" + args.detector_params)[1]
    cases = Path(args.cases).resolve()
    if not (cases / "manifest.json").is_file() or not (cases.parent / "score.py").is_file():
        ap.error(f"{cases} is not a benchmark split (it needs manifest.json, and score.py beside it)")
    manifest = json.loads((cases / "manifest.json").read_text())
    metas = {c["case"]: c for c in manifest["cases"]}
    inaudible = {n for n, c in metas.items() if c["target_present"]
                 and np.abs(_read(cases / n / "gt.wav")).max() < INAUDIBLE_PEAK}
    from sourcesep import maskers

    gain_power = maskers.FRAME_GAIN_POWER if args.frame_gain_power is None else args.frame_gain_power
    table: dict[str, dict[str, float]] = {}  # per variant, each case's figure (mean over seeds)
    det_name = "oracle" if args.segments_from_gt else "query"
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        for spec in args.variants:
            runs = []
            for seed in range(args.seeds):
                jobs = [(str(cases / n), spec, args.segments_from_gt, gain_power, detector_kw, seed,
                         args.second_pass_share, not args.raw_scale, args.matched_compression) for n in metas]
                try:
                    runs.append({n: (v, silent) for n, v, silent in ex.map(run_case, jobs)})
                except RuntimeError as e:
                    print(f"experiments.py: {e}", file=sys.stderr)
                    return 1
            table[spec] = {n: float(np.mean([r[n][0] for r in runs])) for n in metas}
            print(_row(spec, det_name, runs, metas, inaudible), flush=True)
    if args.per_case:
        print("case  " + " ".join(f"{s[:12]:>12s}" for s in args.variants) + "  label")
        for n, c in metas.items():
            print(f"{n:5s} " + " ".join(f"{table[s][n]:12.2f}" for s in args.variants) + f"  {c['label']}")
    return 0


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    return sf.read(path, dtype="float32")[0]


def _stats(res: dict[str, tuple[float, bool]], metas: dict, inaudible: set[str]) -> dict[str, float]:
    """One run's figures: mean / median over the present cases, the same over the audible ones
    and with silent estimates counted as 0 (no improvement), the number of present cases given a
    silent estimate, group means over the audible cases and the leakage of the absent cases that
    were not silenced (NaN when all were)."""
    present = [n for n, c in metas.items() if c["target_present"]]
    audible = [n for n in present if n not in inaudible]
    a, a49 = np.array([res[n][0] for n in present]), np.array([res[n][0] for n in audible])
    honest = np.array([0.0 if res[n][1] else res[n][0] for n in present])
    out = {"mean": a.mean(), "median": np.median(a), "mean49": a49.mean(), "median49": np.median(a49),
           "honest_mean": honest.mean(), "honest_median": np.median(honest),
           "silent": float(sum(res[n][1] for n in present))}
    groups: dict[str, list[float]] = {}
    for n in audible:
        c = metas[n]
        groups.setdefault(f"group:{c['kind'][:2]}-{c['query_mode'][5:9]}", []).append(res[n][0])
    out.update({k: float(np.mean(v)) for k, v in groups.items()})
    leaks = [res[n][0] for n, c in metas.items() if not c["target_present"] and np.isfinite(res[n][0])]
    out["leak"] = float(np.mean(leaks)) if leaks else float("nan")
    return out


def _row(spec: str, det_name: str, runs: list[dict[str, tuple[float, bool]]], metas: dict,
         inaudible: set[str]) -> str:
    """A variant's table row: :func:`_stats` of each run (one per seed), averaged over the runs."""
    stats = [_stats(r, metas, inaudible) for r in runs]
    f = {k: float(np.nanmean([s[k] for s in stats])) if any(np.isfinite(s[k]) for s in stats) else float("nan")
         for k in stats[0]}
    n_present = sum(c["target_present"] for c in metas.values())
    g = " ".join(f"{k[6:]} {f[k]:5.2f}" for k in sorted(k for k in f if k.startswith("group:")))
    leak = f"{f['leak']:6.2f}" if np.isfinite(f["leak"]) else "   -  "
    seeds = ""
    if len(runs) > 1:  # how far one seed's medians stray
        span = lambda k: f"{min(x[k] for x in stats):.2f}-{max(x[k] for x in stats):.2f}"  # noqa: E731
        seeds = f" | seeds 0-{len(runs) - 1}: medians {span('median')}, {span('median49')}"
    return (f"{spec:32s} {det_name:6s} {n_present}: {f['mean']:5.2f} / {f['median']:5.2f}  "
            f"{n_present - len(inaudible)}: {f['mean49']:5.2f} / {f['median49']:5.2f}  "
            f"silence as 0: {f['honest_mean']:5.2f} / {f['honest_median']:5.2f} ({f['silent']:.0f} silent) | {g} | "
            f"leak (not silenced) {leak}{seeds}")


if __name__ == "__main__":
    sys.exit(main())
