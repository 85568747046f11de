"""Harmonic/percussive split: sustained tones are harmonic, clicks and noise bursts percussive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sourcesep import features, hpss

SR = 16000


def _spec(x: np.ndarray) -> torch.Tensor:
    return features.stft(torch.from_numpy(x.astype(np.float32)), 512, 256).abs()


def _tone(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((440.0, 880.0, 1320.0), 1))


def _clicks(seconds: float = 2.0, every_s: float = 0.25) -> np.ndarray:
    x = np.zeros(int(seconds * SR))
    x[:: int(every_s * SR)] = 1.0
    return x


def test_tone_is_harmonic_and_clicks_are_percussive():
    assert hpss.harmonic_fraction(_spec(_tone())) > 0.9
    assert hpss.harmonic_fraction(_spec(_clicks())) < 0.2


def test_mask_separates_a_tone_from_clicks_in_one_mixture():
    tone, clicks = _tone(), _clicks()
    m = hpss.harmonic_mask(_spec(tone + clicks))
    assert m.shape == _spec(tone).shape and float(m.min()) >= 0 and float(m.max()) <= 1
    bin_440 = round(440 * 512 / SR)
    click_frame = int(0.5 * SR / 256)  # a click, away from the tone's partials
    assert float(m[bin_440 - 1:bin_440 + 2].mean()) > 0.9
    assert float(m[150:250, click_frame].mean()) < 0.1


def test_silence_and_tiny_inputs():
    assert hpss.harmonic_fraction(torch.zeros(257, 4)) == 0.5
    assert torch.all(hpss.harmonic_mask(torch.zeros(257, 1)) == 0.5)
    assert hpss.harmonic_mask(torch.rand(257, 1)).shape == (257, 1)
    with pytest.raises(ValueError, match="spectrogram"):
        hpss.harmonic_mask(torch.rand(257))
