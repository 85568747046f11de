"""Synthetic test signals with known content (16 kHz mono float32)."""

from __future__ import annotations

import numpy as np

SR = 16000


def harmonic_tone(dur_s: float, f0: float = 440.0, sr: int = SR, n_harm: int = 4, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a slight vibrato and a smooth envelope."""
    t = np.arange(int(dur_s * sr)) / sr
    vib = 1.0 + 0.01 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * f0 * np.cumsum(vib) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, n_harm + 1))
    env = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.3 * x * env).astype(np.float32)


def noise(dur_s: float, sr: int = SR, seed: int = 0, level: float = 0.05) -> np.ndarray:
    """Low-pass-ish brown-tinted noise: energy mostly below 1 kHz, unlike the tone's harmonics."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(int(dur_s * sr))
    b = np.ones(8) / 8
    return (level * np.convolve(w, b, mode="same") / 0.35).astype(np.float32)


def make_pair(seed: int = 0):
    """A 10 s mixture: noise bed + a 1 kHz harmonic tone during [2.0, 4.0] and [6.5, 8.0] s.

    Returns (mix, query, gt, segments) with the query a separate 1.5 s take of the tone.
    """
    n = 10 * SR
    gt = np.zeros(n, np.float32)
    segments = [(2.0, 4.0), (6.5, 8.0)]
    for s, e in segments:
        tone = harmonic_tone(e - s, f0=1000.0, seed=seed)
        gt[int(s * SR): int(s * SR) + len(tone)] += tone
    bed = noise(10.0, seed=seed + 1)
    mix = gt + bed
    query = harmonic_tone(1.5, f0=1000.0, seed=seed + 2)
    return mix.astype(np.float32), query, gt, segments
