"""Variants of the decomposition and of the mask built from it: passes, iterations, seeds,
divergences, frame context, continuity, the exponents, and the dictionary bound.
"""

from __future__ import annotations

import numpy as np

from .common import (
    HOP,
    NFFT,
    N_ATOMS,
    N_ITER,
    compressed_inputs,
    detected_activity,
    first_decomposition,
    is_matched,
    mask_from_parts,
    nmf_share,
    query_shifts,
    shipped_mask,
    shipped_parts,
    zero_mask,
)


def hp_strength(ctx: dict, gamma: float = 0.25, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """The harmonic/percussive prior's exponent set to ``gamma`` for queries whose harmonic
    fraction lies in [``low``, ``high``] (the shipped exponent 0.25 elsewhere)."""
    from sourcesep import hpss

    hq = hpss.harmonic_fraction(ctx["Vq"])
    return shipped_mask(ctx, hp_prior=gamma if low <= hq <= high else 0.25)


def power_ramp(ctx: dict, low: float = 0.85, high: float = 0.95, p0: float = 0.25, p1: float = 0.5) -> np.ndarray:
    """The mask exponent rises linearly from ``p0`` at timbre match ``low`` to ``p1`` at ``high``
    (the shipped rule is a step from 0.25 to 0.5 at 0.9)."""
    from sourcesep import timbre

    match = timbre.timbre_match(ctx["V"], ctx["Vq"], detected_activity(ctx))
    w = 0.0 if match is None else float(np.clip((match - low) / (high - low), 0, 1))
    return shipped_mask(ctx, power=p0 + (p1 - p0) * w, matched_threshold=2.0)


def two_pass(ctx: dict, thr: float = 0.3, width: int = 15, passes: int = 2, rel: float = 0.0,
             cap: float = 1.0, skip_above: float = 1.0) -> np.ndarray:
    """A second decomposition whose background atoms also learn from the active frames that the
    first one gives a low target share (below ``thr``; share as the shipped frame gain's, over
    ``width`` frames): interferers that sound only inside the detected activity then get
    background atoms. Mask as shipped, from the second decomposition (with ``passes`` > 2, each
    further pass takes its background frames from the previous one's share). A pass that would
    hand over more than ``skip_above`` of the active frames is not run."""
    import torch

    from sourcesep import maskers

    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
    act, V, Vq, S, B = parts
    on = act >= 0.5
    for _ in range(passes - 1):
        share = nmf_share(V, S, B, width)
        limit = thr
        if rel > 0 and bool(on.any()):
            limit = thr * float(torch.quantile(share[on], rel / 100))
        low = share < limit
        if cap < 1 and bool(on.any()):
            limit_cap = float(torch.quantile(share[on], cap))
            low &= share < limit_cap
        if not bool((low & on).any()):
            break  # nothing new for the background atoms: the decomposition stays as it is
        if float((low & on).sum()) > skip_above * float(on.sum()):
            break  # (nearly) every active frame would go: the first decomposition is kept
        act_b = torch.where(low, torch.zeros_like(act), act)
        S, B = maskers.nmf_parts(V, Vq, act_b, n_free_atoms=maskers.free_atoms_for(ctx["det"]),
                                 query_shifts=query_shifts(Vq), seed=ctx["seed"])
    return mask_from_parts(ctx, S, B, act)


def iters(ctx: dict, dict_iter: int = 40, fit_iter: int = 40) -> np.ndarray:
    """The shipped two-pass masker with ``dict_iter`` multiplicative updates for learning the query
    and background dictionaries and ``fit_iter`` for the decompositions (shipped: 40 for both)."""
    if (parts := shipped_parts(ctx, n_iter=dict_iter, fit_iter=fit_iter)) is None:
        return zero_mask(ctx)
    act, V, Vq, S, B = parts
    return mask_from_parts(ctx, S, B, act)


def seed_ensemble(ctx: dict, n: int = 3) -> np.ndarray:
    """The mean of ``n`` shipped masks whose decompositions start from different random atoms
    (NMF seeds ``n·seed`` … ``n·seed + n − 1``, so the runs of ``--seeds`` use disjoint sets)."""
    return np.mean([shipped_mask(ctx, seed=n * ctx["seed"] + i) for i in range(n)], axis=0)


def prune_atoms(ctx: dict, thr: float = 0.8) -> np.ndarray:
    """Query atoms that a background atom resembles (cosine ≥ ``thr``) counted as background: a
    query atom the inactive frames also hold models the interferer as much as the target. Mask as
    shipped from the re-attributed parts of one decomposition (no change without fixed background
    atoms; ``thr`` > 1 gives the mask of ``--second-pass-share 0``)."""
    import torch

    from sourcesep import maskers

    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    if float(act.max()) <= 0:
        return zero_mask(ctx)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    kq = kb = 32
    W, H, _, fixed_b = maskers.nmf_fit(V, Vq, act, n_query_atoms=kq, n_background_atoms=kb,
                                       n_free_atoms=maskers.free_atoms_for(ctx["det"]),
                                       query_shifts=query_shifts(Vq), seed=ctx["seed"])
    keep = torch.ones(kq)
    if fixed_b:
        unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-12)
        keep = ((unit[:, :kq].T @ unit[:, kq:kq + kb]).max(1).values < thr).float()
    S = (W[:, :kq] * keep) @ H[:kq]
    return mask_from_parts(ctx, S, W @ H - S, act)


