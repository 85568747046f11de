"""PNG figures of a separation: spectrogram comparison and detection timeline.

Both figures are written for every job, so they are built for speed (~15 ms each for a 10 s
pair, ~20x less than drawing them as matplotlib axes): each is one RGB raster composed in numpy
(colour lookup tables, spectrograms pooled to the pixel grid, frames, ticks, shaded segments),
with text rasterised by FreeType through matplotlib's font machinery (its bundled DejaVu Sans,
each distinct label rendered once and cached) and written by a minimal PNG encoder (zlib level
1). Only the timeline's curves go through matplotlib's Agg renderer (a ``Figure`` with bare
``Line2D`` artists on a transparent background, composited over the raster): antialiased lines
and markers. No pyplot, so no global figure registry that a long-running daemon would leak into,
and nothing is kept after a function returns except the small bounded glyph cache.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps, font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg, get_hinting_flag
from matplotlib.figure import Figure

from . import features
from .types import Detection

DPI = 100
_PLOT_N_FFT = 512
_PLOT_HOP = 256
_PLOT_N_MELS = 64
_DB_RANGE = 80.0
_FONT = 7.5
_TITLE_FONT = 9.5

# Figure geometry (pixels).
_WIDTH = 760
_LEFT, _RIGHT, _TOP, _BOTTOM, _GAP = 44, 62, 28, 30, 16
_MEL_H, _MASK_H = 72, 96
_CBAR_W = 9
_TL_HEIGHT, _TL_RIGHT, _TL_TOP, _TL_BOTTOM = 250, 14, 46, 34
_FRAME = np.array([90, 90, 90], np.uint8)
_GRID = np.array([200, 200, 200], np.uint8)
_SEGMENT = np.array([212, 234, 212], np.uint8)  # tab:green at alpha 0.2 on white
_INK = np.array([0, 0, 0], np.float32)


# --------------------------------------------------------------------------------------------
# Raster, text and PNG
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _glyphs(text: str, size_pt: float) -> tuple[np.ndarray, int]:
    """``text`` rasterised at ``size_pt`` points, DPI: (alpha (h, w) float32 in [0, 1], row of
    the baseline). Cached: tick labels and panel names repeat from job to job."""
    # get_font caches one FT2Font per thread, so this is safe in a threaded daemon.
    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))
    font.clear()
    font.set_size(size_pt, DPI)
    font.set_text(text, 0.0, flags=get_hinting_flag())
    font.draw_glyphs_to_bitmap(antialiased=True)
    alpha = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    alpha.setflags(write=False)
    return alpha, alpha.shape[0] - int(round(font.get_descent() / 64.0))


def _text_width(text: str, size_pt: float = _FONT) -> int:
    return _glyphs(text, size_pt)[0].shape[1]


def _draw_text(rgb: np.ndarray, x: float, y: float, text: str, *, size: float = _FONT, ha: str = "left",
               va: str = "baseline", color: np.ndarray = _INK, vertical: bool = False) -> None:
    """Blend ``text`` into the (H, W, 3) uint8 image in place. (x, y): anchor in pixels from the
    top left; ``ha`` left|center|right, ``va`` top|center|bottom|baseline; ``vertical`` reads
    bottom to top (then the anchor is the box's, ``baseline`` means ``center``)."""
    if not text:
        return
    alpha, base = _glyphs(text, size)
    if vertical:
        alpha, base = np.rot90(alpha), alpha.shape[1] // 2
    h, w = alpha.shape
    x0 = int(round(x - {"left": 0.0, "center": w / 2.0, "right": float(w)}[ha]))
    y0 = int(round(y - {"top": 0.0, "center": h / 2.0, "bottom": float(h), "baseline": float(base)}[va]))
    H, W = rgb.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa >= xb or ya >= yb:
        return
    a = alpha[ya - y0:yb - y0, xa - x0:xb - x0, None]
    region = rgb[ya:yb, xa:xb]
    region[...] = (region * (1.0 - a) + color * a + 0.5).astype(np.uint8)


def _frame(rgb: np.ndarray, top: int, left: int, height: int, width: int) -> None:
    """A 1-pixel frame just outside the box [top, top + height) x [left, left + width)."""
    rgb[[top - 1, top + height], left - 1:left + width + 1] = _FRAME
    rgb[top - 1:top + height + 1, [left - 1, left + width]] = _FRAME


def _write_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG (filter 0, zlib level 1).

    A direct encoder: ~3x faster than PIL's for these figures and smaller files (PIL's adaptive
    row filters cost time and compress flat colour areas worse at this level)."""
    path = Path(path)
    h, w, _ = rgb.shape
    rows = np.empty((h, 1 + 3 * w), np.uint8)
    rows[:, 0] = 0  # filter type None for every row
    rows[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"".join((
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
        chunk(b"pHYs", struct.pack(">IIB", round(DPI / 0.0254), round(DPI / 0.0254), 1)),
        chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
        chunk(b"IEND", b""),
    ))
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(png)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# Arrays to pixels
# --------------------------------------------------------------------------------------------


def _np(a) -> np.ndarray:
    """A numpy float32 copy-free view where possible; torch tensors (CPU or CUDA) are moved to the CPU."""
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 colour lookup table of a matplotlib colormap (read-only)."""
    lut = (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _colour(img: np.ndarray, vmin: float, vmax: float, cmap: str) -> np.ndarray:
    """(H, W) values → (H, W, 3) uint8 RGB, linear in [vmin, vmax], clipped."""
    scale = 255.0 / max(vmax - vmin, 1e-12)
    idx = np.clip((img - vmin) * scale, 0.0, 255.0).astype(np.uint8)
    return _lut(cmap)[idx]


def _fit_axis(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resample ``a`` along ``axis`` to ``size`` samples: mean of the covered bins when shrinking
    (no aliasing of long inputs), nearest neighbour when growing."""
    n = a.shape[axis]
    if n == size or n == 0:
        return a
    if n > size:
        edges = (np.arange(size) * n) // size
        return np.add.reduceat(a, edges, axis=axis) / np.diff(np.append(edges, n)).reshape(
            [-1 if i == axis else 1 for i in range(a.ndim)]
        )
    idx = np.minimum(((np.arange(size) + 0.5) * n / size).astype(np.int64), n - 1)
    return np.take(a, idx, axis=axis)


def _fit(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """(rows, cols) → (height, width) float32 on the pixel grid (row 0 = lowest frequency)."""
    return _fit_axis(_fit_axis(np.asarray(img, dtype=np.float32), width, 1), height, 0)


def _mel_db(x: np.ndarray, sr: int, width: int, block_frames: int = 4096) -> np.ndarray:
    """Mel power spectrogram in dB of ``x`` (n,), at most ``width`` columns.

    STFT 512/256 (centred, reflect padding, like :func:`sourcesep.features.stft`), 64 mel bands.
    With more frames than ``width``, each column is the mean *power* of its frames (then dB), so
    long inputs are summarised, not subsampled. Frames are computed ``block_frames`` at a time,
    so a 10-minute input never holds its whole spectrogram. Returns (64, min(T, width)) float32.
    """
    x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    half = _PLOT_N_FFT // 2
    xp = torch.nn.functional.pad(x[None, None], (half, half), mode="reflect" if x.numel() > half else "constant")[0, 0]
    n_frames = x.numel() // _PLOT_HOP + 1
    fb = features.mel_filterbank(_PLOT_N_FFT // 2 + 1, _PLOT_N_MELS, sr)
    window = torch.hann_window(_PLOT_N_FFT, periodic=True)
    cols = min(n_frames, width)
    col_of = (np.arange(n_frames) * cols) // n_frames  # frame -> column (monotone)
    acc = torch.zeros(_PLOT_N_MELS, cols)
    for f0 in range(0, n_frames, block_frames):
        f1 = min(n_frames, f0 + block_frames)
        seg = xp[f0 * _PLOT_HOP: (f1 - 1) * _PLOT_HOP + _PLOT_N_FFT]
        spec = torch.stft(seg, _PLOT_N_FFT, _PLOT_HOP, window=window, center=False, return_complex=True)
        power = torch.view_as_real(spec).square().sum(-1)  # (F, f1 - f0)
        acc.index_add_(1, torch.from_numpy(col_of[f0:f1]), fb @ power)
    counts = torch.from_numpy(np.bincount(col_of, minlength=cols).astype(np.float32))
    return (10.0 * torch.log10(acc / counts + 1e-6)).numpy()


def _mel_row(f_hz: float, n_mels: int, sr: int) -> float:
    """Fractional row (0 = bottom) of frequency ``f_hz`` in an HTK-mel image of ``n_mels`` bands."""
    mel = 2595.0 * np.log10(1.0 + f_hz / 700.0)
    top = 2595.0 * np.log10(1.0 + sr / 2.0 / 700.0)
    return mel / top * (n_mels + 1) - 0.5


def _time_ticks(duration_s: float, max_ticks: int = 10) -> np.ndarray:
    """Round tick positions (s) from 0 to ``duration_s``, at most ``max_ticks`` + 1 of them."""
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600):
        if duration_s / step <= max_ticks:
            break
    return np.arange(0.0, duration_s + 1e-9, step)


def _fmt_khz(f_hz: float) -> str:
    return f"{f_hz / 1000:g}k"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


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
    """Mel spectrograms of mixture, target and residual (shared dB scale, 80 dB range, colour bar
    on the right), the reference mel timeline (its own dB scale; skipped when None) and the mask
    (linear frequency, 0..1), stacked over a common time axis.

    mix, target, residual : (n,) waveforms at ``sr``; reference_mel : (n_mels, T) linear mel
    magnitude or None; mask : (F, T) on the STFT grid with hop ``hop``. Arrays may be numpy or
    torch (CPU or CUDA). Returns ``path``. The figure is 760 px wide whatever the duration: long
    inputs are averaged down to its pixel columns.
    """
    mix, target, residual = (_np(a).reshape(-1) for a in (mix, target, residual))
    n = min(mix.size, target.size, residual.size)
    dur = n / sr
    pw = _WIDTH - _LEFT - _RIGHT
    spec = [_mel_db(a[:n], sr, pw) for a in (mix, target, residual)]
    top = max(float(s.max()) for s in spec)
    mask = _np(mask)
    # The mask's frames may extend a little past the audio (centred STFT): crop to the audio span.
    mask = mask[:, : max(1, min(mask.shape[1], int(round(dur * sr / hop)) + 1))]

    # (name, RGB image on the pixel grid with row 0 = lowest frequency, y ticks [(row, label)])
    mel_ticks = [(_mel_row(f, _MEL_H, sr), _fmt_khz(f)) for f in (500, 2000, 6000) if f < sr / 2]
    panels: list[tuple[str, np.ndarray, list[tuple[float, str]]]] = []
    for name, img in zip(("mixture", "target", "residual"), spec):
        panels.append((name, _colour(_fit(img, _MEL_H, pw), top - _DB_RANGE, top, "magma"), mel_ticks))
    if reference_mel is not None:
        ref_db = 20.0 * np.log10(np.maximum(_np(reference_mel), 1e-10))
        hi = float(ref_db.max())
        panels.append((f"reference (stitched query), own scale: max {hi:.0f} dB",
                       _colour(_fit(ref_db, _MEL_H, pw), hi - _DB_RANGE, hi, "magma"), mel_ticks))
    nyq = sr / 2.0
    mask_ticks = [(f / nyq * _MASK_H, _fmt_khz(f)) for f in np.arange(2000.0, nyq + 1.0, 2000.0)]
    panels.append(("mask (linear frequency)", _colour(_fit(mask, _MASK_H, pw), 0.0, 1.0, "viridis"), mask_ticks))

    height = _TOP + _BOTTOM + sum(p[1].shape[0] for p in panels) + _GAP * len(panels)
    rgb = np.full((height, _WIDTH, 3), 255, np.uint8)  # row 0 = top of the image
    _draw_text(rgb, _WIDTH / 2, 4, title, size=_TITLE_FONT, ha="center", va="top")
    y = _TOP
    spans = []  # (top row, bottom row) of each panel
    for name, img, ticks in panels:
        y += _GAP
        h = img.shape[0]
        rgb[y:y + h, _LEFT:_LEFT + pw] = img[::-1]  # frequency up
        _frame(rgb, y, _LEFT, h, pw)
        _draw_text(rgb, _LEFT, y - 4, name)
        for row, label in ticks:
            r = y + h - 1 - int(round(row))
            if y <= r < y + h:
                rgb[r, _LEFT - 4:_LEFT - 1] = _FRAME
                _draw_text(rgb, _LEFT - 6, r, label, ha="right", va="center")
        spans.append((y, y + h))
        y += h

    # Colour bars: the shared dB scale beside mixture..residual, 0..1 beside the mask.
    x0 = _LEFT + pw + 8
    for (y_top, y_bot), cmap, hi_label, lo_label in (
        ((spans[0][0], spans[2][1]), "magma", f"{top:.0f} dB", f"{top - _DB_RANGE:.0f} dB"),
        (spans[-1], "viridis", "1", "0"),
    ):
        rgb[y_top:y_bot, x0:x0 + _CBAR_W] = _lut(cmap)[np.linspace(255, 0, y_bot - y_top).astype(np.uint8)][:, None]
        _draw_text(rgb, x0 + _CBAR_W + 3, y_top, hi_label, va="top")
        _draw_text(rgb, x0 + _CBAR_W + 3, y_bot, lo_label, va="bottom")

    # Time axis under the last panel.
    y_axis = spans[-1][1] + 1
    for t in _time_ticks(dur):
        x = _LEFT + min(int(round(t / max(dur, 1e-9) * pw)), pw - 1)
        rgb[y_axis:y_axis + 4, x] = _FRAME
        _draw_text(rgb, x, y_axis + 5, f"{t:g}", ha="center", va="top")
    _draw_text(rgb, _LEFT + pw, height - 3, "time (s)", ha="right", va="bottom")
    return _write_png(rgb, path)


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
    gate when given, and the detected segments shaded. Returns ``path``.

    Curves with more than 2 points per pixel column are decimated (max over each bin, so short
    activity peaks stay visible).
    """
    from matplotlib.lines import Line2D

    height, left = _TL_HEIGHT, _LEFT
    pw, ph = _WIDTH - left - _TL_RIGHT, _TL_HEIGHT - _TL_TOP - _TL_BOTTOM
    top = _TL_TOP
    dur = max(float(duration_s), 1e-3)
    w = detection.windows
    t = _np(detection.times_s).astype(np.float64)
    act = _np(detection.activity).astype(np.float64)
    if t.size > 2 * pw:
        edges = (np.arange(2 * pw) * t.size) // (2 * pw)
        t, act = t[edges], np.maximum.reduceat(act, edges)
    # (x (s), y (score), Line2D style); thresholds are horizontal lines.
    curves: list[tuple[np.ndarray, np.ndarray, dict]] = []
    if t.size:
        curves.append((t, act, dict(color="tab:blue", lw=1.2, label="activity")))
    if w is not None and len(w.starts_s):
        centres = _np(w.starts_s).astype(np.float64) + w.window_sec / 2.0
        mk = len(centres) <= 200
        curves.append((centres, _np(w.probs).astype(np.float64),
                       dict(color="tab:orange", lw=1, marker="o" if mk else None, ms=2.5, label="class prob (window)")))
        curves.append((centres, _np(w.cosine).astype(np.float64),
                       dict(color="tab:purple", lw=1, ls="--", marker="s" if mk else None, ms=2.5, label="cosine (window)")))
    hlines: list[tuple[float, dict]] = []
    if detection.threshold is not None and np.isfinite(detection.threshold):
        hlines.append((float(detection.threshold), dict(color="tab:red", ls=":", lw=1, label=f"threshold {detection.threshold:.3g}")))
    if cosine_threshold is not None:
        hlines.append((float(cosine_threshold), dict(color="tab:purple", ls=":", lw=1, label=f"cosine gate {cosine_threshold:.3g}")))
    values = [c[1] for c in curves] + [np.array([h[0] for h in hlines])]
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    y_lo = min(0.0, float(finite.min())) if finite.size else 0.0
    y_hi = max(1.0, float(finite.max())) if finite.size else 1.0
    pad = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(x):  # time (s) → pixel column
        return left + np.asarray(x, dtype=np.float64) / dur * pw

    def py(y):  # score → pixel row (from the top)
        return top + ph - (np.asarray(y, dtype=np.float64) - y_lo) / (y_hi - y_lo) * ph

    rgb = np.full((height, _WIDTH, 3), 255, np.uint8)
    for seg in detection.segments:
        c0, c1 = (int(round(np.clip(v / dur, 0.0, 1.0) * pw)) for v in (seg.start, seg.end))
        rgb[top:top + ph, left + c0:left + max(c1, c0 + 1)] = _SEGMENT
    y_ticks = np.arange(np.ceil(y_lo * 4) / 4, y_hi, 0.25)
    for v in y_ticks:
        rgb[int(round(py(v))), left:left + pw:3] = _GRID
    x_ticks = _time_ticks(dur)
    for v in x_ticks:
        c = min(int(round(px(v))), left + pw - 1)
        rgb[top:top + ph:3, c] = _GRID
        rgb[top + ph:top + ph + 4, c] = _FRAME
    _frame(rgb, top, left, ph, pw)

    # Legend row above the plot: a line sample and the label for each curve.
    entries = [style for _, _, style in curves] + [style for _, style in hlines]
    widths = [24 + _text_width(e["label"]) + 14 for e in entries]
    x_leg, y_leg = (_WIDTH - sum(widths)) / 2.0, top - 12
    samples = []
    for e, wd in zip(entries, widths):
        samples.append(([x_leg + 2, x_leg + 20], [y_leg, y_leg], e))
        x_leg += wd

    # Curves, threshold lines and legend samples: Agg on a transparent figure, composited below.
    fig = Figure(figsize=(_WIDTH / DPI, height / DPI), dpi=DPI)
    fig.patch.set_visible(False)

    def line(x_px, y_px, style: dict) -> None:
        style = {k: v for k, v in style.items() if k != "label"}
        fig.add_artist(Line2D(np.asarray(x_px) / _WIDTH, 1.0 - np.asarray(y_px) / height, **style))

    for x, y, style in curves:
        line(px(x), py(y), style)
    for v, style in hlines:
        line([left, left + pw], [py(v), py(v)], style)
    for xs, ys, style in samples:
        line(xs, ys, {**style, "marker": None} if style.get("marker") is None else style)
    agg = FigureCanvasAgg(fig)
    agg.draw()
    rgba = np.asarray(agg.buffer_rgba())
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = (a * rgba[..., :3] + (1.0 - a) * rgb + 0.5).astype(np.uint8)  # straight alpha

    for (xs, _ys, e) in samples:
        _draw_text(rgb, xs[1] + 4, y_leg, e["label"], size=_FONT - 0.5, va="center")
    for v in y_ticks:
        _draw_text(rgb, left - 4, py(v), f"{v + 0.0:g}", ha="right", va="center")
    for v in x_ticks:
        _draw_text(rgb, px(v), top + ph + 5, f"{v:g}", ha="center", va="top")
    _draw_text(rgb, left + pw, height - 3, "time (s)", ha="right", va="bottom")
    _draw_text(rgb, 4, top + ph / 2, "score", va="center", vertical=True)
    found = "found" if detection.found else "not found"
    _draw_text(rgb, _WIDTH / 2, 4, f"{title} ({detection.name}: {found}, {len(detection.segments)} segment(s))",
               size=_TITLE_FONT, ha="center", va="top")
    return _write_png(rgb, path)
