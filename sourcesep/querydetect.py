"""Weights-free query detector: where in the mixture does the query sound play?

No trained model. The query's magnitude spectrogram is summarised by a small NMF dictionary
``W_q``; the mixture is then explained by ``W_q`` (fixed) plus a free background dictionary
``W_b`` learned on the mixture itself (semi-supervised NMF, Itakura-Saito divergence by default
so quiet frames and high bands count as much as loud ones). Per frame we get

* ``query_db``: level (dB) of the part of the mixture the query atoms explain, and
* ``ratio``: the fraction of the frame the query atoms explain.

The activity score is ``query_db`` smoothed over ~0.12 s. A frame is active when its score
clears a threshold set between the score's low (background) and high (foreground) percentiles,
with hysteresis; the threshold sits low (30 % of the way up) because the NMF maskers' frame gain
decides, frame by frame, how much of the kept time the target fills. The activity curve is a
logistic, around that threshold, of the same score smoothed over only ~0.04 s, held at 0.5 or
more inside the resulting segments and 0 outside them (``activity_mode="soft"``, the logistic
alone inside segments, follows the pauses between sparse events by itself).

On the dev split the score's frame-level AUC against the target span is 0.88 mean / 0.99 median;
the mixture's own level scores nearly as well (0.88 / 0.97), because targets there are foreground
events. The query atoms earn their place in the presence decision and where an interferer is
louder than the target (see benchmarks/RESULTS.md).

Presence (``found``): the query atoms must explain at least ``min_query_share`` of the active
frames' magnitude (energy-weighted ``ratio``). When the query's sound is not in the mixture, the
free background atoms explain the loud frames and the share collapses (dev set: absent-like cases
0.02-0.05, present cases mostly > 0.1). The numbers are reported in ``evidence``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import detect, features, nmf
from .types import Detection


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average (edge-padded) of x (N,) over ``width`` frames (odd, ≥ 1)."""
    width = max(1, int(width) | 1)
    if width == 1 or x.size == 0:
        return x.astype(np.float64)
    k = np.ones(width) / width
    return np.convolve(np.pad(x.astype(np.float64), width // 2, mode="edge"), k, mode="valid")


def _hysteresis(score: np.ndarray, high: float, low: float) -> np.ndarray:
    """Frames ≥ low that belong to a run containing at least one frame ≥ high. (N,) bool."""
    above_low = score >= low
    if not above_low.any():
        return above_low
    edges = np.diff(np.concatenate(([0], above_low.astype(np.int8), [0])))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    csum = np.concatenate(([0], np.cumsum(score >= high)))
    keep = (csum[last] - csum[first]) > 0
    runs = np.zeros(score.size + 1, np.int32)
    np.add.at(runs, first[keep], 1)
    np.add.at(runs, last[keep], -1)
    return np.cumsum(runs)[:-1] > 0


def query_scores(
    mix_mag: torch.Tensor,
    query_mag: torch.Tensor,
    *,
    n_query_atoms: int = 16,
    n_background_atoms: int = 16,
    n_iter: int = 60,
    beta: float = 0.0,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Semi-supervised NMF of the mixture with a dictionary learned from the query.

    mix_mag: (F, T) mixture magnitude; query_mag: (F, Tq) query magnitude (same STFT geometry).
    Returns tensors: ``query_mag`` (F, T) part explained by the query atoms, ``background_mag``
    (F, T) part explained by the free background atoms, ``W`` (F, Kq + Kb), ``H`` (Kq + Kb, T).
    """
    V = mix_mag.float()
    Wq = nmf.learn_dictionary(query_mag.float(), n_query_atoms, n_iter=n_iter, beta=beta, seed=seed)
    Wb = nmf.random_init(V.shape[0], n_background_atoms, seed=seed + 5, device=V.device)
    W0 = torch.cat([Wq, Wb / Wb.sum(0)], dim=1)
    H0 = torch.full((W0.shape[1], V.shape[1]), float(V.mean()) + nmf.EPS, device=V.device)
    learn = torch.zeros(W0.shape[1], dtype=torch.bool, device=V.device)
    learn[n_query_atoms:] = True
    W, H = nmf.beta_nmf(V, W0, H0, n_iter=n_iter, beta=beta, update_w=learn)
    k = n_query_atoms
    return {"query_mag": W[:, :k] @ H[:k], "background_mag": W[:, k:] @ H[k:], "W": W, "H": H}


def detect_query(
    mix: np.ndarray,
    query: np.ndarray,
    sr: int = 16000,
    *,
    nfft: int = 512,
    hop: int = 256,
    min_dur_ms: float = 300.0,
    merge_gap_ms: float = 500.0,
    padding_ms: float = 100.0,
    n_query_atoms: int = 16,
    n_background_atoms: int = 16,
    n_iter: int = 60,
    beta: float = 0.0,
    smooth_ms: float = 120.0,
    threshold_frac: float = 0.3,
    hysteresis_db: float = 3.0,
    softness_db: float = 2.0,
    min_query_share: float = 0.06,
    segment_share_rel: float = 0.0,
    activity_mode: str = "segments",
    activity_smooth_ms: float | None = 40.0,
    seed: int = 0,
    mix_stft: torch.Tensor | np.ndarray | None = None,
    query_stft: torch.Tensor | np.ndarray | None = None,
) -> Detection:
    """Detect where the query sound plays in the mixture, without trained weights.

    Parameters
    ----------
    mix : (n,) float mixture at ``sr`` Hz. query : (m,) float query example at ``sr`` Hz.
    nfft, hop : STFT geometry (samples); the activity curve lives on this frame grid
        (centred frames: ``times_s[i] = i * hop / sr``).
    min_dur_ms, merge_gap_ms, padding_ms : segment post-processing (see
        :func:`sourcesep.detect.segments_from_mask`).
    n_query_atoms, n_background_atoms, n_iter, beta : the semi-supervised NMF
        (see :func:`query_scores`).
    smooth_ms : moving-average length of the score (ms) used for the segment decision.
    activity_smooth_ms : moving-average length (ms) of the score that shapes the soft activity
        inside segments (None: ``smooth_ms``); shorter follows pauses between sparse events.
    threshold_frac : the threshold sits this fraction of the way from the score's 10th percentile
        (background level) to its 95th percentile (foreground level). The default 0.3 favours
        recall: the NMF maskers' frame gain turns down the frames the target does not fill
        (0.5 gives tighter segments; benchmarks/RESULTS.md, round 10).
    hysteresis_db : frames down to ``threshold - hysteresis_db`` stay active when connected to a
        frame above the threshold.
    softness_db : width (dB) of the logistic turning the score into soft activity.
    min_query_share : presence needs the query atoms to explain at least this fraction of the
        active frames' magnitude (``evidence["query_share"]``); below it the query's sound is
        judged absent (silent target).
    segment_share_rel : drop segments whose own query share is below this fraction of the best
        segment's share (0 keeps all): loud interferer-only spans explain poorly by the query atoms.
    activity_mode : "segments" (the default: at least 0.5 everywhere inside a segment, the
        logistic of the score above that) or "soft" (the logistic alone, so pauses inside a
        segment are attenuated by the detector itself).
    mix_stft, query_stft : optional STFTs (F, T) / (F, Tq), complex or magnitude, of ``mix`` and
        ``query`` computed with :func:`sourcesep.features.stft` at ``nfft``/``hop`` (a caller
        that already has them saves computing them again).

    Returns
    -------
    Detection with ``name="query"``, ``times_s`` (T,), ``activity`` (T,) in [0, 1] (zeros when not
    found), ``segments``, ``found``, ``threshold`` (0.5: the activity at the score threshold,
    which is reported in dB as ``evidence["threshold_db"]``) and ``evidence``.
    """
    if activity_mode not in ("segments", "soft"):
        raise ValueError(f"activity_mode must be 'segments' or 'soft', got {activity_mode!r}")
    mix = np.asarray(mix, dtype=np.float32).reshape(-1)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    # The NMF runs where the given STFTs live (the Separator's device); the post-processing is numpy.
    X = features.magnitude(mix_stft) if mix_stft is not None else features.stft(torch.from_numpy(mix), nfft, hop).abs()
    Q = features.magnitude(query_stft) if query_stft is not None else features.stft(torch.from_numpy(query), nfft, hop).abs()
    Q = Q.to(X.device)
    if X.shape[0] != nfft // 2 + 1 or Q.shape[0] != nfft // 2 + 1:
        raise ValueError(f"STFTs must have nfft // 2 + 1 = {nfft // 2 + 1} bins, got {X.shape[0]} and {Q.shape[0]}")
    T = X.shape[1]
    times = features.frame_times(T, hop, sr)
    duration = mix.size / sr
    if float(X.sum()) <= 0 or float(Q.sum()) <= 0:
        return Detection("query", times, np.zeros(T), [], False, None,
                         evidence={"reason": "silent mixture or query"})

    parts = query_scores(X, Q, n_query_atoms=n_query_atoms, n_background_atoms=n_background_atoms,
                         n_iter=n_iter, beta=beta, seed=seed)
    s_q = parts["query_mag"].sum(0).double().cpu().numpy()
    s_all = s_q + parts["background_mag"].sum(0).double().cpu().numpy()
    floor = 1e-4 * float(s_all.max()) + 1e-12  # -80 dB: digital silence must not dominate
    q_db = 20.0 * np.log10(s_q + floor)
    width = int(round(smooth_ms / 1000.0 * sr / hop))
    score = _smooth(q_db, width)

    lo, hi = np.percentile(score, [10.0, 95.0])
    thr = lo + threshold_frac * (hi - lo)
    active = _hysteresis(score, thr, thr - hysteresis_db)
    if activity_smooth_ms is None:
        act_score = score
    else:
        act_score = _smooth(q_db, int(round(activity_smooth_ms / 1000.0 * sr / hop)))
    activity = 1.0 / (1.0 + np.exp(-(act_score - thr) / max(softness_db, 1e-3)))

    evidence: dict[str, Any] = {"score_low_db": float(lo), "score_high_db": float(hi), "threshold_db": float(thr)}
    if active.any() and (~active).any():
        contrast = float(np.median(score[active]) - np.median(score[~active]))
    else:
        contrast = 0.0
    # Energy-weighted share of the active frames that the query atoms explain.
    share = float(s_q[active].sum() / (s_all[active].sum() + floor)) if active.any() else 0.0
    evidence.update(query_share=share, contrast_db=contrast, active_fraction=float(active.mean()),
                    min_query_share=min_query_share)
    segs = detect.segments_from_mask(
        active, times - hop / (2 * sr), hop / sr, activity,
        min_dur_ms=min_dur_ms, merge_gap_ms=merge_gap_ms, padding_ms=padding_ms, duration_s=duration,
    )
    if segs and segment_share_rel > 0:
        seg_share = []
        for sg in segs:
            sel = (times >= sg.start) & (times <= sg.end)
            seg_share.append(float(s_q[sel].sum() / (s_all[sel].sum() + floor)) if sel.any() else 0.0)
        best = max(seg_share)
        segs = [sg for sg, sh in zip(segs, seg_share) if sh >= segment_share_rel * best]
        evidence["segment_shares"] = [round(v, 4) for v in seg_share]
    found = bool(segs) and share >= min_query_share
    if not found:
        activity = np.zeros_like(activity)
        segs = []
    else:
        # Activity outside the (merged, padded) segments is switched off: segments are the decision.
        inside = detect.frames_inside(segs, times)
        if activity_mode == "segments":
            activity = np.where(inside, np.maximum(activity, 0.5), 0.0)
        else:
            activity = np.where(inside, activity, 0.0)
    # The logistic puts the score threshold at activity 0.5: report it on the activity scale.
    return Detection("query", times, activity.astype(np.float64), segs, found, 0.5, evidence=evidence)