def domain(ctx: dict, alpha: float = 1.0, beta: float = 1.0, alpha_matched: float | None = None,
           beta_matched: float | None = None) -> np.ndarray:
    """Round 13: the two-pass masker (as shipped before the matched compression, which
    ``alpha_matched=0.5`` gives) with its decompositions on compressed magnitudes |X|^``alpha``
    (query and mixture alike; 1: none, 0.5: square-root, 2: power) under the beta-divergence
    ``beta`` (1: Kullback-Leibler, as shipped; 0: Itakura-Saito); the parts are taken back to
    magnitudes (S^(1/alpha)) before the shipped mask and frame gain. ``alpha_matched`` replaces
    ``alpha`` when the query's timbre matches the active frames (the shipped sharper-mask rule), and
    ``beta_matched`` (round 14) replaces ``beta`` for such a pair."""
    if beta_matched is not None and is_matched(ctx):
        beta = beta_matched
    if (parts := shipped_parts(ctx, alpha, alpha if alpha_matched is None else alpha_matched, beta=beta)) is None:
        return zero_mask(ctx)
    act, _, _, S, B = parts
    return mask_from_parts(ctx, S, B, act)


def _stack_frames(V, offsets):
    """(F·len(offsets), T): V (F, T) with each frame followed by its neighbours at ``offsets``
    frames (edge-replicated), so one atom spans several frames."""
    import torch

    T = V.shape[1]
    idx = torch.arange(T)
    return torch.cat([V[:, (idx + o).clamp(0, T - 1)] for o in offsets], dim=0)


