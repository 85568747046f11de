"""Variants of the target's dictionary: what the query atoms learn from (equalised, trimmed, blurred
or band-limited queries, exemplars, atoms from the mixture) and the bounds that learn them from
the truth.
"""

from __future__ import annotations

import numpy as np

from .common import (
    N_ITER,
    band_weights,
    compressed_inputs,
    detected_activity,
    eq_gain,
    first_decomposition,
    gain_from_bands,
    is_matched,
    loud_mean_power,
    mask_from_parts,
    query_shifts,
    refined_activity,
    second_pass_activity,
    shape_cos,
    shipped,
    shipped_mask,
    with_activity,
    zero_mask,
)


def eq_gt(ctx: dict, bands: int = 16, power: float = 0.25, side: str = "both", refine: bool = False) -> np.ndarray:
    """Bound: the query equalised to the true target's long-term spectrum (``bands`` mel bands),
    mask exponent ``power`` (a matching timbre still raises it to 0.5); ``refine`` also trims the
    activity as ``refine-gt`` does (both bounds at once)."""
    if refine:
        ctx = with_activity(ctx, refined_activity(ctx))
    G = ctx["G"]
    if float(G.sum()) <= 0:
        return shipped_mask(ctx, power=power)
    g = eq_gain(loud_mean_power(G), loud_mean_power(ctx["Vq"]), bands, side=side)
    return shipped_mask(ctx, ctx["Vq"] * g[:, None], power=power)


def eq_mix(ctx: dict, bands: int = 16, strength: float = 1.0, limit_db: float = 20.0, side: str = "both",
           skip_matched: bool = False) -> np.ndarray:
    """The query equalised towards the mixture's active frames (target and interferers together),
    ``strength`` 1 fully, 0.5 half-way in dB, limited to ± ``limit_db``; ``side`` "cut" or
    "boost" keeps one direction only; ``skip_matched`` leaves a query whose timbre matches
    (sourcesep.timbre) as it is."""
    act = detected_activity(ctx) >= 0.5
    if act.sum() < 6:
        return shipped(ctx)
    if skip_matched and is_matched(ctx):
        return shipped(ctx)
    g = eq_gain(loud_mean_power(ctx["V"][:, act]), loud_mean_power(ctx["Vq"]), bands, limit_db, side)
    return shipped_mask(ctx, ctx["Vq"] * g.pow(strength)[:, None])


def eq_bound(ctx: dict, bands: int = 16, share: float = 0.3, power: float = 0.25) -> np.ndarray:
    """The query cut only where it cannot match the target: power adds, so the target's share of
    any band is at most the mixture's active frames' share divided by the target's share of their
    energy (at least ``share``); query bands above that bound are lowered to it."""
    import torch

    act = detected_activity(ctx) >= 0.5
    if act.sum() < 6:
        return shipped(ctx)
    w = band_weights(ctx["V"].shape[0], bands)
    m = w @ loud_mean_power(ctx["V"][:, act])
    q = w @ loud_mean_power(ctx["Vq"])
    m, q = m / m.sum(), q / q.sum()
    cut = torch.clamp(m / (share * q + 1e-30), max=1.0)
    return shipped_mask(ctx, ctx["Vq"] * (w.T @ cut.sqrt()).float()[:, None], power=power)


def eq_robust(ctx: dict, bands: int = 16, percentile: float = 20.0, strength: float = 1.0,
              limit_db: float = 12.0) -> np.ndarray:
    """The query equalised by a low percentile over the active loud frames of the band-wise log
    ratio mixture / query (each frame's median band removed): interferers that come and go raise
    the upper percentiles only."""
    import torch

    act = detected_activity(ctx)
    w = band_weights(ctx["V"].shape[0], bands)
    logmel = lambda m: torch.log(w @ m.double().square() + 1e-20).numpy()  # noqa: E731
    M, Mq = logmel(ctx["V"]), logmel(ctx["Vq"])
    level = np.log(ctx["V"].double().square().sum(0).numpy() + 1e-20)
    sel = (act >= 0.5) & (level > level.max() - 30 / 4.343)
    if sel.sum() < 6:
        return shipped(ctx)
    qlevel = np.log(ctx["Vq"].double().square().sum(0).numpy() + 1e-20)
    q_mean = np.log(np.exp(Mq[:, qlevel > qlevel.max() - 30 / 4.343]).mean(1) + 1e-20)
    d = M[:, sel] - q_mean[:, None]
    d = d - np.median(d, axis=0, keepdims=True)
    r = np.percentile(d, percentile, axis=1)
    r = np.clip((r - r.mean()) * strength, -limit_db / 4.343, limit_db / 4.343)
    g = torch.exp(0.5 * (w.T @ torch.from_numpy(r))).float()
    return shipped_mask(ctx, ctx["Vq"] * g[:, None])


