"""Variants of where in time the target is kept: refinements of the detected activity, frame gains
and gates from many scores, and their bounds from the truth.
"""

from __future__ import annotations

import numpy as np

from .common import (
    SR,
    band_weights,
    detected_activity,
    frame_gate,
    is_matched,
    mask_from_parts,
    nmf_share,
    query_shifts,
    refined_activity,
    relative_share,
    shape_cos,
    shipped,
    shipped_mask,
    shipped_parts,
    with_activity,
    zero_mask,
)
from .networks import random_envelopes


def refine_gt(ctx: dict, dilate: int = 5, part: str = "both") -> np.ndarray:
    """Bound: the detected activity kept only on frames where the true target is within 30 dB of
    its loudest frame (dilated by ``dilate`` frames): a perfect refinement of the detection.
    ``part`` (round 14) says where the refined activity is used: "both" (the decompositions and
    the gate), "gate" (the shipped decompositions, the refined gate) or "atoms" (the
    decompositions of the refined activity, the detected gate)."""
    import torch

    refined = refined_activity(ctx, dilate)
    if part == "both":
        return shipped_mask(with_activity(ctx, refined))
    if part == "gate":
        return shipped_mask(ctx) * (refined > 0)[None, :]
    if part != "atoms":
        raise ValueError(f"part must be 'both', 'gate' or 'atoms', got {part!r}")
    if (parts := shipped_parts(with_activity(ctx, refined))) is None:
        return shipped_mask(ctx)
    _, _, _, S, B = parts
    return mask_from_parts(ctx, S, B, torch.as_tensor(detected_activity(ctx), dtype=torch.float32))


def pieces(ctx: dict, half: int = 16, novelty: float = 0.1, delta: float = 0.25, floor: float = 0.0,
           soft: float = 0.0, min_frames: int = 8) -> np.ndarray:
    """Timbre gate over homogeneous pieces: the active region is cut where the mean log-mel shape
    of the ``half`` frames before and after differs (1 − cosine, local maxima above ``novelty``);
    a piece whose shape is more than ``delta`` (cosine) less query-like than the most query-like
    piece (of ≥ ``min_frames`` loud frames) keeps ``floor`` of its activity (``soft`` > 0: a
    logistic of that slope instead of a step)."""
    from sourcesep import timbre

    act = detected_activity(ctx).copy()
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
            nov[t] = 1 - shape_cos(left, right)
    on = act >= 0.5
    cuts = {0, T} | {t for t in range(1, T) if on[t] != on[t - 1]}
    cuts |= {t for t in range(1, T - 1) if nov[t] > novelty and nov[t] == nov[max(0, t - half):t + half + 1].max()}
    cuts = sorted(cuts)
    spans = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if on[a:b].any():
            ms = mean_shape(a, b)
            spans.append((a, b, None if ms is None else shape_cos(q_mean, ms), cnt[b] - cnt[a]))
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
    return shipped_mask(with_activity(ctx, act))


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

    act = detected_activity(ctx).copy()
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
    return shipped_mask(with_activity(ctx, act * keep))


def share_gt(ctx: dict, gamma: float = 0.5, floor: float = 0.0, smooth: int = 1) -> np.ndarray:
    """Bound: the shipped mask times a frame gain from the true target's share of each frame's
    energy, sum_f |G|² / sum_f |X|² (clipped to 1; :func:`frame_gate`): what a perfect frame-level
    presence score would give when it gates the detected activity softly."""
    import torch

    m = torch.from_numpy(np.asarray(shipped_mask(ctx), dtype=np.float32))
    share = ctx["G"].double().square().sum(0) / ctx["V"].double().square().sum(0).clamp_min(1e-20)
    return (m * frame_gate(share, gamma, floor, smooth)[None, :]).clamp(0, 1).numpy()


