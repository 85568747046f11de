"""Initial time-frequency mask of the seed masker, and its optional semantic refinements.

Masks are (F, T) on the mixture's STFT grid (F = n_fft // 2 + 1 bins, T frames), values in
[0, 1], torch tensors on the input's device. Mel spectrograms are linear mel magnitudes
``fb @ |STFT|`` (see :mod:`sourcesep.reference`). Nothing loops over frames or bins in Python.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np
import torch

Kind = Literal["speech", "music", "event"]


def _as_tensor(x: torch.Tensor | np.ndarray, like: torch.Tensor | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if like is not None:
        t = t.to(device=like.device, dtype=like.dtype if t.is_floating_point() else t.dtype)
    return t


def mel_to_linear(mel_fb: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Matrix that spreads mel-band values back onto linear-frequency bins.

    Each triangle is first scaled to a peak of 1 (so the filterbank's own normalisation, slaney
    area or row sum, does not matter); each linear bin then takes the weighted mean of the bands
    covering it (columns normalised to sum 1). Between the first and last band centres this is
    linear interpolation between neighbouring bands. Bins no band covers (DC and Nyquist for a
    0..sr/2 filterbank, or bins outside [fmin, fmax]) copy the nearest covered bin.

    mel_fb : (n_mels, F). Returns (F, n_mels), rows summing to 1 (a band-to-bin interpolator).
    """
    fb = _as_tensor(mel_fb)
    fb = fb if fb.is_floating_point() else fb.float()
    w = fb / fb.amax(dim=1, keepdim=True).clamp_min(torch.finfo(fb.dtype).tiny)
    col = w.sum(dim=0)  # (F,)
    covered = col > 1e-6
    if not bool(covered.any()):
        raise ValueError("mel filterbank covers no frequency bin")
    m = (w / col.clamp_min(1e-6)).T  # (F, n_mels)
    # Nearest covered bin for every bin (vectorised: distance matrix is F x F, tiny).
    idx = torch.arange(fb.shape[1], device=fb.device)
    cov_idx = idx[covered]
    nearest = cov_idx[(idx[:, None] - cov_idx[None, :]).abs().argmin(dim=1)]
    return m[nearest]


def initial_mask(
    mix_mag: torch.Tensor,
    ref_mel: torch.Tensor,
    mel_fb: torch.Tensor,
    activity: torch.Tensor,
    query_profile: torch.Tensor,
    *,
    time_mask_sharpening: float = 1.2,
    gamma_profile: float = 0.25,
    mask_floor: float = 0.08,
    soft_masking: bool = True,
) -> torch.Tensor:
    """The seed's initial mask from the stitched reference.

    1. Level match: each reference frame is scaled to the norm of the mixture's mel frame,
       ``r_t = ref_t * ||mix_t|| / ||ref_t||`` (the query take and the target differ in loudness;
       only the reference's spectral *shape* is trusted).
    2. Band ratio: ``ratio = clip(2 r / (r + mix_mel), 0, 1)`` per mel band and frame: the
       ``r / (r + mix)`` ratio mask, doubled so that a band the reference fully accounts for
       (r >= mix) passes at 1 and bands where the mixture has relatively more energy than the
       reference (interference) are attenuated smoothly.
    3. Mel-to-linear mapping: ``m_lin = mel_to_linear(fb) @ ratio`` (F, T) (transposed, peak- then
       column-normalised filterbank: interpolation between band values). Mapping the *ratio*
       rather than the reference magnitude keeps the mask independent of how the energy is
       distributed inside a band.
    4. Time activity and profile: ``m = activity**time_mask_sharpening *
       ((1 - gamma_profile) * m_lin + gamma_profile * profile)``, where ``profile`` is the
       query's long-term spectrum scaled to a peak of 1. The profile restores the harmonic
       detail the mel bands smear out; the activity keeps both terms off outside the segments.
    5. ``soft_masking``: clip to [mask_floor, 1]; otherwise binary: 1 where m >= 0.5, else floor.

    Parameters
    ----------
    mix_mag : (F, T) mixture STFT magnitude.
    ref_mel : (n_mels, T) stitched reference (``reference.stitch_reference``), linear mel magnitude.
    mel_fb : (n_mels, F) the filterbank that made ``ref_mel``.
    activity : (T,) in [0, 1] (``reference.time_activity``).
    query_profile : (F,) non-negative query spectrum (normalised here by its maximum).

    Returns
    -------
    Tensor (F, T) in [mask_floor, 1], dtype/device of ``mix_mag``.
    """
    X = _as_tensor(mix_mag)
    X = X if X.is_floating_point() else X.float()
    ref = _as_tensor(ref_mel, X)
    fb = _as_tensor(mel_fb, X)
    act = _as_tensor(activity, X).reshape(-1)
    prof = _as_tensor(query_profile, X).reshape(-1)
    F_, T = X.shape
    if ref.shape != (fb.shape[0], T) or fb.shape[1] != F_ or act.shape[0] != T or prof.shape[0] != F_:
        raise ValueError(
            f"shape mismatch: mix_mag {tuple(X.shape)}, ref_mel {tuple(ref.shape)}, mel_fb {tuple(fb.shape)}, "
            f"activity {tuple(act.shape)}, query_profile {tuple(prof.shape)}"
        )
    tiny = torch.finfo(X.dtype).tiny
    mix_mel = fb @ X  # (n_mels, T)
    gain = torch.linalg.vector_norm(mix_mel, dim=0) / torch.linalg.vector_norm(ref, dim=0).clamp_min(tiny)
    r = gain[None, :] * ref.clamp_min(0.0)
    eps = 1e-8 * mix_mel.max().clamp_min(tiny)  # silent bands: ratio 0, not NaN
    ratio = (2.0 * r / (r + mix_mel + eps)).clamp(0.0, 1.0)
    m_lin = mel_to_linear(fb) @ ratio  # (F, T)
    prof = prof.clamp_min(0.0) / prof.max().clamp_min(tiny)
    m = act.clamp(0.0, 1.0).pow(time_mask_sharpening)[None, :] * (
        (1.0 - gamma_profile) * m_lin + gamma_profile * prof[:, None]
    )
    if soft_masking:
        return m.clamp(mask_floor, 1.0)
    return torch.where(m >= 0.5, torch.ones_like(m), torch.full_like(m, mask_floor))