def eq_masked(ctx: dict, bands: int = 16, strength: float = 1.0, rounds: int = 1, mask_power: float = 1.0,
              power: float = 0.25) -> np.ndarray:
    """The query equalised towards the long-term spectrum of a first estimate of the target:
    the mixture's active frames weighted by the NMF ratio ``(S^q / (S^q + B^q))²`` (q =
    ``mask_power``), repeated ``rounds`` times with the equalised query."""
    import torch

    from sourcesep import maskers

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    on = act >= 0.5
    if int(on.sum()) < 6:
        return shipped(ctx)
    q_power = loud_mean_power(Vq)
    g = torch.ones(V.shape[0])
    for _ in range(rounds):
        S, B = maskers.nmf_parts(V, Vq * g[:, None], act, n_free_atoms=maskers.free_atoms_for(ctx["det"]))
        m = S.pow(mask_power) / (S.pow(mask_power) + B.pow(mask_power) + 1e-12)
        est = (m * V)[:, on]
        g = eq_gain(loud_mean_power(est), q_power, bands).pow(strength)
    return shipped_mask(ctx, Vq * g[:, None], power=power)


def eq_top(ctx: dict, bands: int = 16, top: float = 0.2, strength: float = 1.0, limit_db: float = 20.0,
           smooth: int = 9, skip_matched: bool = False, power: float = 0.25) -> np.ndarray:
    """The query equalised towards the mixture's spectrum over its most target-like active loud
    frames: the ``top`` fraction by the first pass's query share S / (S + B) (smoothed over
    ``smooth`` frames)."""
    import torch

    from sourcesep import maskers

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    level = 10 * torch.log10(V.double().square().sum(0) + 1e-20)
    cand = ((act >= 0.5) & (level > level.max() - 30)).numpy()
    if cand.sum() < 10 or (skip_matched and is_matched(ctx)):
        return shipped(ctx)
    S, B = maskers.nmf_parts(V, Vq, act, n_free_atoms=maskers.free_atoms_for(ctx["det"]))
    share = (S.sum(0) / (S.sum(0) + B.sum(0)).clamp_min(1e-12)).numpy()
    share = np.convolve(share, np.ones(smooth) / smooth, "same")
    chosen = cand & (share >= np.quantile(share[cand], 1 - top))
    g = eq_gain(loud_mean_power(V[:, torch.from_numpy(chosen)]), loud_mean_power(Vq), bands, limit_db)
    return shipped_mask(ctx, Vq * g.pow(strength)[:, None], power=power)


