"""Initial mask, semantic blending, patch-similarity mask and class kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signals import SR, make_pair
from sourcesep import features, mask, reference
from sourcesep.types import Segment

N_FFT, HOP, FLOOR = 512, 256, 0.08
HARMONIC_BINS = [32, 64, 96, 128]  # 1, 2, 3, 4 kHz


@pytest.fixture(scope="module")
def seed_inputs():
    mix, query, _, segs = make_pair()
    X = features.stft(torch.from_numpy(mix), N_FFT, HOP).abs()
    Q = features.stft(torch.from_numpy(query), N_FFT, HOP).abs()
    fb = features.mel_filterbank(X.shape[0], 64, SR)
    t = features.frame_times(X.shape[1], HOP, SR)
    segments = [Segment(s, e) for s, e in segs]
    ref = reference.stitch_reference(reference.query_mel(Q, fb), segments, t)
    act = reference.time_activity(segments, t)
    return X, fb, ref, act, reference.frequency_profile(Q)


def _initial(seed_inputs, **kw):
    X, fb, ref, act, prof = seed_inputs
    args = dict(time_mask_sharpening=1.2, gamma_profile=0.25, mask_floor=FLOOR, soft_masking=True)
    args.update(kw)
    return mask.initial_mask(X, ref, fb, act, prof, **args)


def test_initial_mask_selects_the_tone_inside_segments(seed_inputs):
    X, _, _, act, _ = seed_inputs
    m = _initial(seed_inputs)
    assert m.shape == X.shape == (257, 626)
    assert float(m.min()) >= FLOOR - 1e-7 and float(m.max()) <= 1.0
    inside = act.bool()
    harm_in = m[HARMONIC_BINS][:, inside].mean()
    harm_out = m[HARMONIC_BINS][:, ~inside].mean()
    noise_in = m[5:25][:, inside].mean()  # 150-750 Hz: the noise bed, no tone energy
    assert float(harm_in) > 0.7
    assert float(harm_out) == pytest.approx(FLOOR, abs=1e-6)
    assert float(noise_in) < 0.15
    assert torch.allclose(m[:, ~inside], torch.tensor(FLOOR))


def test_initial_mask_binary_and_profile_only(seed_inputs):
    X, *_ = seed_inputs
    m = _initial(seed_inputs, soft_masking=False)
    assert torch.all((m == 1.0) | torch.isclose(m, torch.tensor(FLOOR)))
    assert float(m[32][seed_inputs[3].bool()].mean()) > 0.9
    # gamma_profile = 1: inside segments the mask is the query profile (floored), frame by frame.
    prof = seed_inputs[4]
    m1 = _initial(seed_inputs, gamma_profile=1.0, time_mask_sharpening=1.0)
    col = int(torch.nonzero(seed_inputs[3])[0])
    assert torch.allclose(m1[:, col], prof.clamp(FLOOR, 1.0), atol=1e-6)


def test_initial_mask_accepts_numpy_and_checks_shapes(seed_inputs):
    X, fb, ref, act, prof = seed_inputs
    m = mask.initial_mask(X.numpy(), ref.numpy(), fb.numpy(), act.numpy(), prof.numpy())
    assert torch.allclose(m, _initial(seed_inputs))
    with pytest.raises(ValueError):
        mask.initial_mask(X[:, :10], ref, fb, act, prof)


def test_mel_to_linear_interpolates_and_covers_every_bin():
    fb = features.mel_filterbank(257, 64, SR)
    M = mask.mel_to_linear(fb)
    assert M.shape == (257, 64)
    assert torch.allclose(M.sum(1), torch.ones(257), atol=1e-5)
    assert torch.equal(M[0], M[1]) and torch.equal(M[-1], M[-2])  # DC / Nyquist copy neighbours
    flat = M @ torch.full((64, 3), 0.7)
    assert torch.allclose(flat, torch.full((257, 3), 0.7), atol=1e-5)  # constant bands -> constant bins


def test_semantic_blend_gates_low_similarity_frames():
    T = 200
    m = torch.full((257, T), 0.9)
    sim = torch.cat([torch.full((100,), 0.9), torch.full((100,), 0.2)])
    out = mask.semantic_blend(m, sim, semantic_blending=0.7, similarity_smoothing=1.0, kind=None, floor=FLOOR)
    assert out.shape == m.shape
    assert torch.allclose(out[:, :90], m[:, :90])  # most similar frames untouched
    assert torch.allclose(out[:, 110:], torch.full((257, 90), 0.9 * 0.3))  # 1 - w at similarity 0
    assert float(out.min()) >= FLOOR
    assert torch.equal(mask.semantic_blend(m, sim, semantic_blending=0.0, similarity_smoothing=1.0), m)
    flat = mask.semantic_blend(m, torch.full((T,), 0.5), semantic_blending=0.7, similarity_smoothing=1.0)
    assert torch.allclose(flat, m)  # no contrast, no information


def test_semantic_blend_class_behaviour():
    T = 200
    sim = torch.cat([torch.ones(100), torch.zeros(100)])
    m = torch.full((257, T), 0.5)
    m[32] = 1.0  # a strong harmonic bin
    kw = dict(semantic_blending=0.7, similarity_smoothing=3.0)
    speech = mask.semantic_blend(m, sim, kind="speech", **kw)
    event = mask.semantic_blend(m, sim, kind="event", **kw)
    music = mask.semantic_blend(m, sim, kind="music", **kw)
    # Width of the transition at the step: speech is smoother than events.
    def transition(x):
        row = x[0].numpy()
        return int(np.sum((row < row[0] - 1e-3) & (row > row[-1] + 1e-3)))
    assert transition(speech) > transition(event)
    assert torch.equal(music[32], m[32])  # music keeps full-strength (harmonic) bins
    assert float(music[0, -1]) < 0.5  # weak bins are still gated
    with pytest.raises(ValueError):
        mask.semantic_blend(m, sim, kind="noise", **kw)


def test_spectrogram_feature_mask_maps_patch_grid_to_stft_grid():
    Fp, Tp = 12, 99  # AST patch grid of a 10 s input
    g = torch.zeros(Fp, Tp)
    g[0, 40:60] = 1.0  # lowest patch row (about 20-250 Hz), middle of the clip
    out = mask.spectrogram_feature_mask(g, 257, 626)
    assert out.shape == (257, 626)
    assert float(out.min()) == 0.0 and float(out.max()) == pytest.approx(1.0)
    col = int(5.0 * SR / HOP)  # 5 s
    assert float(out[4, col]) > 0.9  # 125 Hz
    assert float(out[64, col]) < 0.05  # 2 kHz
    assert float(out[4, 30]) < 0.05  # 0.5 s: outside the active patches
    assert torch.equal(mask.spectrogram_feature_mask(torch.full((12, 99), 0.3), 257, 626), torch.ones(257, 626))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("Speech", "speech"),
        ("Male speech, man speaking", "speech"),
        ("Female speech, woman speaking", "speech"),
        ("Conversation", "speech"),
        ("Narration, monologue", "speech"),
        ("Speech synthesizer", "speech"),
        ("Music", "music"),
        ("Violin, fiddle", "music"),
        ("Flute", "music"),
        ("Clarinet", "music"),
        ("Guitar", "music"),
        ("Piano", "music"),
        ("Cello", "music"),
        ("Trumpet", "music"),
        ("Singing", "music"),
        ("Male singing", "music"),
        ("Keyboard (musical)", "music"),
        ("Dog", "event"),
        ("Chainsaw", "event"),
        ("Siren", "event"),
        ("Sine wave", "event"),
        ("Vehicle horn, car horn, honking", "event"),
        ("Burst, pop", "event"),
        ("Computer keyboard", "event"),
        ("Laughter", "event"),
        (None, None),
    ],
)
def test_class_kind(name, kind):
    assert mask.class_kind(name) == kind
