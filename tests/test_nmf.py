"""NMF: decreasing divergence, fixed atoms stay fixed, supervised separation of two known sources."""

from __future__ import annotations

import numpy as np
import torch

from sourcesep import nmf


def _kl(V, WH):
    V, WH = V.clamp_min(1e-10), WH.clamp_min(1e-10)
    return float((V * torch.log(V / WH) - V + WH).sum())


def test_learn_dictionary_fits_low_rank_data():
    g = torch.Generator().manual_seed(0)
    W = torch.rand(40, 3, generator=g)
    H = torch.rand(3, 200, generator=g)
    V = W @ H
    Wl = nmf.learn_dictionary(V, 3, n_iter=200)
    assert Wl.shape == (40, 3)
    assert torch.allclose(Wl.sum(0), torch.ones(3), atol=1e-4)  # unit-sum columns
    Hl = nmf.fit_activations(V, Wl, n_iter=200)
    assert Hl.shape == (3, 200) and bool((Hl >= 0).all())
    assert _kl(V, Wl @ Hl) / float(V.sum()) < 0.01


def test_beta_nmf_keeps_fixed_atoms_and_reduces_divergence():
    g = torch.Generator().manual_seed(1)
    V = torch.rand(30, 80, generator=g) + 0.1
    W0, H0 = nmf.normalise_columns(nmf.random_init(30, 6, seed=2), nmf.random_init(6, 80, seed=3))
    learn = torch.tensor([False, False, True, True, True, True])
    before = _kl(V, W0 @ H0)
    for beta in (0.0, 1.0, 2.0):
        W, H = nmf.beta_nmf(V, W0, H0, n_iter=50, beta=beta, update_w=learn)
        assert torch.allclose(W[:, :2], W0[:, :2] / W0[:, :2].sum(0))
        assert bool(torch.isfinite(W).all() and torch.isfinite(H).all())
    W, H = nmf.beta_nmf(V, W0, H0, n_iter=50, beta=1.0, update_w=learn)
    assert _kl(V, W @ H) < before


def test_query_dictionary_separates_two_spectra():
    """Source A (low band) learned alone; in a mixture with B (high band), A's atoms explain A."""
    rng = np.random.default_rng(0)
    F, T = 64, 120
    spec_a = np.exp(-0.5 * ((np.arange(F) - 10) / 3.0) ** 2)
    spec_b = np.exp(-0.5 * ((np.arange(F) - 45) / 4.0) ** 2)
    act_a, act_b = rng.random(T), rng.random(T)
    Va = torch.tensor(np.outer(spec_a, act_a), dtype=torch.float32) + 1e-3
    Vb = torch.tensor(np.outer(spec_b, act_b), dtype=torch.float32) + 1e-3
    Wq = nmf.learn_dictionary(torch.tensor(np.outer(spec_a, rng.random(50)), dtype=torch.float32) + 1e-3, 2)
    W0 = torch.cat([Wq, nmf.normalise_columns(nmf.random_init(F, 2, seed=4))[0]], 1)
    V = Va + Vb
    W, H = nmf.beta_nmf(V, W0, torch.ones(4, T), n_iter=200, update_w=torch.tensor([False, False, True, True]))
    S = W[:, :2] @ H[:2]
    err = float((S - Va).abs().sum() / Va.sum())
    assert err < 0.2


def test_temporal_continuity_smooths_only_the_chosen_atoms_activations():
    """With a noisy-in-time source, the continuity penalty makes the penalised atom's activation
    change less from frame to frame than without it, and leaves an unpenalised atom's alone."""
    rng = np.random.default_rng(5)
    F, T = 32, 300
    spec_a = np.exp(-0.5 * ((np.arange(F) - 6) / 2.0) ** 2)
    spec_b = np.exp(-0.5 * ((np.arange(F) - 24) / 2.0) ** 2)
    W = torch.tensor(np.stack([spec_a / spec_a.sum(), spec_b / spec_b.sum()], 1), dtype=torch.float32)
    acts = torch.tensor(rng.random((2, T)) * 10 + 1, dtype=torch.float32)
    V = W @ acts
    H0 = torch.ones(2, T)

    def roughness(h):
        return float((h[1:] - h[:-1]).abs().mean() / h.mean())

    _, H_plain = nmf.beta_nmf(V, W, H0, n_iter=100, update_w=False)
    _, H_smooth = nmf.beta_nmf(V, W, H0, n_iter=100, update_w=False, smooth_h=torch.tensor([5.0, 0.0]))
    assert roughness(H_smooth[0]) < 0.5 * roughness(H_plain[0])
    assert abs(roughness(H_smooth[1]) - roughness(H_plain[1])) < 0.05 * roughness(H_plain[1])
    # A scalar weight penalises every atom; 0 is exactly the plain fit.
    _, H_all = nmf.beta_nmf(V, W, H0, n_iter=100, update_w=False, smooth_h=5.0)
    assert roughness(H_all[1]) < 0.5 * roughness(H_plain[1])
    _, H_zero = nmf.beta_nmf(V, W, H0, n_iter=100, update_w=False, smooth_h=0.0)
    assert torch.equal(H_zero, H_plain)