def eq_onset(ctx: dict, bands: int = 16, half: int = 16, strength: float = 1.0, limit_db: float = 20.0,
             pick: str = "similar", min_rise_db: float = 3.0, power: float = 0.25,
             skip_matched: bool = False) -> np.ndarray:
    """The query equalised towards the spectrum a source adds when it starts: at each onset in or
    just before the active region (band power over the ``half`` frames after minus the ``half``
    before, a local maximum of the total rise of at least ``min_rise_db``), the positive part of
    that difference is the new source's spectrum, whatever sounded before. ``pick`` "similar"
    takes the onset whose added spectrum is closest to the query's (cosine of 16-band dB
    spectra), "strongest" the largest rise, "mean" a rise-weighted mean of all. ``skip_matched``
    leaves a query whose timbre matches as it is."""
    import torch

    act = detected_activity(ctx) >= 0.5
    if act.sum() < 6 or (skip_matched and is_matched(ctx)):
        return shipped(ctx)
    w = band_weights(ctx["V"].shape[0], bands)
    P = (w @ ctx["V"].double().square()).numpy()  # (bands, T)
    T = P.shape[1]
    q = (w @ loud_mean_power(ctx["Vq"])).numpy()
    csum = np.concatenate([np.zeros((bands, 1)), np.cumsum(P, 1)], 1)
    # Candidate onsets: active frames and the half-window before the activity starts.
    region = np.convolve(act.astype(float), np.ones(2 * half + 1), "same") > 0
    rise = np.full(T, -np.inf)
    added = np.zeros((bands, T))
    for t in range(half, T - half):
        if not region[t]:
            continue
        before = (csum[:, t] - csum[:, t - half]) / half
        after = (csum[:, t + half] - csum[:, t]) / half
        added[:, t] = np.maximum(after - before, 0.0)
        rise[t] = 10 * np.log10((after.sum() + 1e-20) / (before.sum() + 1e-20))
    peaks = [t for t in range(half, T - half) if rise[t] >= min_rise_db
             and rise[t] == rise[max(0, t - half):t + half + 1].max() and added[:, t].sum() > 0]
    if not peaks:
        return shipped(ctx)
    db = lambda x: 10 * np.log10(x / x.sum() + 1e-12)  # noqa: E731
    if pick == "strongest":
        spec = added[:, max(peaks, key=lambda t: rise[t])]
    elif pick == "mean":
        wts = np.array([10 ** (rise[t] / 10) for t in peaks])
        spec = sum(wt * added[:, t] / added[:, t].sum() for wt, t in zip(wts, peaks))
    else:
        qd = db(q) - db(q).mean()
        spec = added[:, max(peaks, key=lambda t: shape_cos(qd, db(added[:, t]) - db(added[:, t]).mean()))]
    g = gain_from_bands(torch.from_numpy(spec), torch.from_numpy(q), w, limit_db)
    return shipped_mask(ctx, ctx["Vq"] * g.pow(strength)[:, None], power=power)


def eq_fit(ctx: dict, bands: int = 16, limit_db: float = 20.0, free: int = 8, n_iter: int = 40,
           power: float = 0.25, two_pass: bool = False, only_matched: bool = False) -> np.ndarray:
    """The query equalised by a smooth gain fitted inside the semi-supervised NMF: the mixture ≈
    diag(g) W_q H_q + W_b H_b + W_f H_f on the active frames, g = ``bands`` mel-band gains
    (multiplicative KL updates, limited to ± ``limit_db``), then the shipped mask with the
    equalised query. With ``two_pass`` the background atoms of that fit also learn on the active
    frames the shipped first decomposition gives a target share below the second pass's threshold
    (as the shipped second decomposition's do), so fewer interferers are left for g to absorb.
    With ``only_matched``, only for a query whose timbre matches the active frames (else shipped)."""
    import torch

    from sourcesep import maskers, nmf

    if only_matched and not is_matched(ctx):
        return shipped_mask(ctx)

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    act_b = act
    if two_pass and float(act.max()) > 0:
        first = maskers.nmf_fit(V, Vq, act, n_free_atoms=free, n_iter=n_iter, query_shifts=query_shifts(Vq),
                                seed=ctx["seed"])
        low = maskers.frame_share(V, *first.parts(), width=5) < maskers.SECOND_PASS_SHARE
        act_b = torch.where(low, torch.zeros_like(act), act)
    Wq, Wb, Wf, fixed_b = maskers.nmf_dictionaries(V, Vq, act_b, n_free_atoms=free, n_iter=n_iter,
                                                   query_shifts=query_shifts(Vq), seed=ctx["seed"])
    kq = Wq.shape[1]
    others = torch.cat([Wb, Wf], 1)
    H = torch.full((kq + others.shape[1], V.shape[1]), float(V.mean()) + nmf.EPS)
    learn = torch.zeros(H.shape[0], dtype=torch.bool)
    learn[kq + (Wb.shape[1] if fixed_b else 0):] = True
    bw = band_weights(V.shape[0], bands).float()
    c = torch.ones(bands)
    lim = 10 ** (limit_db / 20)
    for _ in range(n_iter):
        # One multiplicative step of the shipped fit with the query atoms equalised by g, then g's.
        g = bw.T @ c
        We, H = nmf.beta_nmf(V, torch.cat([Wq * g[:, None], others], 1), H, n_iter=1, update_w=learn)
        others = We[:, kq:]
        S0 = Wq @ H[:kq]
        ratio = V / (We @ H).clamp_min(nmf.EPS)
        c = c * (bw @ (S0 * ratio * act_b).sum(1)) / (bw @ (S0 * act_b).sum(1)).clamp_min(1e-12)
        lc = torch.log(c.clamp_min(1e-12))  # a band the active frames leave empty
        c = torch.exp(lc - lc.mean()).clamp(1 / lim, lim)
    return shipped_mask(ctx, Vq * (bw.T @ c)[:, None], power=power)


