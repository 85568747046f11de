"""Rounds 4 and 8: small networks trained per pair at test time, on synthetic mixtures of the query
and the first estimate's residual.
"""

from __future__ import annotations

import numpy as np

from .common import SR, band_weights, detected_activity, frame_gate, query_shifts, shipped_mask


def random_envelopes(n: int, w, eq_db: float, gen):
    """(n, F) random smooth magnitude gains: per example, one gain per band of w (n_bands, F),
    the mel-band interpolation weights of :func:`band_weights` (triangular, columns summing to
    1), drawn uniformly in ± ``eq_db`` dB and interpolated across the F bins, so the gain varies
    smoothly over frequency. ``gen`` a torch.Generator; returns float32 linear magnitude factors
    (1 = unchanged)."""
    import torch

    db = (torch.rand(n, w.shape[0], generator=gen) * 2 - 1) * eq_db  # (n, bands) dB
    return torch.pow(10.0, (db @ w) / 20)  # (n, F)


def _random_crops(P, n: int, length: int, gen):
    """(n, F, length) random time crops of the magnitude pool P (F, Tp) (tiled when Tp < length)."""
    import torch

    if P.shape[1] < length:
        P = P.repeat(1, length // P.shape[1] + 1)
    start = torch.randint(0, P.shape[1] - length + 1, (n,), generator=gen)
    return torch.stack([P[:, s:s + length] for s in start.tolist()])


def ttt_eq(ctx: dict, gamma: float = 0.25, combine: str = "pow", eq_db: float = 6.0, eq_bands: int = 8,
           shift_st: float = 0.0, snr_lo: float = -10.0, snr_hi: float = 5.0, bg: str = "resid",
           bg_sharp: float = 4.0, additive: str = "power", loss: str = "sa", feat: str = "mel",
           n_mels: int = 24, channels: int = 16, kernel: int = 5, steps: int = 120, batch: int = 8,
           crop: int = 32, lr: float = 0.01, q_loud_db: float = 40.0, q_shifts: bool = True,
           m2_floor: float = 0.0, bg_eq_db: float = 0.0) -> np.ndarray:
    """A test-time-trained mask network (round 4's idea) whose training queries get random
    spectral envelopes, so it cannot learn the query recording's envelope, only its class-like
    structure; its mask m₂ then refines the shipped mask m_nmf (F, T).

    Training (per pair, ``steps`` Adam steps at learning rate ``lr``, ``batch`` examples of
    ``crop`` frames of the 512-point / hop-256 STFT, torch seeded with 0): target = a random crop
    of the query magnitude |Q| (F, Tq) restricted to its frames within ``q_loud_db`` dB of its
    loudest (digital silence and near-silence dropped; tiled when shorter than ``crop``) or, with
    ``q_shifts`` and a clearly harmonic query (the shipped rule, :func:`query_shifts`), with equal
    probability of one of its copies transposed by the shipped HARMONIC_QUERY_SHIFTS, times a
    random smooth envelope (:func:`random_envelopes`:
    ``eq_bands`` mel-band gains uniform in ± ``eq_db`` dB; 0 turns the augmentation off, the
    round-4 control) and transposed by a uniform ± ``shift_st`` semitones; background = a random
    crop of the first pass's residual: ``bg`` "resid" |X|·(1 − m_s) over all frames, m_s the
    shipped mask sharpened to m^k / (m^k + (1 − m)^k), k = ``bg_sharp`` (k 4 undoes the shipped
    exponent 0.25, giving about the NMF's magnitude ratio); "inactive" the mixture's frames with
    activity < 0.5 (fall back to "resid" when fewer than ``crop``); "both" either with
    probability 1/2; its crops get random envelopes of ± ``bg_eq_db`` dB too (0: none), so that
    neither side's envelope identifies it. The target is scaled to a target-to-background energy ratio uniform in
    [``snr_lo``, ``snr_hi``] dB and the two are added as powers (``additive`` "power":
    |Y| = √(|S|² + |N|²)) or magnitudes ("mag": |Y| = |S| + |N|). Loss ``loss`` "sa": mean
    squared error of m₂·|Y| against |S|, divided by the batch's mean |S|² (signal
    approximation); "bce": binary cross-entropy of m₂ against |S|² / (|S|² + |N|²).

    Network: input log(``n_mels``-band mel power + 1e-8), (``feat`` "mel"; "lin": log of the 257
    bins' power), minus the mixture's own mean of it (a level reference shared by training and
    inference); two temporal 1-D convolutions of ``kernel`` frames with ``channels`` channels
    and ReLU, then a per-frame linear layer to 257 bins and a sigmoid: m₂ (F, T) in [0, 1].

    Output (F, T) float32 in [0, 1], with m₂ first raised to at least ``m2_floor`` (bounds what
    the network can remove): ``combine`` "pow": m_nmf · m₂^``gamma``; "sqrt": √(m_nmf · m₂);
    "only": m₂ times the detector's activity (T,).
    """
    import torch

    from sourcesep import features

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    m_nmf = torch.from_numpy(np.asarray(shipped_mask(ctx), dtype=np.float32))
    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    F = V.shape[0]
    if float(act.max()) <= 0 or float(Vq.sum()) <= 0:
        return m_nmf.numpy()
    q_level = 10 * torch.log10(Vq.double().square().sum(0) + 1e-20)
    Vq = Vq[:, q_level > q_level.max() - q_loud_db]
    q_pool = [Vq] + [features.shift_frequency(Vq, float(st)) for st in (query_shifts(ctx["Vq"]) if q_shifts else ())]
    k = bg_sharp
    ms = m_nmf.pow(k) / (m_nmf.pow(k) + (1 - m_nmf).pow(k) + 1e-12)
    resid = V * (1 - ms)  # (F, T)
    inactive = V[:, act < 0.5]
    pools = {"resid": [resid], "inactive": [inactive if inactive.shape[1] >= crop else resid]}
    pools["both"] = pools["resid"] + pools["inactive"]
    pool = pools[bg]

    if feat == "mel":
        fb = features.mel_filterbank(F, n_mels, SR, 50.0, 8000.0, norm=None)  # (n_mels, F)
    else:
        fb = torch.eye(F)
    ref = torch.log(fb @ V.square() + 1e-8).mean()

    def net_in(mag):  # (n, F, L) magnitude → (n, n_in, L) features
        return torch.log(torch.einsum("mf,nfl->nml", fb, mag.square()) + 1e-8) - ref

    net = torch.nn.Sequential(
        torch.nn.Conv1d(fb.shape[0], channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, F, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    env_w = band_weights(F, eq_bands).float()  # (eq_bands, F)
    for _ in range(steps):
        S = torch.cat([_random_crops(q_pool[i], 1, crop, gen)
                       for i in torch.randint(0, len(q_pool), (batch,), generator=gen).tolist()])
        if eq_db > 0:
            S = S * random_envelopes(batch, env_w, eq_db, gen)[:, :, None]
        if shift_st > 0:
            shifts = ((torch.rand(batch, generator=gen) * 2 - 1) * shift_st).tolist()
            S = torch.stack([features.shift_frequency(s, st) for s, st in zip(S, shifts)])
        which = torch.randint(0, len(pool), (batch,), generator=gen).tolist()
        N = torch.cat([_random_crops(pool[i], 1, crop, gen) for i in which])
        if bg_eq_db > 0:
            N = N * random_envelopes(batch, env_w, bg_eq_db, gen)[:, :, None]
        snr = snr_lo + torch.rand(batch, generator=gen) * (snr_hi - snr_lo)
        es, en = S.square().sum((1, 2)), N.square().sum((1, 2))
        S = S * torch.sqrt(en * torch.pow(10.0, snr / 10) / es.clamp_min(1e-20))[:, None, None]
        Y = torch.sqrt(S.square() + N.square()) if additive == "power" else S + N
        logits = net(net_in(Y))
        if loss == "bce":
            target = S.square() / (S.square() + N.square()).clamp_min(1e-20)
            err = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        else:
            err = (torch.sigmoid(logits) * Y - S).square().mean() / S.square().mean().clamp_min(1e-20)
        opt.zero_grad()
        err.backward()
        opt.step()
    with torch.no_grad():
        m2 = torch.sigmoid(net(net_in(V[None])))[0].clamp_min(m2_floor)  # (F, T)
    if combine == "sqrt":
        out = torch.sqrt(m_nmf * m2)
    elif combine == "only":
        out = m2 * act[None, :]
    else:
        out = m_nmf * m2.pow(gamma)
    return out.clamp(0, 1).numpy().astype(np.float32)


def _ttt_share(ctx: dict, m_nmf, eq_db: float = 12.0,
             eq_bands: int = 8, snr_lo: float = -10.0, snr_hi: float = 5.0, bg_sharp: float = 4.0,
             p_absent: float = 0.25, p_part: float = 0.5, n_mels: int = 24, channels: int = 16,
             kernel: int = 5, steps: int = 150, batch: int = 8, crop: int = 32, lr: float = 0.01,
             q_loud_db: float = 40.0, bg: str = "resid", seed: int = 0):
    """(T,) per-frame target share from one network trained as :func:`ttt_gate` describes."""
    import torch

    from sourcesep import features

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    act = torch.as_tensor(detected_activity(ctx), dtype=torch.float32)
    V, Vq = ctx["V"].float(), ctx["Vq"].float()
    F = V.shape[0]
    q_level = 10 * torch.log10(Vq.double().square().sum(0) + 1e-20)
    Vq = Vq[:, q_level > q_level.max() - q_loud_db]
    q_pool = [Vq] + [features.shift_frequency(Vq, float(st)) for st in query_shifts(ctx["Vq"])]
    k = bg_sharp
    ms = m_nmf.pow(k) / (m_nmf.pow(k) + (1 - m_nmf).pow(k) + 1e-12)
    inactive = V[:, act < 0.5]
    pool = V * (1 - ms) if bg == "resid" or inactive.shape[1] < crop else inactive
    fb = features.mel_filterbank(F, n_mels, SR, 50.0, 8000.0, norm=None)
    ref = torch.log(fb @ V.square() + 1e-8).mean()

    def net_in(mag):
        return torch.log(torch.einsum("mf,nfl->nml", fb, mag.square()) + 1e-8) - ref

    net = torch.nn.Sequential(
        torch.nn.Conv1d(n_mels, channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, channels, kernel, padding=kernel // 2), torch.nn.ReLU(),
        torch.nn.Conv1d(channels, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    env_w = band_weights(F, eq_bands).float()
    for _ in range(steps):
        S = torch.cat([_random_crops(q_pool[i], 1, crop, gen)
                       for i in torch.randint(0, len(q_pool), (batch,), generator=gen).tolist()])
        S = S * random_envelopes(batch, env_w, eq_db, gen)[:, :, None]
        on = torch.ones(batch, crop)
        u = torch.rand(batch, generator=gen)
        for b in range(batch):
            if u[b] < p_absent:
                on[b] = 0
            elif u[b] < p_absent + p_part:
                a, z = sorted(torch.randint(0, crop + 1, (2,), generator=gen).tolist())
                on[b] = 0
                on[b, a:max(z, a + 1)] = 1
        N = _random_crops(pool, batch, crop, gen)
        snr = snr_lo + torch.rand(batch, generator=gen) * (snr_hi - snr_lo)
        es = (S.square().sum(1) * on).sum(1) / on.sum(1).clamp_min(1)
        en = N.square().sum((1, 2)) / crop
        scale = torch.sqrt(en * torch.pow(10.0, snr / 10) / es.clamp_min(1e-20))
        S = S * scale[:, None, None] * on[:, None, :]
        ps, pn = S.square().sum(1), N.square().sum(1)  # (batch, crop)
        label = ps / (ps + pn).clamp_min(1e-20)
        logits = net(net_in(torch.sqrt(S.square() + N.square())))[:, 0]
        err = torch.nn.functional.binary_cross_entropy_with_logits(logits, label)
        opt.zero_grad()
        err.backward()
        opt.step()
    with torch.no_grad():
        return torch.sigmoid(net(net_in(V[None]))[0, 0])


def ttt_gate(ctx: dict, gamma: float = 0.5, floor: float = 0.1, smooth: int = 5, ensemble: int = 1,
             **kw) -> np.ndarray:
    """A test-time-trained *frame* detector: a small network learns, per pair, each frame's target
    share of the energy from synthetic mixtures, and its output gates the shipped mask in time
    (the masks of rounds 4 and 8 worked per bin; this works per frame, where many bins agree).

    Training (``steps`` Adam steps, ``batch`` examples of ``crop`` frames, torch seeded with 0):
    target = a random crop of the query's loud frames (within ``q_loud_db`` of its loudest; its
    transposed copies for a clearly harmonic query, the shipped rule) times a random smooth
    envelope of ± ``eq_db`` dB over ``eq_bands`` mel bands (so the envelope cannot identify it);
    with probability ``p_absent`` no target, with ``p_part`` the target only on a random
    contiguous part of the crop (so the network sees onsets and offsets); background = a crop of
    the first pass's residual |X|·(1 − m_s) (``bg`` "resid", m_s the shipped mask sharpened with
    exponent ``bg_sharp``) or of the frames with activity < 0.5 ("inactive"). Target-to-background
    energy ratio uniform in [``snr_lo``, ``snr_hi``] dB over the target's frames, added as powers.
    Label per frame: the target's share of the frame's energy; loss: binary cross-entropy.
    Network: log-mel (``n_mels`` bands) minus the mixture's mean, two temporal convolutions of
    ``kernel`` frames and ``channels`` channels with ReLU, a linear layer to one logit per frame.

    Output: the shipped mask times :func:`frame_gate` of the network's share on the mixture
    (``gamma``, ``floor``, ``smooth``). ``seed`` seeds torch (initialisation and sampling); with
    ``ensemble`` > 1 that many networks (seeds ``seed``, ``seed`` + 1, …) are trained and their
    shares averaged."""
    import torch

    m_nmf = torch.from_numpy(np.asarray(shipped_mask(ctx), dtype=np.float32))
    if float(detected_activity(ctx).max()) <= 0 or float(ctx["Vq"].sum()) <= 0:
        return m_nmf.numpy()
    seed = int(kw.pop("seed", 0))
    share = torch.stack([_ttt_share(ctx, m_nmf, seed=seed + i, **kw) for i in range(max(1, ensemble))]).mean(0)
    return (m_nmf * frame_gate(share, gamma, floor, smooth)[None, :]).clamp(0, 1).numpy()
ttt_gate.passes_to = _ttt_share  # its **kw: listed by --list
