"""Waveforms from a mask: the target by masked iSTFT, the residual as what is left of the mixture.

Float32 subtlety: ``residual = mix - target`` rounds, so ``target + residual`` differs from
``mix`` by one ulp in a sizeable share of samples (10-50 % for realistic signals). :func:`split`
returns a pair whose float32 sum reproduces the mixture bit for bit, nudging the target by at
most half an ulp of ``max(|target|, |residual|)`` (about 1e-7 relative, -140 dB) where needed.
That is possible whenever the mixture sample is a multiple of that ulp -- always true for audio
decoded from 8/16/24-bit PCM (multiples of 2**-23) with |target|, |residual| < 2. For an
arbitrary float32 mixture sample near a zero crossing (|mix| much smaller than |target|) no pair
of floats near (target, mix - target) adds up to it exactly; those few samples keep the plain
difference and are off by one ulp.
"""

from __future__ import annotations

import numpy as np
import torch

from . import features


def apply_mask(
    mix_stft: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    n_fft: int,
    hop: int,
    length: int,
) -> np.ndarray:
    """Target waveform: inverse STFT of ``mask * mix_stft``.

    Parameters
    ----------
    mix_stft : (F, T) complex mixture STFT (``features.stft`` with the same n_fft, hop).
    mask : (F, T) real mask, typically in [0, 1].
    n_fft, hop : STFT geometry.
    length : output length in samples (the mixture's).

    Returns
    -------
    np.ndarray (length,) float32 on the CPU.
    """
    X = torch.as_tensor(mix_stft)
    M = torch.as_tensor(mask).to(device=X.device, dtype=X.real.dtype)
    if M.shape != X.shape:
        raise ValueError(f"mask shape {tuple(M.shape)} does not match the STFT {tuple(X.shape)}")
    y = features.istft(X * M, n_fft, hop, length)
    return y.detach().cpu().numpy().astype(np.float32, copy=False)


def residual(mix: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``mix - target`` in float32 (n,). Use :func:`split` when the sum must equal ``mix`` exactly."""
    a = np.asarray(mix, dtype=np.float32)
    t = np.asarray(target, dtype=np.float32)
    if a.shape != t.shape:
        raise ValueError(f"mix {a.shape} and target {t.shape} differ in shape")
    return a - t


def split(mix: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target, residual) in float32 with ``target + residual == mix`` exactly wherever float32
    allows it (see the module docstring); the target moves by at most half an ulp.

    mix, target : (n,) arrays. Returns two new (n,) float32 arrays.
    """
    a = np.asarray(mix, dtype=np.float32)
    t = np.array(target, dtype=np.float32)  # a copy: the caller's array is not changed
    r = residual(a, t)
    bad = np.flatnonzero((t + r) != a)
    if bad.size == 0:
        return t, r
    ab, tb = a[bad].astype(np.float64), t[bad].astype(np.float64)
    # Put the target on the grid q = ulp(max(|t|, |a - t|)); if the mixture sample lies on that grid
    # too, a - t is exact in float32 and so is the sum.
    big = np.maximum(np.abs(tb), np.abs(ab - tb))
    q = np.exp2(np.floor(np.log2(np.maximum(big, 2.0**-126))) - 23)
    t_new = np.round(tb / q) * q
    ok = np.fmod(ab, q) == 0
    t32 = t_new.astype(np.float32)
    r32 = (ab - t_new).astype(np.float32)
    ok &= (t32 + r32) == a[bad]
    t[bad[ok]], r[bad[ok]] = t32[ok], r32[ok]
    return t, r
