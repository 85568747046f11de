"""The two PNG figures: written, decodable, sensible size, quick."""

from __future__ import annotations

import time

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from signals import SR, make_pair
from sourcesep import features, plots
from sourcesep.types import Detection, Segment, WindowScores


@pytest.fixture(scope="module")
def arrays():
    mix, _, gt, _ = make_pair()
    X = features.stft(torch.from_numpy(mix), 512, 256)
    mask = (X.abs() / (X.abs() + 0.1)).numpy().astype(np.float32)
    ref = np.abs(np.random.default_rng(0).standard_normal((64, X.shape[1]))).astype(np.float32)
    return mix, gt, mix - gt, ref, mask


def _check_png(path, min_hw):
    assert path.exists() and path.stat().st_size > 10_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_hw[0] and img.shape[1] >= min_hw[1]
    assert float(img[..., :3].std()) > 0.05  # not a blank canvas


@pytest.mark.parametrize("with_reference", [True, False])
def test_comparison_plot(tmp_path, arrays, with_reference):
    mix, target, resid, ref, mask = arrays
    out = tmp_path / "Sine_wave_comparison.png"
    kw = dict(mix=mix, target=target, residual=resid, reference_mel=ref if with_reference else None,
              mask=mask, sr=SR, hop=256, title="Sine wave")
    plots.comparison_plot(tmp_path / "warmup.png", **kw)  # font cache etc.
    t0 = time.perf_counter()
    assert plots.comparison_plot(out, **kw) == out
    elapsed = time.perf_counter() - t0
    _check_png(out, (500 if with_reference else 420, 760))
    assert elapsed < 1.0  # about 0.05 s on one idle core


def _detection(with_windows: bool) -> Detection:
    t = np.arange(626) * 256 / SR
    act = ((t >= 2) & (t < 4)).astype(float)
    windows = None
    if with_windows:
        starts = np.arange(0.0, 9.01, 0.5)
        windows = WindowScores(starts_s=starts, window_sec=1.0, probs=np.linspace(0, 1, starts.size),
                               cosine=np.linspace(1, 0, starts.size))
    return Detection("ast" if with_windows else "query", t, act, [Segment(2.0, 4.0, 0.9)], True, 0.5, windows)


@pytest.mark.parametrize("with_windows", [True, False])
def test_timeline_plot(tmp_path, with_windows):
    out = tmp_path / "Sine_wave_timeline.png"
    t0 = time.perf_counter()
    plots.timeline_plot(out, detection=_detection(with_windows), duration_s=10.0, title="Sine wave",
                        cosine_threshold=0.45 if with_windows else None)
    assert time.perf_counter() - t0 < 1.0
    _check_png(out, (250, 760))


def test_timeline_plot_nothing_found(tmp_path):
    det = Detection("query", np.zeros(0), np.zeros(0), [], False, None, None)
    out = plots.timeline_plot(tmp_path / "t.png", detection=det, duration_s=10.0, title="x")
    assert mpimg.imread(out).shape[1] >= 760


def test_timeline_shades_segments(tmp_path):
    t = np.arange(626) * 256 / SR
    det = Detection("query", t, np.zeros_like(t), [Segment(2.0, 4.0, 0.9)], True, None, None)
    img = mpimg.imread(plots.timeline_plot(tmp_path / "t.png", detection=det, duration_s=10.0, title="x"))
    rgb = (img[..., :3] * 255).round()
    row = img.shape[0] // 2
    width = img.shape[1] - plots._LEFT - 14
    inside, outside = plots._LEFT + int(0.3 * width), plots._LEFT + int(0.7 * width)
    green = np.array([212, 234, 212])
    assert np.abs(rgb[row, inside] - green).max() <= 2
    assert np.abs(rgb[row, outside] - 255).max() <= 2 or np.abs(rgb[row, outside] - 200).max() <= 2


def test_fit_axis_pools_down_and_repeats_up():
    a = np.arange(12, dtype=np.float32).reshape(1, 12)
    np.testing.assert_allclose(plots._fit_axis(a, 4, 1), [[1.0, 4.0, 7.0, 10.0]])  # means of 3
    np.testing.assert_array_equal(plots._fit_axis(a[:, :3], 6, 1), [[0, 0, 1, 1, 2, 2]])
    assert plots._fit(np.ones((257, 37_500)), 96, 654).shape == (96, 654)


def test_ten_minute_inputs_plot_quickly_at_the_same_size(tmp_path):
    """Long inputs are averaged down to the pixel grid: same figure size, still fast."""
    rng = np.random.default_rng(1)
    n = 600 * SR
    mix = (0.1 * rng.standard_normal(n)).astype(np.float32)
    mask = rng.random((257, n // 256 + 1)).astype(np.float32)
    t0 = time.perf_counter()
    out = plots.comparison_plot(tmp_path / "c.png", mix=mix, target=0.5 * mix, residual=0.5 * mix,
                                reference_mel=None, mask=mask, sr=SR, hop=256, title="long")
    t = np.arange(mask.shape[1]) * 256 / SR
    det = Detection("fused", t, rng.random(t.size), [Segment(10.0, 20.0, 1.0)], True, 0.5, None)
    out2 = plots.timeline_plot(tmp_path / "t.png", detection=det, duration_s=600.0, title="long")
    assert time.perf_counter() - t0 < 5.0
    _check_png(out, (420, 760))
    assert mpimg.imread(out).shape[:2] == mpimg.imread(tmp_path / "c.png").shape[:2]
    _check_png(out2, (250, 760))


def test_png_writer_round_trips(tmp_path):
    from PIL import Image

    img = np.random.default_rng(2).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = plots._write_png(img, tmp_path / "x.png")
    back = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(back, img)
    assert not list(tmp_path.glob("*.part"))


def test_text_is_drawn_and_clipped_at_the_edges():
    rgb = np.full((30, 60, 3), 255, np.uint8)
    plots._draw_text(rgb, 2, 15, "0.5k", va="center")
    assert rgb.min() < 100  # dark glyph pixels
    plots._draw_text(rgb, 58, 29, "a long label running off the canvas")  # no error, clipped
    plots._draw_text(rgb, 5, 25, "score", vertical=True, va="center")
    assert plots._glyphs("0.5k", plots._FONT)[0].shape[0] > 5