def context(ctx: dict, r: int = 1, step: int = 1, average: bool = True, alpha: float = 1.0,
            alpha_matched: float | None = None) -> np.ndarray:
    """Round 13: the two-pass masker (as shipped before the matched compression) with atoms that
    span 2·``r`` + 1 frames ``step`` apart (frame-stacked NMF: an atom learns a sound's short-time
    evolution, not only its spectrum).
    The target and background parts of frame t are the mean of every stacked block's estimate of
    that frame (``average``) or the centre block's. ``alpha`` compresses the magnitudes as
    :func:`domain` does (``alpha_matched`` instead when the query's timbre matches the active
    frames, the shipped sharper-mask rule)."""
    import torch

    from sourcesep import features, maskers

    if (inputs := compressed_inputs(ctx, alpha, alpha if alpha_matched is None else alpha_matched)) is None:
        return zero_mask(ctx)
    act, alpha, V, Vq = inputs
    shifts = query_shifts(ctx["Vq"])
    offsets = [k * step for k in range(-r, r + 1)]
    copies = [Vq] + [features.shift_frequency(Vq, st) for st in shifts]
    Q = torch.cat([_stack_frames(c, offsets)[:, ::(2 if i else 1)] for i, c in enumerate(copies)], dim=1)
    S, B, _ = maskers.nmf_two_pass(_stack_frames(V, offsets), Q, act,
                                   threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                   n_free_atoms=maskers.free_atoms_for(ctx["det"]), seed=ctx["seed"])
    F, T = V.shape

    def unstack(X):
        if not average:
            return X[r * F:(r + 1) * F]
        out = torch.zeros(F, T)
        idx = torch.arange(T)
        for j, o in enumerate(offsets):
            # block j of column t estimates frame t + o
            out.index_add_(1, (idx + o).clamp(0, T - 1), X[j * F:(j + 1) * F])
        return out / len(offsets)

    return mask_from_parts(ctx, unstack(S).pow(1 / alpha), unstack(B).pow(1 / alpha), act)


def smooth_h(ctx: dict, lam: float = 0.3, target_only: bool = False) -> np.ndarray:
    """Round 14: the shipped masker whose mixture fits penalise the activations' frame-to-frame
    change (temporal continuity, Virtanen 2007) with weight ``lam``, on every atom or only the
    query's (``target_only``)."""
    if (parts := shipped_parts(ctx, smooth_h=lam, smooth_background=not target_only)) is None:
        return zero_mask(ctx)
    act, V, Vq, S, B = parts
    return mask_from_parts(ctx, S, B, act)


