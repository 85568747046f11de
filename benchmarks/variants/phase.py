"""Round 7: phase reconstruction (MISI) from the shipped mask; returns a waveform (n,) or a mask."""

from __future__ import annotations

import numpy as np

from .common import HOP, NFFT, shipped_mask


def misi(ctx: dict, iters: int = 5, output: str = "stft"):
    """MISI (multiple input spectrogram inversion, Gunawan & Sen 2010) from the shipped mask m.

    Two sources on the 512-point STFT, target m·X and residual (1 − m)·X, keep their magnitudes
    |m·X| and |(1 − m)·X| while their phases are re-estimated ``iters`` times: each source's time
    signal y_j = iSTFT(Ŝ_j) gets half of the mixture error e = x − y_1 − y_2, and Ŝ_j takes the
    phase of STFT(y_j + e/2). ``output`` "stft" returns iSTFT(Ŝ_target) (the magnitude-constrained
    estimate), "time" the last y_target + e/2 (the two estimates then sum to the mixture).
    ``iters=0`` returns the shipped estimate. Returns the target waveform (n,) float64.
    """
    import torch

    from sourcesep import features

    X, x = ctx["X"], ctx["x"]
    n = x.shape[-1]
    m = torch.from_numpy(np.asarray(shipped_mask(ctx), dtype=np.float32))
    A = torch.stack([m * X.abs(), (1 - m) * X.abs()])  # (2, F, T) fixed magnitudes
    S = torch.stack([m * X, (1 - m) * X])  # (2, F, T) complex, mixture phase to start
    y = features.istft(S, NFFT, HOP, n)
    for _ in range(iters):
        e = x - y.sum(0)
        Y = features.stft(y + 0.5 * e, NFFT, HOP)
        S = A * Y / Y.abs().clamp_min(1e-12)
        y = features.istft(S, NFFT, HOP, n)
    if output == "time" and iters > 0:
        return (y[0] + 0.5 * (x - y.sum(0))).numpy().astype(np.float64)
    return y[0].numpy().astype(np.float64)
