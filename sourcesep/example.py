"""A small synthetic example pair, so the main job runs on a fresh machine with no data and no network.

The target is a two-note door chime ("ding-dong") rung three times over a running engine and a
pink-noise room bed; the query is a separate ring of the same chime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import audio
from .event import make_out_dir

SR = audio.SAMPLE_RATE


def chime(rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """One "ding-dong": two decaying bell-like notes (E5 then C5 with inharmonic partials), ~1.6 s."""
    out = np.zeros(int(1.6 * sr), np.float32)
    for onset, f0 in ((0.0, 659.3), (0.55, 523.3)):
        t = np.arange(int(1.05 * sr)) / sr
        partials = ((1.0, 1.0), (2.76, 0.45), (5.40, 0.25), (8.93, 0.1))
        note = sum(a * np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 2 * np.pi)) for r, a in partials)
        note *= np.exp(-t * 4.0) * np.minimum(1.0, t / 0.003)
        i = int(onset * sr)
        out[i:i + len(note)] += note.astype(np.float32)
    return 0.25 * out / np.abs(out).max()


def engine(dur_s: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """A running engine: 38 Hz firing harmonics with slow speed and level drift."""
    t = np.arange(int(dur_s * sr)) / sr
    f = 38.0 * (1 + 0.05 * np.sin(2 * np.pi * 0.15 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase + rng.uniform(0, 6.28)) / k**0.7 for k in range(1, 25))
    x *= 1 + 0.3 * np.sin(2 * np.pi * 0.4 * t)
    return (0.12 * x / np.abs(x).max()).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise via spectral shaping, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / x.std()).astype(np.float32)


def make_example(seed: int = 7) -> dict[str, np.ndarray]:
    """A 10 s mixture, a 1.6 s query and the true target, all float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = 10 * SR
    gt = np.zeros(n, np.float32)
    for onset in (1.2, 4.9, 7.6):
        c = chime(rng)
        i = int(onset * SR)
        gt[i:i + len(c)] += c[: n - i]
    mix = gt + engine(10.0, rng) + 0.01 * pink_noise(n, rng)
    query = chime(rng) + 0.003 * pink_noise(int(1.6 * SR), rng)
    return {"mix": mix.astype(np.float32), "query": query.astype(np.float32), "gt": gt}


def write_example(out_dir: Path, seed: int = 7) -> dict[str, Path]:
    """Write ``mix.wav``, ``query.wav`` and ``gt.wav`` into ``out_dir``; returns their paths."""
    out_dir = make_out_dir(out_dir)
    paths = {}
    for name, x in make_example(seed).items():
        paths[name] = out_dir / f"{name}.wav"
        audio.write(paths[name], audio.peak_safe(x), fmt="PCM_16")
    return paths
