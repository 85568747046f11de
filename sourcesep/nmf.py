"""Non-negative matrix factorisation with beta-divergence multiplicative updates (torch).

Used two ways: a *query dictionary* learned from the query's magnitude spectrogram, and a
*semi-supervised* fit of the mixture in which the query atoms are fixed (or only gently adapted)
while background atoms are learned from the mixture itself. Everything is vectorised over
frequency, time and components; the only loop is over iterations.

Conventions: ``V`` is a non-negative magnitude spectrogram (F, T); ``W`` (F, K) has unit-sum
columns (so activations ``H`` (K, T) carry the energy); beta = 1 is the Kullback-Leibler
divergence (the usual choice for magnitude spectra), beta = 0 Itakura-Saito, beta = 2 Euclidean.
"""

from __future__ import annotations

import torch

EPS = 1e-10


def _as_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.to(torch.float32) if not t.is_floating_point() or t.dtype == torch.float16 else t


def random_init(n_rows: int, n_cols: int, *, seed: int = 0, scale: float = 1.0, device=None) -> torch.Tensor:
    """Deterministic positive random matrix (n_rows, n_cols) in [0.1, 1.1) * scale."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_rows, n_cols, generator=g) + 0.1).mul_(scale).to(device)


def normalise_columns(W: torch.Tensor, H: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale W's columns to unit sum and move the scale into H's rows (W H unchanged)."""
    s = W.sum(0).clamp_min(EPS)
    W = W / s
    if H is not None:
        H = H * s[:, None]
    return W, H


def _aux(V: torch.Tensor, WH: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V * WH^(beta-2), WH^(beta-1)) with cheap special cases; None stands for all ones."""
    if beta == 1.0:
        return V / WH, None
    if beta == 0.0:
        inv = 1.0 / WH
        return V * inv * inv, inv
    if beta == 2.0:
        return V, WH
    return V * WH.pow(beta - 2), WH.pow(beta - 1)


def beta_nmf(
    V,
    W0,
    H0,
    *,
    n_iter: int = 100,
    beta: float = 1.0,
    update_w: torch.Tensor | bool = True,
    update_h: bool = True,
    frame_weight=None,
    l1_h: float = 0.0,
    smooth_h: float | torch.Tensor = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiplicative-update beta-NMF: V (F, T) ≈ W (F, K) @ H (K, T).

    update_w: True/False, or a bool tensor (K,) choosing which atoms are learned (the others stay
    fixed, e.g. query atoms in a semi-supervised fit). frame_weight: optional (T,) non-negative
    weights of each frame in the W update (e.g. 0 for frames where the target is active, so
    background atoms are learned only from background frames). l1_h: sparsity weight on H.
    smooth_h: weight of a temporal-continuity penalty on H (Virtanen 2007), a scalar or one weight
    per atom (K,): each row's squared frame-to-frame change over its mean; 0 turns it off.
    Returns (W, H) with W's columns normalised to unit sum.
    """
    V = _as_tensor(V).clamp_min(0)
    W = _as_tensor(W0).clone().clamp_min(EPS)
    H = _as_tensor(H0).clone().clamp_min(EPS)
    K = W.shape[1]
    if isinstance(update_w, bool):
        upd = torch.full((K,), update_w, dtype=torch.bool, device=W.device)
    else:
        upd = torch.as_tensor(update_w, dtype=torch.bool, device=W.device)
    fw = None if frame_weight is None else _as_tensor(frame_weight).to(W.device)[None, :]
    any_w = bool(upd.any())
    sm = torch.as_tensor(smooth_h, dtype=H.dtype, device=H.device).reshape(-1, 1)
    sm = sm if bool((sm > 0).any()) and H.shape[1] > 1 else None
    for _ in range(n_iter):
        if update_h:
            A, B = _aux(V, (W @ H).clamp_min(EPS), beta)
            num = W.T @ A
            # beta = 1: B is all ones, so W.T @ B is W's column sums (no matmul needed).
            den = (W.sum(0)[:, None] if B is None else W.T @ B) + l1_h
            if sm is not None:
                # Temporal continuity (Virtanen 2007): sum_t lam_k (h_kt - h_k,t-1)^2 / (2 mean_t h_k),
                # its gradient split into a positive part (den) and a negative part (num).
                m = H.mean(1, keepdim=True).clamp_min(EPS)
                nb = torch.cat([H[:, :1], H[:, :-1]], 1) + torch.cat([H[:, 1:], H[:, -1:]], 1)
                num = num + sm * nb / m
                den = den + 2 * sm * H / m
            H = H * num / den.clamp_min(EPS)
        if any_w:
            A, B = _aux(V, (W @ H).clamp_min(EPS), beta)
            if fw is not None:
                A = A * fw
            if B is None:  # beta = 1: ones @ H.T is H's (weighted) row sums
                den = (H if fw is None else H * fw).sum(1)[None, :]
            else:
                den = (B if fw is None else B * fw) @ H.T
            Wn = W * (A @ H.T) / den.clamp_min(EPS)
            W = torch.where(upd[None, :], Wn, W)
            # Keep scale in H so fixed and learned atoms stay comparable.
            s = torch.where(upd, W.sum(0).clamp_min(EPS), torch.ones_like(W[0]))
            W, H = W / s, H * s[:, None]
    return W, H


def learn_dictionary(V, n_components: int, *, n_iter: int = 80, beta: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Learn a dictionary W (F, K) with unit-sum columns from a magnitude spectrogram V (F, T)."""
    V = _as_tensor(V)
    F, T = V.shape
    scale = float(V.mean()) + EPS
    W0 = random_init(F, n_components, seed=seed, device=V.device)
    H0 = random_init(n_components, T, seed=seed + 1, scale=scale * F / n_components, device=V.device)
    W0, H0 = normalise_columns(W0, H0)
    W, _ = beta_nmf(V, W0, H0, n_iter=n_iter, beta=beta)
    return W


def fit_activations(V, W, *, n_iter: int = 60, beta: float = 1.0, l1_h: float = 0.0) -> torch.Tensor:
    """Activations H (K, T) of a fixed dictionary W (F, K) for V (F, T)."""
    V, W = _as_tensor(V), _as_tensor(W)
    H0 = torch.full((W.shape[1], V.shape[1]), float(V.mean()) + EPS, device=V.device)
    _, H = beta_nmf(V, W, H0, n_iter=n_iter, beta=beta, update_w=False, l1_h=l1_h)
    return H
