"""PNG figures of a separation: spectrogram comparison and detection timeline.

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly: no pyplot, so no global figure
registry that a long-running daemon would leak into, and no GUI backend. Each figure is
rendered at 100 dpi and closed with the function (nothing is kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import features
from .types import Detection

DPI = 100
_PLOT_N_FFT = 512
_PLOT_N_MELS = 64
_DB_RANGE = 80.0


def _mel_db(waves: np.ndarray, sr: int) -> np.ndarray:
    """(B, n) waveforms -> (B, n_mels, T) mel power in dB (one batched STFT, 512/256)."""
    x = torch.as_tensor(np.ascontiguousarray(waves, dtype=np.float32))
    power = features.stft(x, _PLOT_N_FFT, _PLOT_N_FFT // 2).abs().square()
    fb = features.mel_filterbank(power.shape[-2], _PLOT_N_MELS, sr)
    return (features.log_mel(power, fb) * (10.0 / np.log(10.0))).numpy()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)  # attaches itself to the figure
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _stacked_axes(fig: Figure, n: int, *, colorbars: bool) -> list[tuple[Axes, Axes | None]]:
    """n panels stacked top to bottom with fixed margins (tight_layout costs ~0.2 s a figure).
    Returns [(axes, colorbar axes or None)]."""
    w_in, h_in = fig.get_size_inches()
    left, right, bottom, top = 0.75 / w_in, 0.9 / w_in if colorbars else 0.25 / w_in, 0.55 / h_in, 0.65 / h_in
    gap = 0.3 / h_in
    height = (1.0 - top - bottom - gap * (n - 1)) / n
    width = 1.0 - left - right
    out = []
    for i in range(n):
        y = 1.0 - top - (i + 1) * height - i * gap
        ax = fig.add_axes((left, y, width, height))
        cax = fig.add_axes((left + width + 0.1 / w_in, y, 0.12 / w_in, height)) if colorbars else None
        out.append((ax, cax))
    return out


def comparison_plot(
    path: str | Path,
    *,
    mix: np.ndarray,
    target: np.ndarray,
    residual: np.ndarray,
    reference_mel: np.ndarray | None,
    mask: np.ndarray,
    sr: int,
    hop: int,
    title: str,
) -> Path:
    """Mel spectrograms of mixture, target and residual (shared dB scale, 80 dB range), the
    reference mel timeline (its own dB scale; skipped when None) and the mask (linear frequency,
    0..1), stacked over a common time axis.

    mix, target, residual : (n,) waveforms at ``sr``; reference_mel : (n_mels, T) linear mel
    magnitude or None; mask : (F, T) on the STFT grid with hop ``hop``. Returns ``path``.
    """
    mix, target, residual = (np.asarray(a, dtype=np.float32).reshape(-1) for a in (mix, target, residual))
    n = min(mix.size, target.size, residual.size)
    spec = _mel_db(np.stack([mix[:n], target[:n], residual[:n]]), sr)
    top = float(spec.max())
    dur = n / sr
    mask = np.asarray(mask, dtype=np.float32)
    panels = [("mixture", spec[0]), ("target", spec[1]), ("residual", spec[2])]
    if reference_mel is not None:
        panels.append(("reference (stitched query)", np.asarray(reference_mel, dtype=np.float32)))
    fig = Figure(figsize=(10, 2.0 * (len(panels) + 1) + 0.4), dpi=DPI)
    axes = _stacked_axes(fig, len(panels) + 1, colorbars=True)
    for (ax, cax), (name, img) in zip(axes, panels):
        if name.startswith("reference"):
            img = 20.0 * np.log10(np.maximum(img, 1e-10))
            hi = float(img.max())
            vmin, vmax = hi - _DB_RANGE, hi
        else:
            vmin, vmax = top - _DB_RANGE, top
        im = ax.imshow(img, origin="lower", aspect="auto", interpolation="nearest", cmap="magma",
                       vmin=vmin, vmax=vmax, extent=(0.0, dur, 0, img.shape[0]))
        ax.set_ylabel("mel band")
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_xlim(0.0, dur)
        ax.tick_params(labelbottom=False)
        fig.colorbar(im, cax=cax, label="dB")
    ax, cax = axes[-1]
    nyq_khz = sr / 2000.0
    im = ax.imshow(mask, origin="lower", aspect="auto", interpolation="nearest", cmap="viridis",
                   vmin=0.0, vmax=1.0, extent=(0.0, mask.shape[1] * hop / sr, 0.0, nyq_khz))
    ax.set_ylabel("kHz")
    ax.set_title("mask", fontsize=9, loc="left")
    ax.set_xlabel("time (s)")
    ax.set_xlim(0.0, dur)
    fig.colorbar(im, cax=cax)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def timeline_plot(
    path: str | Path,
    *,
    detection: Detection,
    duration_s: float,
    title: str,
    cosine_threshold: float | None = None,
) -> Path:
    """Detection over time: the activity curve, AST window probabilities and cosine similarities
    (when the detector used windows, drawn at window centres), the decision threshold, the cosine
    gate when given, and the detected segments shaded. Returns ``path``."""
    fig = Figure(figsize=(10, 3.2), dpi=DPI)
    ((ax, _),) = _stacked_axes(fig, 1, colorbars=False)
    for seg in detection.segments:
        ax.axvspan(seg.start, seg.end, color="tab:green", alpha=0.2, lw=0)
    t = np.asarray(detection.times_s, dtype=np.float64)
    if t.size:
        ax.plot(t, np.asarray(detection.activity, dtype=np.float64), color="tab:blue", lw=1.2, label="activity")
    w = detection.windows
    if w is not None and len(w.starts_s):
        centres = np.asarray(w.starts_s, dtype=np.float64) + w.window_sec / 2.0
        ax.plot(centres, w.probs, "o-", color="tab:orange", ms=3, lw=1, label="class prob (window)")
        ax.plot(centres, w.cosine, "s--", color="tab:purple", ms=3, lw=1, label="cosine (window)")
    if detection.threshold is not None and np.isfinite(detection.threshold):
        ax.axhline(detection.threshold, color="tab:red", ls=":", lw=1, label=f"threshold {detection.threshold:.3g}")
    if cosine_threshold is not None:
        ax.axhline(cosine_threshold, color="tab:purple", ls=":", lw=1, label=f"cosine gate {cosine_threshold:.3g}")
    ax.set_xlim(0.0, max(duration_s, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    found = "found" if detection.found else "not found"
    fig.suptitle(f"{title} ({detection.name}: {found}, {len(detection.segments)} segment(s))", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7, ncol=5, frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)
