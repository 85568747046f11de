"""Timbre match: the same source matches closely, a different one does not, level does not matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signals import SR, harmonic_tone, make_pair, noise
from sourcesep import features
from sourcesep.timbre import log_mel_shape, timbre_match

NFFT, HOP = 512, 256


def _mag(x):
    return features.magnitude(features.stft(torch.from_numpy(np.asarray(x, np.float32)), NFFT, HOP))


def _activity(n_frames, segments):
    t = features.frame_times(n_frames, HOP, SR)
    return np.any([(t >= s) & (t <= e) for s, e in segments], axis=0).astype(float)


def test_shape_is_level_free():
    x = harmonic_tone(1.0, f0=500.0)
    s1, lev1 = log_mel_shape(_mag(x))
    s2, lev2 = log_mel_shape(_mag(0.01 * x))
    assert s1.shape == (40, _mag(x).shape[1])
    loud = lev1 > lev1.max() - 40
    # Equal up to the float32 STFT's rounding.
    assert np.allclose(s1[:, loud], s2[:, loud], atol=5e-3)
    assert np.allclose(lev1[loud] - lev2[loud], 40.0, atol=1e-3)


def _take(tone):
    """Another take of the recording: the sound over the same kind of noise bed as the mixture's, quieter."""
    return tone + noise(len(tone) / SR, seed=11, level=0.01)


def test_same_source_matches_and_another_timbre_does_not():
    mix, query, _, segments = make_pair()
    V = _mag(mix)
    act = _activity(V.shape[1], segments)
    same = timbre_match(V, _mag(_take(query)), act)
    other_tone = timbre_match(V, _mag(_take(harmonic_tone(1.5, f0=220.0, n_harm=12))), act)
    other_noise = timbre_match(V, _mag(noise(1.5, seed=7)), act)
    assert same is not None and same >= 0.9, same
    assert other_tone < 0.9 and other_noise < 0.9, (other_tone, other_noise)
    assert same > other_tone + 0.2 and same > other_noise + 0.2
    # Scaling the mixture changes nothing.
    assert abs(timbre_match(_mag(0.05 * mix), _mag(_take(query)), act) - same) < 1e-4


def test_no_evidence_gives_none():
    mix, query, _, segments = make_pair()
    V = _mag(mix)
    assert timbre_match(V, _mag(query), np.zeros(V.shape[1])) is None
    assert timbre_match(V, _mag(np.zeros_like(query)), _activity(V.shape[1], segments)) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_spectrograms_give_the_cpu_match():
    mix, query, _, segments = make_pair()
    V, Vq = _mag(mix), _mag(_take(query))
    act = _activity(V.shape[1], segments)
    assert abs(timbre_match(V.cuda(), Vq.cuda(), act) - timbre_match(V, Vq, act)) < 1e-6
    # The activity may live on the device too (the maskers keep it beside the spectrogram).
    act_gpu = torch.as_tensor(act, dtype=torch.float32).cuda()
    assert abs(timbre_match(V.cuda(), Vq.cuda(), act_gpu) - timbre_match(V, Vq, act)) < 1e-6
