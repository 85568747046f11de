"""Weights-free query detector on synthetic pairs with known content."""

from __future__ import annotations

import numpy as np

from signals import SR, harmonic_tone, make_pair, noise
from sourcesep.querydetect import detect_query


def _close(segments, truth, tol=0.3):
    got = [(s.start, s.end) for s in segments]
    return len(got) == len(truth) and all(abs(a - c) <= tol and abs(b - d) <= tol for (a, b), (c, d) in zip(got, truth))


def test_finds_tone_segments(pair):
    mix, query, _, truth = pair
    det = detect_query(mix, query, SR)
    assert det.found
    assert _close(det.segments, truth), det.segments
    assert det.times_s.shape == det.activity.shape
    assert np.all((det.activity >= 0) & (det.activity <= 1))
    assert np.allclose(det.times_s[:3], np.arange(3) * 256 / SR)
    inside = (det.times_s > 2.3) & (det.times_s < 3.7)
    outside = (det.times_s > 4.5) & (det.times_s < 6.0)
    assert det.activity[inside].mean() > 0.8 and det.activity[outside].max() < 0.2
    assert {"contrast_db", "query_share"} <= set(det.evidence) and det.evidence["query_share"] > 0.3


def test_absent_query_is_not_found(pair):
    mix, _, _, _ = pair
    # A high, two-harmonic tone: nothing like it plays in the mixture.
    other = harmonic_tone(1.5, f0=2600.0, n_harm=2)
    det = detect_query(mix, other, SR)
    assert not det.found
    assert det.segments == [] and float(det.activity.max()) == 0.0


def test_silent_query_or_mixture_is_not_found():
    mix = noise(3.0)
    det = detect_query(mix, np.zeros(SR, np.float32), SR)
    assert not det.found and det.activity.shape == det.times_s.shape


def test_other_seed_and_offsets():
    mix, query, _, truth = make_pair(seed=3)
    det = detect_query(mix, query, SR)
    assert det.found and _close(det.segments, truth)
