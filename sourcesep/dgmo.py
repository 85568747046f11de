"""DGMO: gradient-based refinement of a time-frequency mask towards the stitched reference.

The mask is parametrised as ``m = floor + (1 - floor) * sigmoid(theta)`` (so it always lies in
[floor, 1]) and ``theta`` is optimised with Adam on

    L(m) = D(m) + lambda_tv * TV(m) + lambda_sat * mean(u * (1 - u)),   u = (m - floor) / (1 - floor)

D, the frame-normalised mel distance, averages over frames t:
  * frames where the reference is active (``||ref_t|| > 1e-6 max_t ||ref_t||``):
    ``|| est_t / ||est_t|| - ref_t / ||ref_t|| ||^2`` with ``est = fb @ (m * |X|)``: only the
    *shape* of the mel spectrum counts, so the loudness of the query take does not matter;
  * frames where the reference is zero (outside the detected segments):
    ``||est_t||^2 / ||fb @ |X|_t||^2``, the share of the mixture's mel energy the mask lets
    through, which pushes the mask towards its floor.
TV is the mean Charbonnier difference ``sqrt(d^2 + 1e-6) - 1e-3`` of neighbouring mask values
along time plus along frequency (smooth, so Adam's per-element normalisation does not amplify
sign flips of |d| near 0); the saturation term is largest at u = 0.5 and pushes values to 0 or 1.

Mel spectra are linear mel magnitudes (``fb @ |STFT|``), as in :mod:`sourcesep.reference`.
:func:`optimise_mask` uses a hand-derived gradient of this loss (one batched pass over all
frames per step, no autograd graph); :func:`optimise_mask_loop` is the seed's formulation (autograd
through a Python loop over frames) and follows the same trajectory (to ~1e-9 in float64; in
float32 rounding noise, amplified by Adam's per-element normalisation where a gradient crosses
zero, moves single mask values by up to ~0.02, mean difference < 1e-4).
Everything is deterministic for given inputs on a given device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

_U_EPS = 1e-3  # initial masks at the floor (or at 1) start at sigmoid(+-6.9), inside Adam's reach
_TV_EPS = 1e-3
_G_TINY = 1e-18  # gradients below this are zeroed (see _loss_and_grad)


@dataclass
class _Problem:
    theta0: torch.Tensor  # (F, T)
    mix_mag: torch.Tensor  # (F, T)
    fb: torch.Tensor  # (n_mels, F)
    ref_unit: torch.Tensor  # (n_mels, T) reference frames scaled to unit norm (0 where inactive)
    active: torch.Tensor  # (T,) bool
    mix_energy: torch.Tensor  # (T,) ||fb @ |X|_t||^2
    eps: float  # norm regulariser (squared inside the square roots)
    floor: float
    floor_t: torch.Tensor  # the floor as a 0-d tensor on the device (no per-step host copies)


def _prepare(mask0, mix_mag, ref_mel, mel_fb, floor: float) -> _Problem:
    # clone(): inputs made under torch.inference_mode cannot be saved for backward otherwise.
    X = torch.as_tensor(mix_mag).detach().clone()
    X = X if X.is_floating_point() else X.float()
    dev, dt = X.device, X.dtype
    m0 = torch.as_tensor(mask0).detach().clone().to(device=dev, dtype=dt)
    ref = torch.as_tensor(ref_mel).detach().clone().to(device=dev, dtype=dt)
    fb = torch.as_tensor(mel_fb).detach().clone().to(device=dev, dtype=dt)
    # Triangle tails of ~1e-17 only make subnormal products (slow on x86) in fb.T @ grad.
    fb = torch.where(fb.abs() < 1e-7 * fb.abs().max(), torch.zeros_like(fb), fb)
    if m0.shape != X.shape or fb.shape[1] != X.shape[0] or ref.shape != (fb.shape[0], X.shape[1]):
        raise ValueError(
            f"shape mismatch: mask0 {tuple(m0.shape)}, mix_mag {tuple(X.shape)}, "
            f"ref_mel {tuple(ref.shape)}, mel_fb {tuple(fb.shape)}"
        )
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    u0 = ((m0 - floor) / (1.0 - floor)).clamp(_U_EPS, 1.0 - _U_EPS)
    ref_norm = torch.linalg.vector_norm(ref, dim=0)
    # All-zero reference (nothing detected): every frame is a "push down" frame.
    active = (ref_norm > 1e-6 * ref_norm.max()) & (ref_norm > 0)
    unit = ref / ref_norm.clamp_min(torch.finfo(dt).tiny)[None, :]
    ref_unit = torch.where(active[None, :], unit, torch.zeros_like(ref))
    mix_mel = fb @ X
    mix_energy = (mix_mel * mix_mel).sum(0)
    eps = 1e-6 * float(mix_energy.max().sqrt()) + 1e-20
    return _Problem(
        torch.logit(u0), X, fb, ref_unit, active, mix_energy, eps, floor,
        torch.tensor(floor, dtype=dt, device=dev),
    )


def _mask(theta: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.sigmoid(theta)
    return floor + (1.0 - floor) * u, u


def _regularisers(m: torch.Tensor, u: torch.Tensor, lambda_tv: float, lambda_sat: float) -> torch.Tensor:
    dt_ = m[:, 1:] - m[:, :-1]
    df = m[1:, :] - m[:-1, :]
    tv = (torch.sqrt(dt_ * dt_ + _TV_EPS**2) - _TV_EPS).mean() if dt_.numel() else m.new_zeros(())
    tv = tv + ((torch.sqrt(df * df + _TV_EPS**2) - _TV_EPS).mean() if df.numel() else 0.0)
    return lambda_tv * tv + lambda_sat * (u * (1.0 - u)).mean()


def _data_loss(m: torch.Tensor, p: _Problem) -> torch.Tensor:
    est = p.fb @ (m * p.mix_mag)  # (n_mels, T)
    energy = (est * est).sum(0) + p.eps**2
    shape = (est / energy.sqrt()[None, :] - p.ref_unit).pow(2).sum(0)
    leak = energy / (p.mix_energy + p.eps**2)
    return torch.where(p.active, shape, leak).mean()


def _data_loss_loop(m: torch.Tensor, p: _Problem, active: list[bool]) -> torch.Tensor:
    """The seed's per-frame formulation of :func:`_data_loss` (same value, Python loop)."""
    total = m.new_zeros(())
    for t, is_active in enumerate(active):
        est = p.fb @ (m[:, t] * p.mix_mag[:, t])
        energy = (est * est).sum() + p.eps**2
        if is_active:
            total = total + (est / energy.sqrt() - p.ref_unit[:, t]).pow(2).sum()
        else:
            total = total + energy / (p.mix_energy[t] + p.eps**2)
    return total / max(len(active), 1)