# Class-aware semantic blending: (smoothing multiplier, similarity exponent, keep harmonics).
# speech: similarity dips between syllables are not absences -> twice the smoothing;
# music: sustained and harmonic -> strong (harmonic) bins are exempt from the gate;
# events: short onsets -> half the smoothing and a squared (sharper) gate.
_KIND_BEHAVIOUR: dict[str | None, tuple[float, float, bool]] = {
    "speech": (2.0, 1.0, False),
    "music": (1.0, 1.0, True),
    "event": (0.5, 2.0, False),
    None: (1.0, 1.0, False),
}


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of a (T,) curve with standard deviation ``sigma`` frames (edge-replicated)."""
    if sigma <= 0 or x.numel() < 2:
        return x
    radius = max(1, int(math.ceil(3.0 * sigma)))
    k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (k / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(x.reshape(1, 1, -1), (radius, radius), mode="replicate")
    return torch.nn.functional.conv1d(padded, kernel.reshape(1, 1, -1)).reshape(-1)


def semantic_blend(
    mask: torch.Tensor,
    similarity: torch.Tensor,
    *,
    semantic_blending: float = 0.7,
    similarity_smoothing: float = 1.0,
    kind: Kind | None = None,
    floor: float = 0.0,
) -> torch.Tensor:
    """Gate a mask in time by the semantic (AST embedding) similarity of each frame to the query.

    The similarity (T,) (e.g. window cosine interpolated to frame times) is min-max normalised to
    [0, 1] (a flat curve carries no information and becomes all ones), Gaussian-smoothed with
    ``similarity_smoothing * k`` frames and raised to a power ``p`` (k, p from the class kind:
    speech 2x smoothing; music 1x; event 0.5x smoothing and p = 2), then
    ``mask * (1 - w * (1 - s))`` with ``w = semantic_blending``. For music ``w`` is scaled by
    ``1 - mask`` per bin, so strong (harmonic) bins keep their value and only weak bins are gated.
    The result is clipped to [floor, 1].

    mask : (F, T); similarity : (T,). Returns (F, T) like ``mask``.
    """
    if kind not in _KIND_BEHAVIOUR:
        raise ValueError(f"kind must be 'speech', 'music', 'event' or None, got {kind!r}")
    k_smooth, power, keep_harmonics = _KIND_BEHAVIOUR[kind]
    sim = _as_tensor(similarity, mask).reshape(-1)
    if sim.shape[0] != mask.shape[-1]:
        raise ValueError(f"similarity has {sim.shape[0]} frames, the mask {mask.shape[-1]}")
    lo, hi = sim.min(), sim.max()
    s = (sim - lo) / (hi - lo) if float(hi - lo) > 1e-6 else torch.ones_like(sim)
    s = gaussian_smooth(s, similarity_smoothing * k_smooth).clamp(0.0, 1.0).pow(power)
    w = semantic_blending * (1.0 - mask) if keep_harmonics else torch.full_like(mask, semantic_blending)
    return (mask * (1.0 - w * (1.0 - s[None, :]))).clamp(floor, 1.0)


def interp_axis(x: torch.Tensor, coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at fractional indices ``coords`` (clamped to
    ``[0, x.shape[dim] - 1]``); the result has ``len(coords)`` entries along ``dim``."""
    n = x.shape[dim]
    c = coords.clamp(0.0, n - 1)
    i0 = c.floor().long().clamp(0, n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = (c - i0.to(c.dtype))
    shape = [1] * x.ndim
    shape[dim] = -1
    frac = frac.reshape(shape)
    return x.index_select(dim, i0) * (1.0 - frac) + x.index_select(dim, i1) * frac


def spectrogram_feature_mask(
    patch_sim: torch.Tensor | np.ndarray,
    F: int,
    T: int,
    *,
    sr: int = 16000,
    hop: int = 256,
    num_mel_bins: int = 128,
    patch: int = 16,
    stride: int = 10,
) -> torch.Tensor:
    """Upsample an AST patch-similarity grid to the STFT grid as a 0..1 mask.

    The AST patch grid is (Fp, Tp): row i covers Kaldi-mel bins [stride*i, stride*i + patch) of
    a ``num_mel_bins``-band fbank from 20 Hz to sr/2 (row 0 = lowest), column j covers 10 ms fbank
    frames [stride*j, stride*j + patch) (25 ms windows, snip_edges). Bilinear interpolation is done
    at each STFT bin's position on that grid (mel-warped in frequency, frame-time-aligned in time),
    clamped at the edges, then min-max normalised to [0, 1] (a flat grid gives all ones).

    patch_sim : (Fp, Tp). Returns (F, T) float32 on ``patch_sim``'s device.
    """
    g = _as_tensor(patch_sim).to(torch.float32)
    if g.ndim != 2 or min(g.shape) == 0:
        raise ValueError(f"patch_sim must be a non-empty (Fp, Tp) grid, got {tuple(g.shape)}")
    dev = g.device
    n_fft = 2 * (F - 1)
    hz = torch.arange(F, device=dev, dtype=torch.float64) * (sr / max(n_fft, 1))
    mel = 1127.0 * torch.log1p(hz / 700.0)
    m_lo, m_hi = 1127.0 * math.log1p(20.0 / 700.0), 1127.0 * math.log1p((sr / 2) / 700.0)
    step = (m_hi - m_lo) / (num_mel_bins + 1)
    mel_bin = (mel - m_lo) / step - 1.0  # fractional Kaldi mel-bin index (centre of bin j at j)
    row = (mel_bin - (patch - 1) / 2.0) / stride
    frame_s = torch.arange(T, device=dev, dtype=torch.float64) * (hop / sr)
    fbank_frame = (frame_s * sr - 200.0) / 160.0  # 400-sample windows every 160: centre 200 + 160 k
    col = (fbank_frame - (patch - 1) / 2.0) / stride
    out = interp_axis(interp_axis(g, row.to(torch.float32), 0), col.to(torch.float32), 1)
    lo, hi = out.min(), out.max()
    if float(hi - lo) <= 1e-9:
        return torch.ones_like(out)
    return (out - lo) / (hi - lo)


# AudioSet ontology names -> kind. Matching is on lower-case words and two-word phrases, so
# "Vehicle horn, car horn, honking" is not an instrument, "Burst, pop" is not pop music and
# "Computer keyboard" is not a musical keyboard ("Keyboard (musical)" matches through "musical").
_SPEECH_WORDS = {
    "speech", "speaking", "conversation", "narration", "monologue", "babbling", "whispering",
    "shout", "shouting", "yell", "yelling", "bellow", "chatter", "voice",
}
_MUSIC_WORDS = {
    "music", "musical", "singing", "song", "singer", "choir", "chant", "yodeling", "humming",
    "rapping", "beatboxing", "a capella", "lullaby", "opera", "orchestra", "instrument",
    "violin", "fiddle", "cello", "double bass", "flute", "clarinet", "oboe", "bassoon", "saxophone",
    "trumpet", "trombone", "tuba", "french horn", "harmonica", "accordion", "bagpipes",
    "didgeridoo", "guitar", "banjo", "ukulele", "mandolin", "sitar", "zither", "harp", "harpsichord",
    "piano", "organ", "synthesizer", "sampler", "drum", "snare", "cymbal", "hi-hat", "tabla",
    "timpani", "tambourine", "marimba", "xylophone", "glockenspiel", "vibraphone", "steelpan",
    "theremin", "string section", "percussion", "jazz", "blues", "reggae", "funk", "disco",
    "techno", "dubstep", "electronica", "hip hop", "rock music", "rock and", "punk rock",
    "heavy metal", "grunge", "country", "bluegrass", "flamenco", "ska", "afrobeat",
}


def class_kind(class_name: str | None) -> Kind | None:
    """Map an AudioSet class name to "speech", "music" or "event" (None for no class).

    Speech: spoken-voice classes ("Speech", "Male speech, man speaking", "Conversation",
    "Narration, monologue", "Whispering", "Shout", "Speech synthesizer"...). Music: music genres,
    singing and musical instruments ("Music", "Violin, fiddle", "Flute", "Guitar", "Singing"...).
    Everything else, including non-verbal human sounds (laughter, cough) and alarms, is "event".
    """
    if class_name is None:
        return None
    words = re.findall(r"[a-z][a-z\-]*", class_name.lower())
    vocab = set(words) | {" ".join(p) for p in zip(words, words[1:])}
    if vocab & _SPEECH_WORDS and not vocab & {"singing", "song", "choir"}:
        return "speech"
    if vocab & _MUSIC_WORDS:
        return "music"
    return "event"