def query_loud(ctx: dict, loud_db: float = 30.0) -> np.ndarray:
    """The query's atoms learned only from its frames within ``loud_db`` of its loudest (its
    quiet frames hold the query recording's own background, not the sound)."""
    level = 10 * np.log10(ctx["Vq"].double().square().sum(0).numpy() + 1e-20)
    keep = level > level.max() - loud_db
    if keep.sum() < 4:
        return shipped(ctx)
    return shipped_mask(ctx, ctx["Vq"][:, keep])


def query_denoise(ctx: dict, percentile: float = 10.0, alpha: float = 1.0, beta: float = 0.1) -> np.ndarray:
    """The query's own stationary background removed before its atoms are learned: power spectral
    subtraction of ``alpha`` times its per-bin ``percentile`` over frames, floored at ``beta`` of
    the original power."""
    import torch

    P = ctx["Vq"].double().square()
    noise = torch.quantile(P, percentile / 100, dim=1, keepdim=True)
    clean = torch.maximum(P - alpha * noise, beta * P).sqrt().float()
    return shipped_mask(ctx, clean)


def band_atoms(ctx: dict, bands: int = 3, keep_full: bool = True, skip_matched: bool = True) -> np.ndarray:
    """Query atoms that each cover one of ``bands`` mel-spaced frequency regions (learned from
    band-limited copies of the query's frames, beside the full frames with ``keep_full``), so the
    fit can weight the regions independently: a target whose spectral envelope differs from the
    query's is still explained by the query's atoms. ``skip_matched`` keeps the shipped atoms for a
    query whose timbre matches."""
    import torch

    if skip_matched and is_matched(ctx):
        return shipped(ctx)
    w = band_weights(ctx["Vq"].shape[0], bands).float()  # (bands, F), soft triangular regions
    copies = [ctx["Vq"] * w[b][:, None] for b in range(bands)]
    return shipped_mask(ctx, torch.cat(([ctx["Vq"]] if keep_full else []) + copies, 1))


def clusters(ctx: dict, free: int = 16, groups: int = 3, n_iter: int = 60, smooth: int = 9,
             power: float = 0.25, hp_prior: float = 0.25, margin: float = 1.0) -> np.ndarray:
    """The target's components taken from the mixture itself, the query only choosing them: ``free``
    atoms learned on the active frames (beside fixed background atoms from the inactive ones),
    grouped into ``groups`` sources by co-modulation (average-linkage clustering of the correlation
    of their smoothed log activations); each atom's query share is the part of it that the query's
    atoms explain when it is fitted by query and background atoms together; the group with the
    highest energy-weighted share, and any group within ``margin`` times the runner-up gap of it
    (1: the best group only), is the target."""
    import torch
    from scipy.cluster.hierarchy import fcluster, linkage

    from sourcesep import hpss, maskers, nmf

    V, Vq = ctx["V"], ctx["Vq"]
    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    on = act >= 0.5
    if int(on.sum()) < 10 or int((~on).sum()) < 10:
        return shipped(ctx)
    hq = hpss.harmonic_fraction(Vq)
    Wq, Wb, Wf, _ = maskers.nmf_dictionaries(V, Vq, act, n_free_atoms=free, query_shifts=query_shifts(Vq))
    W0 = torch.cat([Wb, Wf], 1)
    H0 = torch.full((W0.shape[1], V.shape[1]), float(V.mean()) + nmf.EPS)
    learn = torch.zeros(W0.shape[1], dtype=torch.bool)
    learn[Wb.shape[1]:] = True
    W, H = nmf.beta_nmf(V, W0, H0, n_iter=n_iter, update_w=learn, frame_weight=on.float())
    Wf, Hf = W[:, Wb.shape[1]:], H[Wb.shape[1]:]
    both = torch.cat([Wq, Wb], 1)
    Hfit = nmf.fit_activations(Wf, both, n_iter=60)  # each free atom as a mix of query and background atoms
    qpart = (Wq @ Hfit[:Wq.shape[1]]).sum(0)
    share = (qpart / (both @ Hfit).sum(0).clamp_min(nmf.EPS)).numpy()
    k = np.ones(smooth) / smooth
    logs = np.stack([np.convolve(np.log(h + 1e-6 * float(Hf.max())), k, "same") for h in Hf[:, on].numpy()])
    corr = np.nan_to_num(np.corrcoef(logs), nan=0.0)
    dist = np.clip(1 - corr[np.triu_indices(free, 1)], 0, 2)
    label = fcluster(linkage(dist, "average"), t=groups, criterion="maxclust")
    energy = Hf[:, on].sum(1).numpy()
    scores = {g: float((share[label == g] * energy[label == g]).sum() / energy[label == g].sum()) for g in set(label)}
    ranked = sorted(scores.values(), reverse=True)
    gap = ranked[0] - ranked[1] if len(ranked) > 1 else 1.0
    chosen = {g for g, sc in scores.items() if sc >= ranked[0] - (margin - 1) * gap}
    sel = torch.as_tensor(np.isin(label, list(chosen)))
    S = Wf[:, sel] @ Hf[sel]
    B = Wb @ H[:Wb.shape[1]] + Wf[:, ~sel] @ Hf[~sel]
    m = S.pow(power) / (S.pow(power) + B.pow(power) + nmf.EPS)
    if hp_prior > 0:
        mh = hpss.harmonic_mask(V)
        m = m * (hq * mh + (1 - hq) * (1 - mh)).pow(hp_prior)
    return (m * act[None]).clamp(0, 1).numpy()


