"""Temporal detection from scores: thresholds, activity → segments, AST and oracle detectors.

Pure functions over numpy arrays. Times are in seconds, durations in the ``*_ms`` arguments in
milliseconds. Segment post-processing order (the original design's): merge spans closer than
``merge_gap_ms``, drop spans shorter than ``min_dur_ms``, pad each side by ``padding_ms``, clip to
``[0, duration_s]``, and merge spans that padding made overlap — so the result is sorted and
non-overlapping.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .errors import InputError
from .types import Detection, Segment, WindowScores


def threshold(scores: np.ndarray, cls_threshold: float | None, cls_percentile: float) -> float:
    """Decision threshold for ``scores`` (N,): ``cls_threshold`` when given, else the
    ``cls_percentile``-th percentile (linear interpolation) of the scores. An empty score array
    with no absolute threshold gives +inf (nothing is active)."""
    if cls_threshold is not None:
        return float(cls_threshold)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return math.inf
    return float(np.percentile(s, cls_percentile))


def segments_from_mask(
    active: np.ndarray,
    times_s: np.ndarray,
    frame_len_s: float,
    scores: np.ndarray,
    *,
    min_dur_ms: float,
    merge_gap_ms: float,
    padding_ms: float,
    duration_s: float,
) -> list[Segment]:
    """Turn per-frame (or per-window) activity into segments.

    active: (N,) bool; times_s: (N,) start time of each frame/window (s, increasing); each item
    covers ``[times_s[i], times_s[i] + frame_len_s]``; scores: (N,) score per item. Runs of active
    items become spans; spans whose gap is below ``merge_gap_ms`` (overlapping ones included) are
    merged; spans shorter than ``min_dur_ms`` are dropped; the rest are padded by ``padding_ms``
    on both sides and clipped to ``[0, duration_s]``. A segment's score is the mean score of the
    active items inside it.
    """
    act = np.asarray(active, dtype=bool).reshape(-1)
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (act.size == t.size == sc.size):
        raise ValueError(f"active, times_s and scores must have one length, got {act.size}, {t.size}, {sc.size}")
    if not act.any():
        return []
    # Runs of consecutive active items: [first, last] indices.
    edges = np.diff(np.concatenate(([0], act.astype(np.int8), [0])))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    starts, ends = t[first], t[last] + frame_len_s
    csum, ccount = np.concatenate(([0.0], np.cumsum(np.where(act, sc, 0.0)))), np.concatenate(([0], np.cumsum(act)))
    sums, counts = csum[last + 1] - csum[first], ccount[last + 1] - ccount[first]

    starts, ends, sums, counts = _merge(starts, ends, sums, counts, merge_gap_ms / 1000.0)
    keep = (ends - starts) >= min_dur_ms / 1000.0
    starts, ends, sums, counts = starts[keep], ends[keep], sums[keep], counts[keep]
    if starts.size == 0:
        return []
    pad = padding_ms / 1000.0
    starts, ends = np.clip(starts - pad, 0.0, duration_s), np.clip(ends + pad, 0.0, duration_s)
    starts, ends, sums, counts = _merge(starts, ends, sums, counts, 0.0, strict=False)
    keep = ends > starts  # a span entirely beyond duration_s collapses to nothing
    return [
        Segment(float(s), float(e), float(v / max(c, 1)))
        for s, e, v, c in zip(starts[keep], ends[keep], sums[keep], counts[keep])
    ]


def _merge(
    starts: np.ndarray, ends: np.ndarray, sums: np.ndarray, counts: np.ndarray, gap_s: float, strict: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge sorted spans whose gap to the running end is < gap_s (<= gap_s when not strict)."""
    if starts.size <= 1:
        return starts, ends, sums, counts
    run_end = np.maximum.accumulate(ends)
    gaps = starts[1:] - run_end[:-1]
    new = (gaps >= gap_s) if strict else (gaps > gap_s)
    idx = np.flatnonzero(np.concatenate(([True], new)))
    return (
        starts[idx],
        np.maximum.reduceat(ends, idx),
        np.add.reduceat(sums, idx),
        np.add.reduceat(counts, idx),
    )