def dead_zone(ctx: dict, tau: float = 0.03, q: float = 1.0, matched_only: bool = False) -> np.ndarray:
    """Round 14: the shipped mask times ``min(1, r / tau)^q`` with r = S / (S + B) the
    decomposition's magnitude ratio: bins where the target explains less than ``tau`` of the
    magnitude go to 0 instead of keeping the soft mask's floor (p 0.25 keeps (S/B)^0.25)."""
    if (parts := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
    act, V, Vq, S, B = parts
    if matched_only and not is_matched(ctx):
        return mask_from_parts(ctx, S, B, act)
    r = S / (S + B + 1e-10)
    return mask_from_parts(ctx, S, B, act) * (r / tau).clamp(max=1.0).pow(q).numpy()


def pass_blend(ctx: dict, w: float = 0.5, geometric: bool = False) -> np.ndarray:
    """Round 14: the masks of the shipped masker's two decompositions blended, ``w`` times the
    first's plus (1 − ``w``) times the second's (or their weighted geometric mean), instead of the
    second's alone: a hedge for the pairs whose first share is low on the target itself. (The
    first decomposition is the one ``--second-pass-share 0`` gives; where no frame is handed
    over, both masks are the first's.)"""
    if (second := shipped_parts(ctx)) is None:
        return zero_mask(ctx)
    act, _, _, S2, B2 = second
    _, _, _, S1, B1 = shipped_parts(dict(ctx, second_pass_share=0.0))
    m1, m2 = mask_from_parts(ctx, S1, B1, act), mask_from_parts(ctx, S2, B2, act)
    if geometric:
        return (np.power(m1, w) * np.power(m2, 1 - w)).astype(np.float32)
    return (w * m1 + (1 - w) * m2).astype(np.float32)


def atoms_gt(ctx: dict, side: str = "both", free: int = 8, loud_db: float = 40.0, power: float = 0.25,
             matched_power: float = 0.5, gain: float = -1.0) -> np.ndarray:
    """Round 15 bound: the shipped mask from a decomposition whose dictionaries are learned from
    the true sources. ``side`` "q": the query atoms learned from gt.wav's frames within ``loud_db``
    of its loudest (the target as it sits in the mixture) and the shipped background atoms (two
    passes); "b": the shipped query atoms and background atoms learned from the whole interference
    (mix − gt); "both": both, one fit. ``free`` free atoms are learned in the fit. Splits what a
    perfect dictionary is worth into the target's and the interference's side. ``power`` and
    ``matched_power``: the mask's exponents (shipped 0.25, and 0.5 for a matching query);
    ``gain``: the frame gain's exponent (−1: as shipped)."""
    import torch

    from sourcesep import features, maskers, nmf

    if side not in ("q", "b", "both"):
        raise ValueError(f"side must be 'q', 'b' or 'both', got {side!r}")
    if (inputs := compressed_inputs(ctx)) is None:
        return zero_mask(ctx)
    act, alpha, Vc, Vqc = inputs
    G = ctx["G"].float()
    level = 10 * torch.log10(G.square().sum(0) + 1e-20)
    Wq_gt = nmf.learn_dictionary(G[:, level > level.max() - loud_db].pow(alpha), N_ATOMS, n_iter=N_ITER,
                                 seed=ctx["seed"])
    if side == "q":
        S, B, _ = maskers.nmf_two_pass(Vc, Vqc, act,
                                       threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                       n_free_atoms=free, query_atoms=Wq_gt, seed=ctx["seed"])
    else:
        Wq = Wq_gt if side == "both" else maskers.nmf_dictionaries(
            Vc, Vqc, act, query_shifts=query_shifts(ctx["Vq"]), seed=ctx["seed"])[0]
        interference = features.magnitude(features.stft(ctx["x"] - ctx["g"], NFFT, HOP)).float().pow(alpha)
        Wb = nmf.learn_dictionary(interference, N_ATOMS, n_iter=N_ITER, seed=ctx["seed"] + 3)
        S, B = maskers.nmf_fit(Vc, Vqc, act, query_atoms=Wq, background_atoms=Wb, n_free_atoms=free,
                               seed=ctx["seed"]).parts()
    return mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act, gain_power=None if gain < 0 else gain,
                            power=power, matched_power=matched_power)


def resid_bg(ctx: dict, k: float = 1.0, mode: str = "replace") -> np.ndarray:
    """Round 15: a second decomposition whose background atoms are learned from the first one's
    estimate of the interference on every frame, bin by bin: |X|·(1 − r)^``k`` with r = S / (S + B)
    the first decomposition's magnitude ratio (0 on the inactive frames), so the interferers that
    sound only under the target (what ``atoms-gt:side=b`` learns from the truth) get atoms of their
    own. ``mode`` "replace": those atoms instead of the shipped background atoms; "add": beside
    them. Query and free atoms as shipped; one fit, the shipped mask."""
    import torch

    from sourcesep import maskers, nmf

    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
    if (fitted := first_decomposition(ctx)) is None:
        return zero_mask(ctx)
    act, alpha, Vc, Vqc, first = fitted
    n_free = maskers.free_atoms_for(ctx["det"])
    S, B = first.parts()
    r = torch.where(act[None, :] >= 0.5, S / (S + B + nmf.EPS), torch.zeros_like(S))
    Wr = nmf.learn_dictionary(Vc * (1 - r).pow(k), N_ATOMS, n_iter=N_ITER, seed=ctx["seed"] + 5)
    nq = first.n_query_atoms
    Wq, Wb = first.W[:, :nq], first.W[:, nq:first.W.shape[1] - n_free]
    Wbg = Wr if mode == "replace" else torch.cat([Wb, Wr], 1)
    S, B = maskers.nmf_fit(Vc, Vqc, act, query_atoms=Wq, background_atoms=Wbg, n_free_atoms=n_free,
                           seed=ctx["seed"]).parts()
    return mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)
