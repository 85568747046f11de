"""Masked iSTFT and the exact target + residual split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signals import make_pair
from sourcesep import features, reconstruct

N_FFT, HOP = 512, 256


@pytest.fixture(scope="module")
def pcm_pair():
    """The synthetic pair's mixture on the 16-bit PCM grid (as read from a PCM_16 WAV)."""
    mix, _, gt, _ = make_pair()
    mix16 = (np.round(mix * 32767.0) / 32768.0).astype(np.float32)
    return mix16, gt


def _soft_mask(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0.08, 1.0, shape).astype(np.float32))


def test_apply_mask_identity_and_zero(pcm_pair):
    mix, _ = pcm_pair
    X = features.stft(torch.from_numpy(mix), N_FFT, HOP)
    y = reconstruct.apply_mask(X, torch.ones(X.shape), N_FFT, HOP, len(mix))
    assert y.dtype == np.float32 and y.shape == mix.shape
    np.testing.assert_allclose(y, mix, atol=1e-5)
    z = reconstruct.apply_mask(X, np.zeros(X.shape, np.float32), N_FFT, HOP, len(mix))
    assert np.all(z == 0)
    with pytest.raises(ValueError):
        reconstruct.apply_mask(X, torch.ones(3, 3), N_FFT, HOP, len(mix))


def test_split_reproduces_pcm_mixture_exactly(pcm_pair):
    mix, _ = pcm_pair
    X = features.stft(torch.from_numpy(mix), N_FFT, HOP)
    target0 = reconstruct.apply_mask(X, _soft_mask(X.shape), N_FFT, HOP, len(mix))
    plain = reconstruct.residual(mix, target0)
    assert plain.dtype == np.float32
    assert np.count_nonzero(target0 + plain != mix) > 0  # why split exists
    target, resid = reconstruct.split(mix, target0)
    assert target.dtype == resid.dtype == np.float32
    assert np.array_equal(target + resid, mix)
    # The target moved by at most half an ulp of the larger of target and residual.
    ulp = np.spacing(np.maximum(np.abs(target0), np.abs(resid)))
    assert np.all(np.abs(target - target0) <= 0.5 * ulp)
    assert not np.shares_memory(target, target0)


def test_split_on_arbitrary_float_mixture_is_at_worst_one_ulp():
    mix, _, _, _ = make_pair()  # arbitrary float32 samples (not on a PCM grid)
    X = features.stft(torch.from_numpy(mix), N_FFT, HOP)
    target0 = reconstruct.apply_mask(X, _soft_mask(X.shape, 1), N_FFT, HOP, len(mix))
    target, resid = reconstruct.split(mix, target0)
    s = target + resid
    bad_plain = np.count_nonzero(target0 + reconstruct.residual(mix, target0) != mix)
    assert np.count_nonzero(s != mix) < bad_plain
    assert np.all(np.abs(s - mix) <= np.spacing(np.maximum(np.abs(target), np.abs(resid))))


def test_residual_checks_shapes():
    with pytest.raises(ValueError):
        reconstruct.residual(np.zeros(4, np.float32), np.zeros(5, np.float32))
