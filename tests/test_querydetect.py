"""Weights-free query detector on synthetic pairs with known content."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_soft_activity_follows_short_pauses_inside_a_segment():
    # 0.2 s tone bursts with 0.1 s pauses: one segment (gaps < merge gap), but the soft activity
    # (score smoothed over 40 ms, not the segments' 120 ms) should dip in the pauses.
    n = 10 * SR
    mix = noise(10.0, seed=5) * 0.3
    on = []
    for k in range(10):
        s = 2.0 + 0.3 * k
        tone = harmonic_tone(0.2, f0=1000.0, seed=k)
        mix[int(s * SR): int(s * SR) + len(tone)] += tone
        on.append(s)
    query = harmonic_tone(1.5, f0=1000.0, seed=99)
    fine = detect_query(mix[:n], query, SR, activity_mode="soft")
    coarse = detect_query(mix[:n], query, SR, activity_mode="soft", activity_smooth_ms=None)
    held = detect_query(mix[:n], query, SR)  # the default, "segments": the masker's frame gain handles pauses
    assert fine.found and len(fine.segments) == 1
    t = fine.times_s
    pause = np.zeros(t.size, bool)
    burst = np.zeros(t.size, bool)
    for s in on[:-1]:
        pause |= np.abs(t - (s + 0.25)) < 0.02
        burst |= np.abs(t - (s + 0.1)) < 0.04
    assert fine.activity[burst].mean() > 0.8
    assert fine.activity[pause].mean() < 0.3
    assert fine.activity[pause].mean() <= coarse.activity[pause].mean()
    assert held.activity[pause].min() >= 0.5 and held.activity[burst].mean() > 0.8
    with pytest.raises(ValueError, match="activity_mode must be 'segments' or 'soft', got 'hard'"):
        detect_query(mix[:n], query, SR, activity_mode="hard")


def test_given_stfts_give_the_same_detection_as_computing_them(pair):
    import torch

    from sourcesep import features

    mix, query = pair[0], pair[1]
    X = features.stft(torch.from_numpy(np.asarray(mix, np.float32)), 512, 256)
    Q = features.stft(torch.from_numpy(np.asarray(query, np.float32)), 512, 256)
    own = detect_query(mix, query, SR)
    given = detect_query(mix, query, SR, mix_stft=X, query_stft=Q.abs())
    assert own.found and given.found
    assert np.array_equal(own.activity, given.activity) and own.segments == given.segments
    with pytest.raises(ValueError, match="513"):  # an STFT of the wrong size is refused
        detect_query(mix, query, SR, nfft=1024, hop=256, mix_stft=X, query_stft=Q)
