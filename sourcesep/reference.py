"""The reference timeline of the seed masker: the query's mel frames "stitched" into the detected
segments of the mixture, and the matching time-activity curve.

All mel spectrograms here are *linear mel magnitudes* ``fb @ |STFT|`` (not power, not log): the
initial mask and the DGMO loss compare them with ``fb @ (mask * |X|)`` of the mixture, so the
query must be analysed with the same STFT geometry (n_fft, hop) and filterbank as the mixture.
Everything is vectorised torch on the input's device; nothing loops over frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .types import Segment


def _as_tensor(x: torch.Tensor | np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t if device is None else t.to(device)


def query_mel(
    query_mag: torch.Tensor | np.ndarray, mel_fb: torch.Tensor | np.ndarray, *, trim_db: float = 40.0
) -> torch.Tensor:
    """Mel magnitude frames of the query, with silent leading/trailing frames removed.

    Parameters
    ----------
    query_mag : (F, Tq) STFT magnitude of the query (same n_fft/hop as the mixture).
    mel_fb : (n_mels, F) filterbank (``features.mel_filterbank``).
    trim_db : frames whose mel-vector norm is more than ``trim_db`` below the loudest frame are
        dropped at both ends, so that tiling the query in time does not insert its silent edges
        into the reference. Interior quiet frames are kept (they are part of the sound's rhythm).

    Returns
    -------
    Tensor (n_mels, Tq') with 1 <= Tq' <= Tq (all frames are kept when the query is all zeros).
    """
    mag = _as_tensor(query_mag)
    fb = _as_tensor(mel_fb, mag.device).to(mag.dtype)
    mel = fb @ mag
    if mel.shape[-1] == 0:
        raise ValueError("query has no STFT frames")
    norms = torch.linalg.vector_norm(mel, dim=0)
    peak = norms.max()
    if peak <= 0:
        return mel
    loud = (norms >= peak * 10.0 ** (-trim_db / 20.0)).nonzero().flatten()
    return mel[:, int(loud[0]) : int(loud[-1]) + 1]


def frequency_profile(query_mag: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The query's long-term magnitude spectrum, normalised to a peak of 1.

    query_mag : (F, Tq) magnitude. Returns (F,) in [0, 1] (zeros for an all-zero query).
    """
    mag = _as_tensor(query_mag)
    prof = mag.mean(dim=-1)
    return prof / prof.max().clamp_min(torch.finfo(prof.dtype).tiny)


def _segment_arrays(segments: Sequence[Segment]) -> tuple[np.ndarray, np.ndarray]:
    starts = np.array([s.start for s in segments], dtype=np.float64)
    ends = np.array([s.end for s in segments], dtype=np.float64)
    return starts, ends


def _frame_segment_index(segments: Sequence[Segment], frame_times_s: np.ndarray) -> np.ndarray:
    """(T,) index of the first segment containing each frame centre ([start, end)), -1 if none."""
    t = np.asarray(frame_times_s, dtype=np.float64).reshape(-1)
    if not segments:
        return np.full(t.shape, -1, dtype=np.int64)
    starts, ends = _segment_arrays(segments)
    inside = (t[None, :] >= starts[:, None]) & (t[None, :] < ends[:, None])  # (S, T)
    return np.where(inside.any(axis=0), inside.argmax(axis=0), -1)


def stitch_reference(
    query_mel: torch.Tensor | np.ndarray,
    segments: Sequence[Segment],
    frame_times_s: np.ndarray | torch.Tensor,
    *,
    mode: Literal["tile", "mean"] = "tile",
    outside: float = 0.0,
) -> torch.Tensor:
    """Build the reference mel timeline of the mixture from the query ("stitching").

    Inside each segment the query's frames are tiled (looped) in time, restarting at the
    segment's first frame: frame t of the mixture gets query frame
    ``floor((t_s - seg.start) / dt) mod Tq`` where ``dt`` is the frame period. Frames outside every
    segment get ``outside`` (0: "the target is silent here", which the DGMO loss turns into a push
    of the mask towards its floor). A frame belongs to a segment when its centre time lies in
    ``[start, end)``; with overlapping segments the first listed one wins.

    ``mode="mean"`` puts the query's average mel frame in every segment frame instead: a
    different take of a sound is not aligned in time with the target, so its long-term spectrum
    is the steadier reference (it scored about 0.8 dB SI-SDRi higher with the seed's initial mask
    on the dev benchmark with oracle segments); ``"tile"`` is the original design.

    Parameters
    ----------
    query_mel : (n_mels, Tq) mel magnitude frames of the query (see :func:`query_mel`).
    segments : detected spans of the mixture (s).
    frame_times_s : (T,) centre times of the mixture's STFT frames (``features.frame_times``).
    mode : "tile" (loop the query's frames) or "mean" (its average frame).
    outside : value of the reference outside the segments.

    Returns
    -------
    Tensor (n_mels, T) on ``query_mel``'s device and dtype.
    """
    q = _as_tensor(query_mel)
    if q.ndim != 2 or q.shape[1] == 0:
        raise ValueError(f"query_mel must be (n_mels, Tq) with Tq >= 1, got {tuple(q.shape)}")
    if mode == "mean":
        q = q.mean(dim=1, keepdim=True)
    elif mode != "tile":
        raise ValueError(f"mode must be 'tile' or 'mean', got {mode!r}")
    t = np.asarray(frame_times_s.cpu() if isinstance(frame_times_s, torch.Tensor) else frame_times_s, dtype=np.float64)
    t = t.reshape(-1)
    seg = _frame_segment_index(segments, t)
    dt = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    starts, _ = _segment_arrays(segments) if segments else (np.zeros(1), None)
    # 1e-6 absorbs rounding in frame times that sit exactly on a multiple of dt after the start.
    offset = np.floor((t - starts[np.maximum(seg, 0)]) / dt + 1e-6).astype(np.int64)
    q_idx = torch.as_tensor(np.mod(offset, q.shape[1]), device=q.device)
    inside = torch.as_tensor(seg >= 0, device=q.device)
    ref = q[:, q_idx]
    return torch.where(inside[None, :], ref, torch.full_like(ref, outside))


def time_activity(
    segments: Sequence[Segment],
    frame_times_s: np.ndarray | torch.Tensor,
    soft_curve: torch.Tensor | np.ndarray | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-frame activity of the target in [0, 1].

    Without ``soft_curve``: 1 for frames whose centre lies inside a segment, else 0.
    With ``soft_curve`` (T,) (a detector's activity already resampled to the frame grid, e.g. by
    ``np.interp``): inside segments the curve divided by its maximum inside the segments (so the
    most confident frame keeps weight 1 and weaker frames fade), 0 outside; a curve that is 0
    throughout the segments carries no information and gives the binary activity.

    Returns
    -------
    Tensor (T,) float32 on ``device`` (CPU by default, or ``soft_curve``'s device).
    """
    t = np.asarray(frame_times_s.cpu() if isinstance(frame_times_s, torch.Tensor) else frame_times_s, dtype=np.float64)
    if device is None and isinstance(soft_curve, torch.Tensor):
        device = soft_curve.device
    inside = torch.as_tensor(_frame_segment_index(segments, t.reshape(-1)) >= 0, device=device)
    act = inside.to(torch.float32)
    if soft_curve is None:
        return act
    curve = _as_tensor(soft_curve, inside.device).to(torch.float32).reshape(-1)
    if curve.shape != act.shape:
        raise ValueError(f"soft_curve must have {act.shape[0]} values (one per frame), got {curve.shape[0]}")
    curve = curve.clamp_min(0.0) * act
    peak = curve.max()
    if peak <= 0:
        return act
    return (curve / peak).clamp(0.0, 1.0)