def _charbonnier(d: torch.Tensor) -> torch.Tensor:
    """sqrt(d^2 + eps^2) (three fast passes; torch.hypot is several times slower on CPU)."""
    return (d * d).add_(_TV_EPS**2).sqrt_()


def _loss_and_grad(
    theta: torch.Tensor, p: _Problem, lambda_tv: float, lambda_sat: float, need_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(loss, d loss / d theta, mask): the same function as ``_data_loss + _regularisers`` with a
    hand-written gradient. The loop is memory-bound on the (F, T) arrays; this makes about a
    third of the passes over them that autograd does."""
    fl = p.floor
    u = torch.sigmoid(theta)
    m = torch.add(p.floor_t, u, alpha=1.0 - fl)
    n_frames = m.shape[1]
    # Data term. With h = est / n, e = h - ref: d shape / d est = 2 / n * (e - h <e, h>).
    est = p.fb @ (m * p.mix_mag)
    energy = (est * est).sum(0) + p.eps**2
    n = energy.sqrt()
    h = est / n
    e = h - p.ref_unit
    denom = p.mix_energy + p.eps**2
    loss = torch.where(p.active, (e * e).sum(0), energy / denom).mean()
    uu = torch.dot(u.reshape(-1), u.reshape(-1))
    if lambda_sat:
        loss = loss + lambda_sat * (u.sum() - uu) / u.numel()
    if not need_grad:
        if lambda_tv:
            for dim in (1, 0):
                d = torch.diff(m, dim=dim)
                if d.numel():
                    loss = loss + lambda_tv * (_charbonnier(d).sum() / d.numel() - _TV_EPS)
        return loss, None, m
    g_shape = (e - h * (e * h).sum(0)) * (2.0 / n)
    g_leak = est * (2.0 / denom)
    # Gradients are taken w.r.t. u directly: the (1 - floor) of dm/du is folded into the scalars.
    g_est = torch.where(p.active[None, :], g_shape, g_leak).mul_((1.0 - fl) / n_frames)
    g = (p.fb.T @ g_est).mul_(p.mix_mag)
    # Charbonnier TV along time and frequency: phi(d) = sqrt(d^2 + eps^2) - eps, phi'(d) = d / sqrt(..).
    if lambda_tv:
        for dim in (1, 0):
            d = torch.diff(m, dim=dim)
            if d.numel() == 0:
                continue
            hyp = _charbonnier(d)
            loss = loss + lambda_tv * (hyp.sum() / d.numel() - _TV_EPS)
            dphi = d.div_(hyp)
            a = lambda_tv * (1.0 - fl) / d.numel()
            if dim == 1:
                g[:, 1:].add_(dphi, alpha=a)
                g[:, :-1].sub_(dphi, alpha=a)
            else:
                g[1:, :].add_(dphi, alpha=a)
                g[:-1, :].sub_(dphi, alpha=a)
    if lambda_sat:  # d sat / d u = (1 - 2u) / N
        g.add_(u, alpha=-2.0 * lambda_sat / u.numel()).add_(lambda_sat / u.numel())
    g.mul_(torch.addcmul(u, u, u, value=-1.0))  # chain through u = sigmoid(theta): u' = u - u^2
    # Bins of (near) digital silence get gradients ~1e-25 whose squares in Adam are subnormal
    # floats, 10-100x slower on x86. Their steps would be ~1e-10 anyway: zero them.
    return loss, g.masked_fill_(g.abs() < _G_TINY, 0.0), m


class _Adam:
    """Adam (Kingma & Ba) on one tensor: torch.optim.Adam's update and defaults, up to rounding.

    Written out because constructing the first ``torch.optim`` optimiser in a process imports
    ~2 s of machinery, longer than the whole optimisation.
    """

    def __init__(self, theta: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.theta, self.lr, self.b1, self.b2, self.eps = theta, lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(theta)
        self.v = torch.zeros_like(theta)
        self.k = 0

    def step(self, grad: torch.Tensor) -> None:
        self.k += 1
        self.m.lerp_(grad, 1.0 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1.0 - self.b2)
        # lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), with sqrt(bc2) moved into the scalars.
        c2 = (1.0 - self.b2**self.k) ** 0.5
        denom = self.v.sqrt().add_(self.eps * c2)
        self.theta.addcdiv_(self.m, denom, value=-self.lr * c2 / (1.0 - self.b1**self.k))


def _run_analytic(
    p: _Problem, steps: int, lr: float, lambda_tv: float, lambda_sat: float
) -> tuple[torch.Tensor, list[float]]:
    theta = p.theta0.clone()
    opt = _Adam(theta, lr)
    history: list[torch.Tensor] = []
    for _ in range(steps):
        loss, grad, _m = _loss_and_grad(theta, p, lambda_tv, lambda_sat)
        history.append(loss)
        opt.step(grad)
    loss, _, m = _loss_and_grad(theta, p, lambda_tv, lambda_sat, need_grad=False)
    history.append(loss)
    m.clamp_(p.floor, 1.0)  # floor + (1 - floor) * 1 may round a hair above 1
    # One device sync for the whole curve instead of one per step.
    return m, [float(v) for v in torch.stack(history).cpu().tolist()]


def _run_autograd(
    p: _Problem, steps: int, lr: float, lambda_tv: float, lambda_sat: float, data_loss: Callable
) -> tuple[torch.Tensor, list[float]]:
    theta = p.theta0.clone().requires_grad_(True)
    opt = _Adam(theta.data, lr)
    history: list[torch.Tensor] = []
    for _ in range(steps):
        theta.grad = None
        m, u = _mask(theta, p.floor)
        loss = data_loss(m, p) + _regularisers(m, u, lambda_tv, lambda_sat)
        loss.backward()
        history.append(loss.detach())
        opt.step(theta.grad)
    with torch.no_grad():
        m, u = _mask(theta, p.floor)
        history.append(data_loss(m, p) + _regularisers(m, u, lambda_tv, lambda_sat))
    return m.detach(), [float(v) for v in torch.stack(history).cpu().tolist()]


def optimise_mask(
    mask0: torch.Tensor | np.ndarray,
    mix_mag: torch.Tensor | np.ndarray,
    ref_mel: torch.Tensor | np.ndarray,
    mel_fb: torch.Tensor | np.ndarray,
    *,
    steps: int = 18,
    lr: float = 0.28,
    lambda_tv: float = 0.008,
    lambda_sat: float = 0.001,
    floor: float = 0.08,
) -> tuple[torch.Tensor, list[float]]:
    """Refine ``mask0`` by ``steps`` Adam steps on the DGMO loss (see module docstring).

    Parameters
    ----------
    mask0 : (F, T) initial mask (``mask.initial_mask``), values in [floor, 1] (clipped otherwise).
    mix_mag : (F, T) mixture STFT magnitude; its device and float dtype are used throughout.
    ref_mel : (n_mels, T) stitched reference, linear mel magnitude (0 where the target is absent).
    mel_fb : (n_mels, F) the filterbank of ``ref_mel``.
    steps, lr : Adam steps and learning rate (on the logit parameter).
    lambda_tv, lambda_sat : weights of total variation and saturation.
    floor : lowest mask value.

    Returns
    -------
    (mask (F, T) in [floor, 1] on ``mix_mag``'s device, loss history: ``steps + 1`` floats,
    the loss of the initial mask followed by the loss after each step). The returned mask is the
    one after the last step. With ``steps == 0`` the mask is ``mask0`` clipped to [floor, 1].
    """
    with torch.inference_mode(False), torch.no_grad():
        p = _prepare(mask0, mix_mag, ref_mel, mel_fb, floor)
        m, history = _run_analytic(p, int(steps), lr, lambda_tv, lambda_sat)
    if steps == 0:
        m = torch.as_tensor(mask0).to(device=p.mix_mag.device, dtype=p.mix_mag.dtype).clamp(floor, 1.0)
    return m, history


def optimise_mask_loop(
    mask0: torch.Tensor | np.ndarray,
    mix_mag: torch.Tensor | np.ndarray,
    ref_mel: torch.Tensor | np.ndarray,
    mel_fb: torch.Tensor | np.ndarray,
    *,
    steps: int = 18,
    lr: float = 0.28,
    lambda_tv: float = 0.008,
    lambda_sat: float = 0.001,
    floor: float = 0.08,
) -> tuple[torch.Tensor, list[float]]:
    """Seed-faithful slow version of :func:`optimise_mask`: the mel distance is accumulated by a
    Python loop over frames (as the original script did). Same arguments and results within
    float rounding; kept only to measure the vectorised version against (benchmarks/speed.py)."""
    with torch.inference_mode(False), torch.enable_grad():
        p = _prepare(mask0, mix_mag, ref_mel, mel_fb, floor)
        active = p.active.cpu().tolist()
        m, history = _run_autograd(
            p, int(steps), lr, lambda_tv, lambda_sat, lambda mm, pp: _data_loss_loop(mm, pp, active)
        )
    if steps == 0:
        m = torch.as_tensor(mask0).to(device=p.mix_mag.device, dtype=p.mix_mag.dtype).clamp(floor, 1.0)
    return m, history


def refine_tv(
    mask0: torch.Tensor | np.ndarray,
    *,
    steps: int = 18,
    lr: float = 0.1,
    lambda_tv: float = 0.05,
) -> tuple[torch.Tensor, list[float]]:
    """Pull a mask towards piecewise smoothness: Adam on the logits ``z`` of ``m = sigmoid(z)``,

        L(m) = mean((m - m0)^2) + lambda_tv * (mean|m[:, t+1] - m[:, t]| + mean|m[f+1] - m[f]|),

    starting from ``m0 = clip(mask0, 1e-4, 1 - 1e-4)``. The same objective, optimiser and
    result (to float rounding) as autograd with ``torch.optim.Adam`` (tests/test_dgmo.py checks
    it), with the gradient written out: one pass per step over the (F, T) arrays and no autograd
    graph or optimiser construction (the first ``torch.optim`` use in a process costs ~2 s of
    imports; each autograd step ~3x this one).

    Parameters
    ----------
    mask0 : (F, T) mask in [0, 1] (CPU or CUDA tensor, or numpy). Its float dtype is kept.
    steps, lr : Adam steps and learning rate. lambda_tv : weight of the total variation.

    Returns
    -------
    (mask (F, T) in (0, 1) on ``mask0``'s device, loss history: ``steps + 1`` floats, the loss
    before each step and after the last).
    """
    with torch.inference_mode(False), torch.no_grad():
        m0 = torch.as_tensor(mask0).detach().clone()
        m0 = (m0 if m0.is_floating_point() else m0.float()).clamp_(1e-4, 1.0 - 1e-4)
        n_freq, n_time = m0.shape
        n, n_t, n_f = m0.numel(), n_freq * (n_time - 1), (n_freq - 1) * n_time
        z = torch.logit(m0)
        opt = _Adam(z, lr)
        history: list[torch.Tensor] = []

        def loss_and_grad(need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
            m = torch.sigmoid(z)
            r = m - m0
            loss = (r * r).sum() / n
            g = r.mul(2.0 / n) if need_grad else None
            for dim, count in ((1, n_t), (0, n_f)):
                if count == 0:
                    continue
                d = torch.diff(m, dim=dim)
                loss = loss + lambda_tv * d.abs().sum() / count
                if g is not None:
                    s = d.sign_().mul_(lambda_tv / count)  # d|x|/dx = sign(x), 0 at 0 like autograd
                    if dim == 1:
                        g[:, 1:].add_(s)
                        g[:, :-1].sub_(s)
                    else:
                        g[1:].add_(s)
                        g[:-1].sub_(s)
            if g is not None:
                g.mul_(m - m * m)  # through the sigmoid
            return loss, g, m

        for _ in range(int(steps)):
            loss, grad, _m = loss_and_grad(True)
            history.append(loss)
            opt.step(grad)
        loss, _, m = loss_and_grad(False)
        history.append(loss)
    return m, [float(v) for v in torch.stack(history).cpu().tolist()]