def adapt_q(ctx: dict, lam: float = 0.3, n_iter: int = 40) -> np.ndarray:
    """The shipped two-pass masker whose second decomposition also adapts the query atoms to the
    mixture, on the frames still counted as the target's (active, not handed to the background),
    each step pulled back towards the query's own atoms: W_q ← W_q0^(1 − ``lam``) · W_q'^``lam``
    (W_q' the multiplicative update, columns renormalised). ``lam`` 0 is the shipped masker."""
    import torch

    from sourcesep import maskers, nmf

    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    if float(act.max()) <= 0:
        return zero_mask(ctx)
    kw = dict(n_free_atoms=maskers.free_atoms_for(ctx["det"]), query_shifts=query_shifts(Vq), seed=ctx["seed"])
    first = maskers.nmf_fit(V, Vq, act, **kw)
    kq = first.n_query_atoms
    low = maskers.frame_share(V, *first.parts(), width=5) < maskers.second_pass_for(ctx["det"], ctx["second_pass_share"])
    act_b = torch.where(low, torch.zeros_like(act), act)
    Wq0, Wb, Wf, fixed_b = maskers.nmf_dictionaries(V, Vq, act_b, query_atoms=first.W[:, :kq], **kw)
    W = torch.cat([Wq0, Wb, Wf], dim=1)
    H = torch.full((W.shape[1], V.shape[1]), float(V.mean()) + nmf.EPS)
    learn = torch.zeros(W.shape[1], dtype=torch.bool)
    learn[kq + (Wb.shape[1] if fixed_b else 0):] = True
    learn_q = torch.zeros_like(learn)
    learn_q[:kq] = True
    target_frames = (act_b >= 0.5).float()
    for _ in range(n_iter):
        W, H = nmf.beta_nmf(V, W, H, n_iter=1, update_w=learn)
        if lam > 0 and float(target_frames.sum()) > 0:
            Wu, _ = nmf.beta_nmf(V, W, H, n_iter=1, update_w=learn_q, update_h=False, frame_weight=target_frames)
            Wq = Wq0.clamp_min(nmf.EPS).pow(1 - lam) * Wu[:, :kq].pow(lam)
            W = torch.cat([Wq / Wq.sum(0, keepdim=True), W[:, kq:]], dim=1)
    S, B = W[:, :kq] @ H[:kq], W[:, kq:] @ H[kq:]
    return mask_from_parts(ctx, S, B, act)


def _exemplar_dictionary(V, n_components: int, *, n_iter: int = 80, beta: float = 1.0, seed: int = 0):
    """:func:`sourcesep.nmf.learn_dictionary` started from ``n_components`` of V's own frames, evenly
    spaced in their order of loudness, instead of random atoms (``seed`` unused)."""
    import torch

    from sourcesep import nmf

    V = torch.as_tensor(V, dtype=torch.float32)
    order = torch.argsort(V.sum(0), descending=True)
    pick = order[torch.linspace(0, len(order) - 1, n_components).round().long()]
    W0 = V[:, pick] + 1e-3 * float(V.mean()) + nmf.EPS
    H0 = torch.full((n_components, V.shape[1]), float(V.mean()) * V.shape[0] / n_components + nmf.EPS)
    W0, H0 = nmf.normalise_columns(W0, H0)
    return nmf.beta_nmf(V, W0, H0, n_iter=n_iter, beta=beta)[0]