def nmf_gate(ctx: dict, gamma: float = 0.5, floor: float = 0.1, smooth: int = 5, sharp: float = 4.0,
             rel: float = 0.0) -> np.ndarray:
    """The shipped mask times a frame gain (:func:`frame_gate`) from the shipped decomposition's
    own target share of each frame's energy, sum_f m_s·|X|² / sum_f |X|², m_s the shipped mask
    sharpened to m^k / (m^k + (1 − m)^k), k = ``sharp`` (4 undoes the exponent 0.25: about the
    NMF's magnitude ratio); the baseline for ``ttt-gate``. ``rel`` > 0 divides the share by its
    ``rel``-th percentile over the active frames (clipped to 1), so the gate is relative to how
    much the query atoms explain where they explain the most."""
    import torch

    m = torch.from_numpy(np.asarray(shipped_mask(ctx), dtype=np.float32))
    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    ungated = m / act.clamp_min(1e-6)[None, :]
    ms = ungated.pow(sharp) / (ungated.pow(sharp) + (1 - ungated).clamp_min(0).pow(sharp) + 1e-12)
    P = ctx["V"].float().square()
    share = (ms * P).sum(0) / P.sum(0).clamp_min(1e-20)
    if rel > 0 and bool((act >= 0.5).any()):
        share, smooth = relative_share(frame_gate(share, 1.0, 0.0, smooth), act, rel), 1
    return (m * frame_gate(share, gamma, floor, smooth)[None, :]).clamp(0, 1).numpy()


def share_floor(ctx: dict, lam: float = 0.5, k: float = 2.0, width: int = 15) -> np.ndarray:
    """The shipped mask (scaled to a largest value of 1) relaxed towards the mixture where the
    decomposition gives a frame a high target share: m + (1 − m)·``lam``·share^``k`` inside the
    activity (share as the frame gain's, over ``width`` frames), so frames the target dominates
    keep more of the mixture and lose less of the target to the mask's errors."""
    import torch

    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
    act, V, Vq, S, B = parts
    m = torch.as_tensor(mask_from_parts(ctx, S, B, act))
    if float(m.max()) <= 0:
        return m.numpy()
    m = m / m.max()
    phi = lam * nmf_share(V, S, B, width).clamp(0, 1).pow(k) * act
    return (m + (1 - m) * phi[None, :]).clamp(0, 1).numpy()


def share_mix(ctx: dict, weight: float = 0.5, mode: str = "geo", width: int = 15) -> np.ndarray:
    """The frame gain from a blend of two shares: the masker's decomposition's (as shipped) and the
    query detector's own (query atoms' share of its semi-supervised IS-NMF of the whole mixture,
    :func:`sourcesep.querydetect.query_scores`, energy-weighted per frame), ``weight`` on the
    detector's; ``mode`` "geo" (weighted geometric mean) or "mean" (arithmetic)."""
    from sourcesep.querydetect import query_scores

    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
    act, V, Vq, S, B = parts
    a = nmf_share(V, S, B, width)
    det_parts = query_scores(V, Vq)
    b = nmf_share(V, det_parts["query_mag"], det_parts["background_mag"], width)
    if mode == "geo":
        share = a.clamp_min(1e-6).pow(1 - weight) * b.clamp_min(1e-6).pow(weight)
    else:
        share = (1 - weight) * a + weight * b
    return mask_from_parts(ctx, S, B, act, gain_share=share)


def matched_gain(ctx: dict, p1: float = 0.5, rel: float = 0.0) -> np.ndarray:
    """The frame gain's exponent raised to ``p1`` when the query's timbre matches the active frames
    (the shipped rule that sharpens the mask: a query from the target's own recording, whose
    atoms explain the target well, so its share is trustworthy); ``rel`` > 0 also divides the
    share by its ``rel``-th percentile over the active frames for such queries."""
    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
    act, V, _, S, B = parts
    if not is_matched(ctx):
        return mask_from_parts(ctx, S, B, act)
    share = nmf_share(V, S, B)
    if rel > 0 and bool((act >= 0.5).any()):
        share = relative_share(share, act, rel)
    return mask_from_parts(ctx, S, B, act, gain_share=share, gain_power=p1)


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

    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
    act, V, Vq, S, B = parts
    n_free = maskers.free_atoms_for(ctx["det"]) if free < 0 else free
    Vq2 = Vq
    if env_copies > 0 and env_db > 0:
        gen = torch.Generator().manual_seed(0)
        w = band_weights(V.shape[0], 8).float()
        Vq2 = torch.cat([Vq] + [Vq[:, ::2] * random_envelopes(1, w, env_db, gen)[0][:, None]
                                for _ in range(env_copies)], dim=1)
    S2, B2, _ = maskers.nmf_two_pass(V, Vq2, act, threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                     n_query_atoms=kq, n_background_atoms=kb, n_free_atoms=n_free, n_iter=n_iter,
                                     beta=beta, query_shifts=query_shifts(Vq), seed=ctx["seed"])
    return mask_from_parts(ctx, S, B, act, gain_share=nmf_share(V, S2, B2, width))