def detect_ast(
    windows: WindowScores,
    duration_s: float,
    *,
    cls_threshold: float | None,
    cls_percentile: float,
    use_cosine_gate: bool,
    cosine_threshold: float,
    min_dur_ms: float,
    merge_gap_ms: float,
    padding_ms: float,
) -> Detection:
    """The original design's detector: window ``probs`` ≥ threshold (absolute, or percentile of
    the window probs), optionally AND cosine ≥ ``cosine_threshold``; active windows (each spanning
    ``[start, start + window_sec]``) → segments. The activity curve is the window probs at the
    window centres; ``found`` is whether any segment survives post-processing."""
    probs = np.asarray(windows.probs, dtype=np.float64)
    cos = np.asarray(windows.cosine, dtype=np.float64)
    starts = np.asarray(windows.starts_s, dtype=np.float64)
    thr = threshold(probs, cls_threshold, cls_percentile)
    active = probs >= thr
    if use_cosine_gate:
        active &= cos >= cosine_threshold
    segments = segments_from_mask(
        active, starts, windows.window_sec, probs,
        min_dur_ms=min_dur_ms, merge_gap_ms=merge_gap_ms, padding_ms=padding_ms, duration_s=duration_s,
    )
    evidence = {
        "threshold": thr,
        "threshold_source": "absolute" if cls_threshold is not None else f"percentile {cls_percentile:g}",
        "active_windows": int(active.sum()),
        "windows": int(probs.size),
        "max_prob": float(probs.max()) if probs.size else None,
        "cosine_gate": bool(use_cosine_gate),
        "max_cosine": float(cos.max()) if cos.size else None,
    }
    return Detection(
        name="ast",
        times_s=(starts + windows.window_sec / 2).astype(np.float64),
        activity=probs.astype(np.float32),
        segments=segments,
        found=bool(segments),
        threshold=thr,
        windows=windows,
        evidence=evidence,
    )


def frames_inside(segments: list[Segment], frame_times: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each frame time (s) lies inside any of ``segments`` (ends included)."""
    t = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    if not segments:
        return np.zeros(t.size, bool)
    st = np.array([s.start for s in segments])[:, None]
    en = np.array([s.end for s in segments])[:, None]
    return ((t[None] >= st) & (t[None] <= en)).any(axis=0)


def detect_oracle(segments: list[Segment], duration_s: float, frame_times: np.ndarray) -> Detection:
    """Known segments as a detection: activity (N,) = 1 at ``frame_times`` inside any segment
    (clipped to ``[0, duration_s]``), else 0."""
    t = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    clipped = sorted(
        (Segment(max(0.0, s.start), min(duration_s, s.end), s.score) for s in segments),
        key=lambda s: (s.start, s.end),
    )
    clipped = [s for s in clipped if s.end > s.start]
    activity = frames_inside(clipped, t).astype(np.float32)
    return Detection(
        name="oracle",
        times_s=t,
        activity=activity,
        segments=clipped,
        found=bool(clipped),
        threshold=None,
        evidence={"segments": len(clipped), "source": "given"},
    )


def segments_from_file(path: str | Path) -> list[Segment]:
    """Read known segments (seconds), sorted by start.

    Text: one ``start end`` per line (whitespace, comma or tab separated; further columns, such
    as an Audacity label, are ignored); ``#`` starts a comment; blank lines are skipped.
    JSON: a list of ``[start, end]`` (optionally ``[start, end, score]``) or of objects with
    ``start``/``end`` (optional ``score``). An empty file means no segments (target absent).
    Raises :class:`InputError` naming the file (and line) on unreadable or bad content:
    non-numbers, non-finite values, negative starts, or ``end <= start``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(p, "segments file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(p, f"cannot read segments file: {e.__class__.__name__}") from None
    if text.lstrip().startswith(("[", "{")):
        pairs = _parse_json_segments(p, text)
    else:
        pairs = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].replace(",", " ").strip()
            if not line:
                continue
            cols = line.split()
            try:
                if len(cols) < 2:
                    raise ValueError
                pairs.append((float(cols[0]), float(cols[1]), 1.0, f"line {lineno}"))
            except ValueError:
                raise InputError(p, f"line {lineno}: expected 'start end' in seconds, got {raw.strip()!r}") from None
    segs = []
    for start, end, score, where in pairs:
        if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(score)):
            raise InputError(p, f"{where}: times must be finite numbers")
        if start < 0:
            raise InputError(p, f"{where}: start {start:g} s is negative")
        if end <= start:
            raise InputError(p, f"{where}: end {end:g} s is not after start {start:g} s")
        segs.append(Segment(start, end, score))
    return sorted(segs, key=lambda s: (s.start, s.end))


def _parse_json_segments(p: Path, text: str) -> list[tuple[float, float, float, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(p, f"invalid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(data, list):
        raise InputError(p, "JSON segments must be a list of [start, end] or {\"start\", \"end\"}")
    out = []
    for i, item in enumerate(data):
        where = f"item {i}"
        try:
            if isinstance(item, dict):
                vals = (item["start"], item["end"], item.get("score", 1.0))
            elif isinstance(item, list) and len(item) in (2, 3):
                vals = (*item, 1.0)[:3]
            else:
                raise TypeError
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
                raise TypeError
        except (KeyError, TypeError):
            got = repr(item)[:80]
            raise InputError(p, f'{where}: expected [start, end] or {{"start": s, "end": e}}, got {got}') from None
        out.append((float(vals[0]), float(vals[1]), float(vals[2]), where))
    return out