def exemplar_init(ctx: dict) -> np.ndarray:
    """The shipped mask with the query and background dictionaries learned from exemplar frames
    (:func:`_exemplar_dictionary`) instead of random atoms: does a deterministic start remove the
    seed's spread? (The free atoms stay random.)"""
    from unittest import mock

    from sourcesep import nmf

    with mock.patch.object(nmf, "learn_dictionary", _exemplar_dictionary):
        return shipped_mask(ctx)


def blur(ctx: dict, bins: int = 5, matched: bool = False) -> np.ndarray:
    """The shipped masker with the query's magnitudes smoothed along frequency (a moving average
    over ``bins`` bins) before its atoms are learned, so a same-class query's atoms describe its
    class's spectral shape rather than its own recording's fine structure; a matching query keeps
    its own unless ``matched``."""
    import torch

    if is_matched(ctx) and not matched:
        return shipped_mask(ctx)
    Vq = ctx["Vq"].float()
    k = torch.ones(1, 1, bins) / bins
    sm = torch.nn.functional.conv1d(torch.nn.functional.pad(Vq.T[:, None, :], (bins // 2, bins // 2), mode="replicate"), k)
    return shipped_mask(ctx, query_mag=sm[:, 0, :].T.contiguous())


def bootstrap(ctx: dict, top: float = 0.2, k: int = 8, min_share: float = 0.5, width: int = 5, raw: bool = False,
              select: str = "share", only: bool = False, matched_only: bool = False) -> np.ndarray:
    """The shipped two-pass masker whose second decomposition's target dictionary also holds ``k``
    atoms learned from the mixture itself: from the first decomposition's target part of the
    active frames it trusts most (share over ``width`` frames at least ``min_share`` and in the top
    ``top`` fraction of the active frames), so the target's own recording, not only the query's,
    shapes the atoms. Round 15: ``raw`` learns them from the mixture's own magnitudes on those
    frames (not the target part, which only the query atoms' span can hold); ``select`` "gt" picks
    the frames by the true target's share of their energy instead (a bound: the mixture's cleanest
    target frames); ``only`` uses the new atoms alone as the target dictionary; ``matched_only``
    leaves a query whose timbre does not match the active frames as shipped."""
    import torch

    from sourcesep import maskers, nmf

    if select not in ("share", "gt"):
        raise ValueError(f"select must be 'share' or 'gt', got {select!r}")
    if matched_only and not is_matched(ctx):
        return shipped_mask(ctx)
    if (fitted := first_decomposition(ctx)) is None:
        return zero_mask(ctx)
    act, alpha, Vc, Vqc, first = fitted
    S, B = first.parts()
    share = maskers.frame_share(Vc, S, B, width=width)
    on = act >= 0.5
    Wq = first.W[:, :first.n_query_atoms]
    if bool(on.any()):
        if select == "gt":
            score = (ctx["G"].double().square().sum(0) / ctx["V"].double().square().sum(0).clamp_min(1e-20)).float()
        else:
            score = share
        trusted = on & (score >= max(min_share, float(torch.quantile(score[on], 1 - top))))
        if k > 0 and int(trusted.sum()) >= 3:
            own = (Vc if raw else Vc * S / (S + B + nmf.EPS))[:, trusted]
            Wn = nmf.learn_dictionary(own, min(k, int(trusted.sum())), seed=ctx["seed"] + 11)
            Wq = Wn if only else torch.cat([Wq, Wn], dim=1)
    S, B = maskers.nmf_fit(Vc, Vqc, second_pass_activity(ctx, share, act), query_atoms=Wq,
                           n_free_atoms=maskers.free_atoms_for(ctx["det"]), seed=ctx["seed"]).parts()
    return mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)


def exemplars(ctx: dict, n: int = 64, matched_only: bool = True) -> np.ndarray:
    """The shipped two-pass masker whose target dictionary is ``n`` of the query's own frames
    (evenly spaced over its frames within 40 dB of its loudest, each normalised to unit sum)
    instead of atoms learned from it: a query from the target's own recording is then modelled
    frame by frame (only for such a query with ``matched_only``)."""
    import torch

    from sourcesep import maskers, nmf

    if matched_only and not is_matched(ctx):
        return shipped_mask(ctx)
    if (inputs := compressed_inputs(ctx)) is None:
        return zero_mask(ctx)
    act, alpha, Vc, Vqc = inputs
    e = ctx["Vq"].float().square().sum(0)
    loud = torch.nonzero(e >= e.max() * 1e-4).flatten()
    pick = loud[torch.linspace(0, len(loud) - 1, min(n, len(loud))).round().long()]
    Wq = nmf.normalise_columns(Vqc[:, pick] + nmf.EPS)[0]
    S, B, _ = maskers.nmf_two_pass(Vc, Vqc, act,
                                   threshold=maskers.second_pass_for(ctx["det"], ctx["second_pass_share"]),
                                   n_free_atoms=maskers.free_atoms_for(ctx["det"]), seed=ctx["seed"], query_atoms=Wq)
    return mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)


def coupled_q(ctx: dict, lam: float = 1.0, n_iter: int = N_ITER) -> np.ndarray:
    """Round 15: the target dictionary learned from the query and the mixture together (coupled
    KL-NMF), an estimate of ``atoms-gt:side=q``. The shipped two passes pick the background atoms
    (inactive frames, then also the first decomposition's low-share active frames); the second
    decomposition then updates the query atoms W_q on the mixture (V ≈ W_q H_q + W_b H_b + W_f H_f)
    and, in the same step, on the query's own frames (Vq ≈ W_q H'_q, only the query atoms; without
    a harmonic query's transposed copies), the
    query frames weighted so that together they count ``lam`` times the mixture's frames: the
    atoms move towards what the mixture's target needs only as far as they still explain the
    query. As ``lam`` grows the atoms stay the query's (the shipped masker, up to the query frames'
    further updates)."""
    import torch

    from sourcesep import maskers, nmf

    if (fitted := first_decomposition(ctx)) is None:
        return zero_mask(ctx)
    act, alpha, Vc, Vqc, first = fitted
    nq = first.n_query_atoms
    Wq = first.W[:, :nq]
    second = second_pass_activity(ctx, maskers.frame_share(Vc, *first.parts(), width=5), act)
    _, Wb, Wf, fixed_b = maskers.nmf_dictionaries(Vc, Vqc, second, query_atoms=Wq,
                                                  n_free_atoms=maskers.free_atoms_for(ctx["det"]), seed=ctx["seed"])
    W = torch.cat([Wq, Wb, Wf], 1)
    learn = torch.ones(W.shape[1], dtype=torch.bool)
    if fixed_b:
        learn[nq:nq + Wb.shape[1]] = False
    H = torch.full((W.shape[1], Vc.shape[1]), float(Vc.mean()) + nmf.EPS)
    Hq = torch.full((nq, Vqc.shape[1]), float(Vqc.mean()) + nmf.EPS)
    wq = lam * Vc.shape[1] / Vqc.shape[1]  # per query frame
    for _ in range(n_iter):
        H = H * (W.T @ (Vc / (W @ H).clamp_min(nmf.EPS))) / W.sum(0)[:, None].clamp_min(nmf.EPS)
        Hq = Hq * (Wq.T @ (Vqc / (Wq @ Hq).clamp_min(nmf.EPS))) / Wq.sum(0)[:, None].clamp_min(nmf.EPS)
        A = Vc / (W @ H).clamp_min(nmf.EPS)
        num, den = A @ H.T, H.sum(1)[None, :].expand(W.shape[0], -1).clone()
        Aq = Vqc / (Wq @ Hq).clamp_min(nmf.EPS)
        num[:, :nq] += wq * (Aq @ Hq.T)
        den[:, :nq] += wq * Hq.sum(1)[None, :]
        Wn = W * num / den.clamp_min(nmf.EPS)
        W = torch.where(learn[None, :], Wn, W)
        sc = torch.where(learn, W.sum(0).clamp_min(nmf.EPS), torch.ones_like(W[0]))
        W, H = W / sc, H * sc[:, None]
        Hq = Hq * sc[:nq, None]
        Wq = W[:, :nq]
    S, B = W[:, :nq] @ H[:nq], W[:, nq:] @ H[nq:]
    return mask_from_parts(ctx, S.pow(1 / alpha), B.pow(1 / alpha), act)
