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
    _check_png(out, (700 if with_reference else 600, 900))
    assert elapsed < 1.5  # about 0.3 s on one idle core


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
    assert time.perf_counter() - t0 < 1.5
    _check_png(out, (250, 900))


def test_timeline_plot_nothing_found(tmp_path):
    det = Detection("query", np.zeros(0), np.zeros(0), [], False, None, None)
    out = plots.timeline_plot(tmp_path / "t.png", detection=det, duration_s=10.0, title="x")
    assert mpimg.imread(out).shape[1] >= 900