def band_gain(ctx: dict, bands: int = 4, width: int = 15) -> np.ndarray:
    """The frame gain computed per frequency band: the decomposition's target share of each of
    ``bands`` mel-spaced bands (averaged over ``width`` frames), linearly interpolated across the
    bins, so a frame whose low band the target fills and whose high band an interferer fills is
    turned down only where the interferer is. ``bands=1`` is the shipped gain."""
    import torch

    from sourcesep import features, hpss, maskers

    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
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


def ratio_score(ctx: dict, weight: float = 0.5, harmonic_only: bool = False, matched_only: bool = False) -> np.ndarray:
    """The query detector's score weighted by the fraction of each frame the query atoms explain:
    its level computed from ``s_q · (s_q / s_all)^weight`` instead of ``s_q`` (for clearly
    harmonic queries only with ``harmonic_only``; only for a query whose timbre matches the
    shipped detection's active frames with ``matched_only``), the detection (segments and
    presence) redone with it, then the shipped mask. Cases the shipped detector misses stay
    silent."""
    from unittest import mock

    from sourcesep import querydetect

    if harmonic_only and not query_shifts(ctx["Vq"]):  # not clearly harmonic
        return shipped_mask(ctx)
    if matched_only and not is_matched(ctx):
        return shipped_mask(ctx)
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
        return zero_mask(ctx)
    return shipped_mask(dict(ctx, det=det))


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
        return zero_mask(ctx)
    return shipped_mask(dict(ctx, det=det))


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

    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
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
        return shipped_mask(ctx)
    return shipped_mask(with_activity(ctx, np.where(detect.frames_inside(segs, times), a, 0.0)))


def relax(ctx: dict, gamma: float = 0.5) -> np.ndarray:
    """Round 14: the shipped mask (scaled to a largest value of 1) raised to ``gamma`` inside the
    activity (1: as shipped; 0: the activity gate alone)."""
    m = shipped_mask(ctx)
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
        return zero_mask(ctx)
    acts = np.stack([np.interp(ctx["times"], d.times_s, d.activity) for d in found])
    inside = (acts > 0).mean(0) >= vote
    return shipped_mask(with_activity(ctx, np.where(inside, np.maximum(acts.mean(0), 0.5), 0.0)))


def level_gain(ctx: dict, d: float = 30.0, gamma: float = 0.5, pct: float = 95.0, smooth: int = 5) -> np.ndarray:
    """Round 14: the shipped mask times a gain from each active frame's mixture level: 0 at ``d`` dB
    below the ``pct``-th percentile of the active frames' levels, 1 at it, linear in dB in between,
    raised to ``gamma`` (level smoothed over ``smooth`` frames)."""
    from sourcesep.querydetect import _smooth

    m = shipped_mask(ctx)
    on = detected_activity(ctx) >= 0.5
    if m.max() <= 0 or on.sum() < 2:
        return m
    lev = _smooth(10 * np.log10(ctx["V"].double().pow(2).sum(0).numpy() + 1e-12), smooth)
    top = np.percentile(lev[on], pct)
    g = np.clip((lev - (top - d)) / d, 0.0, 1.0) ** gamma
    return (m * g[None, :]).astype(np.float32)


def fine_gate(ctx: dict, score: str = "target", db: float = 30.0, dilate: int = 5, smooth: int = 1) -> np.ndarray:
    """Round 14: the shipped mask times a hard frame gate built as ``refine-gt`` builds its bound,
    from an estimate instead of gt.wav: frames whose ``score`` energy (smoothed over ``smooth``
    frames) is within ``db`` dB of its loudest active frame, dilated by ``dilate`` frames. Scores:
    "target" (the decomposition's target part as the mask passes it, |m·X|²), "parts" (the
    decomposition's S²), "mix" (the mixture itself)."""
    from scipy.ndimage import maximum_filter1d

    from sourcesep.querydetect import _smooth

    m = shipped_mask(ctx)
    on = detected_activity(ctx) >= 0.5
    if m.max() <= 0 or on.sum() < 2:
        return m
    V2 = ctx["V"].double().pow(2).numpy()
    if score == "target":
        e = (m.astype(np.float64) ** 2 * V2).sum(0)
    elif score == "parts":
        if (parts := shipped_parts(ctx)) is None:
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
