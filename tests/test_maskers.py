"""NMF maskers: range, shape, gating, and that the tone's energy is kept inside and removed outside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signals import SR, harmonic_tone, noise
from sourcesep import features
from sourcesep.dgmo import refine_tv
from sourcesep.maskers import activity_on_grid, frame_gain, frame_share, mask_nmf, mask_wiener
from sourcesep.types import Detection, Segment

NFFT, HOP = 512, 256


def _oracle_detection(T, truth):
    t = features.frame_times(T, HOP, SR)
    act = np.zeros(T)
    for s, e in truth:
        act[(t >= s) & (t <= e)] = 1.0
    return Detection("oracle", t, act, [Segment(s, e) for s, e in truth], True)


@pytest.mark.parametrize("masker", [mask_nmf, mask_wiener])
def test_mask_keeps_tone_and_removes_noise(pair, masker):
    mix, query, gt, truth = pair
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(query), NFFT, HOP)
    det = _oracle_detection(X.shape[1], truth)
    res = masker(X, Q, det, floor=0.0)
    m = res.mask
    assert m.shape == tuple(X.shape) and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0
    # Outside the activity the mask is closed.
    assert np.all(m[:, det.activity == 0] == 0)
    # Inside: the tone's bins pass, the noise bins mostly do not (energy-weighted mean mask).
    G = features.stft(torch.from_numpy(gt), NFFT, HOP).abs().numpy() ** 2
    N = features.stft(torch.from_numpy(mix - gt), NFFT, HOP).abs().numpy() ** 2
    act = det.activity > 0
    keep_tone = (m[:, act] * G[:, act]).sum() / G[:, act].sum()
    keep_noise = (m[:, act] * N[:, act]).sum() / N[:, act].sum()
    assert keep_tone > 0.6 and keep_noise < 0.4 * keep_tone, (keep_tone, keep_noise)


def test_not_found_gives_zero_mask(pair):
    mix, query, _, _ = pair
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(query), NFFT, HOP)
    det = Detection("query", features.frame_times(X.shape[1], HOP, SR), np.zeros(X.shape[1]), [], False)
    for masker in (mask_nmf, mask_wiener):
        assert not masker(X, Q, det, floor=0.1).mask.any()


def test_activity_resampled_to_grid():
    det = Detection("x", np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 0.0]), [], True)
    a = activity_on_grid(det, 5, frame_times_s=np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
    assert np.allclose(a, [0, 0.5, 1, 0.5, 0])
    assert np.allclose(activity_on_grid(det, 3), [0, 1, 0])


def test_refine_tv_smooths_and_records_loss():
    g = torch.Generator().manual_seed(0)
    m0 = (torch.rand(20, 30, generator=g) > 0.5).float() * 0.8 + 0.1
    m, hist = refine_tv(m0, steps=10, lr=0.1, lambda_tv=0.5)
    tv = lambda x: float((x[:, 1:] - x[:, :-1]).abs().mean())  # noqa: E731
    assert len(hist) == 11 and hist[-1] < hist[0]
    assert tv(m) < tv(m0) and float(m.min()) >= 0 and float(m.max()) <= 1


def test_harmonic_prior_keeps_more_tone_and_less_noise(pair):
    mix, query, gt, truth = pair
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(query), NFFT, HOP)
    det = _oracle_detection(X.shape[1], truth)
    G = features.stft(torch.from_numpy(gt), NFFT, HOP).abs().numpy() ** 2
    N = features.stft(torch.from_numpy(mix - gt), NFFT, HOP).abs().numpy() ** 2

    def ratio(m):  # target energy kept over noise energy kept, inside the activity
        act = det.activity > 0
        return (m[:, act] * G[:, act]).sum() / (m[:, act] * N[:, act]).sum()

    off = mask_nmf(X, Q, det, hp_prior=0.0)
    on = mask_nmf(X, Q, det)  # default: the prior is on
    assert on.info["query_harmonic_fraction"] > 0.8
    assert ratio(on.mask) > 1.2 * ratio(off.mask)


def test_a_harmonic_query_is_learned_at_several_pitches(pair):
    """The query tone a few semitones away from the target's pitch: its transposed copies
    cover the target, so more of the target passes than with the query's own pitch only."""
    mix, query, gt, truth = pair
    up = np.interp(np.arange(len(query)) * 2 ** (3 / 12), np.arange(len(query)), query, right=0.0)  # +3 semitones
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(up.astype(np.float32)), NFFT, HOP)
    det = _oracle_detection(X.shape[1], truth)
    G = features.stft(torch.from_numpy(gt), NFFT, HOP).abs().numpy() ** 2
    act = det.activity > 0

    def kept(m):
        return (m[:, act] * G[:, act]).sum() / G[:, act].sum()

    spread = mask_nmf(X, Q, det)
    single = mask_nmf(X, Q, det, harmonic_threshold=2.0)
    assert spread.info["query_shifts_semitones"] == [-5.0, -3.0, -1.0, 1.0, 3.0, 5.0]
    assert "query_shifts_semitones" not in single.info
    assert kept(spread.mask) > kept(single.mask) + 0.05, (kept(spread.mask), kept(single.mask))


def test_a_query_matching_the_target_recording_gets_a_sharper_mask_and_compressed_decompositions(pair):
    mix, query, gt, truth = pair
    take = query + noise(len(query) / SR, seed=11, level=0.01)  # another take: the tone over a quieter bed
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(take), NFFT, HOP)
    det = _oracle_detection(X.shape[1], truth)
    G = features.stft(torch.from_numpy(gt), NFFT, HOP).abs().numpy() ** 2
    N = features.stft(torch.from_numpy(mix - gt), NFFT, HOP).abs().numpy() ** 2
    act = det.activity > 0

    matched = mask_nmf(X, Q, det, matched_compression=1.0)  # the sharper exponent alone
    plain = mask_nmf(X, Q, det, matched_threshold=2.0)  # never matched: the base exponent
    assert matched.info["timbre_match"] >= 0.9 and matched.info["mask_power"] == 0.5
    assert plain.info["timbre_match"] == matched.info["timbre_match"] and plain.info["mask_power"] == 0.25
    assert plain.info["compression"] == matched.info["compression"] == 1.0

    # Sharper: bins the tone dominates pass more, bins the bed dominates pass less.
    tone_bins, bed_bins = (G > 10 * N) & act, (N > 10 * G) & act
    assert tone_bins.sum() > 100 and bed_bins.sum() > 100
    assert matched.mask[tone_bins].mean() > plain.mask[tone_bins].mean() + 0.02
    assert matched.mask[bed_bins].mean() < plain.mask[bed_bins].mean() - 0.02

    # By default a match also decomposes |X|^0.5, which weighs the target's quiet detail more:
    # the quietest quarter of the bins the tone dominates pass more.
    compressed = mask_nmf(X, Q, det)
    assert compressed.info["compression"] == 0.5 and compressed.info["mask_power"] == 0.5
    quiet = tone_bins & (G < np.percentile(G[tone_bins], 25))
    assert compressed.mask[quiet].mean() > matched.mask[quiet].mean() + 0.02


def test_nmf_dictionaries_learn_the_background_only_where_the_target_is_silent(pair):
    from sourcesep.maskers import nmf_dictionaries

    mix, query, _, truth = pair
    V = features.stft(torch.from_numpy(mix), NFFT, HOP).abs()
    Vq = features.stft(torch.from_numpy(query), NFFT, HOP).abs()
    act = torch.as_tensor(_oracle_detection(V.shape[1], truth).activity, dtype=torch.float32)
    Wq, Wb, Wf, fixed = nmf_dictionaries(V, Vq, act, n_query_atoms=8, n_background_atoms=6, n_free_atoms=3)
    assert fixed and (Wq.shape, Wb.shape, Wf.shape) == ((V.shape[0], 8), (V.shape[0], 6), (V.shape[0], 3))
    assert torch.allclose(torch.cat([Wq, Wb, Wf], 1).sum(0), torch.ones(17), atol=1e-4)
    # The 1 kHz tone's harmonics are in the query's atoms, not in the atoms of the bed.
    tone = int(1000 * NFFT / SR)
    per_atom = lambda W: float(W[tone - 1:tone + 2].sum()) / W.shape[1]  # noqa: E731
    assert per_atom(Wq) > 5 * per_atom(Wb), (per_atom(Wq), per_atom(Wb))
    # Given query atoms (a second decomposition's) are used as they are; the rest is learned as before.
    given = torch.rand(V.shape[0], 8, generator=torch.Generator().manual_seed(1))
    Wq2, Wb2, Wf2, _ = nmf_dictionaries(V, Vq, act, n_query_atoms=8, n_background_atoms=6, n_free_atoms=3,
                                        query_atoms=given)
    assert Wq2 is given and torch.equal(Wb2, Wb) and torch.equal(Wf2, Wf)
    # Fewer than 10 inactive frames: the background atoms are random, to be learned in the fit.
    _, _, _, fixed = nmf_dictionaries(V, Vq, torch.ones(V.shape[1]))
    assert not fixed


def test_frame_gain_follows_each_frames_target_share():
    F, T = 40, 60
    V = torch.ones(F, T)
    S = torch.zeros(F, T)
    S[:, :20] = 9.0  # target-dominated frames: share 0.9
    S[:, 40:] = 1.0
    B = torch.ones(F, T)
    B[:, 40:] = 0.0  # frames 40-59: the target alone, share 1
    g = frame_gain(frame_share(V, S, B, width=1), power=0.25, floor=0.1)
    assert g.shape == (T,) and g.dtype == torch.float32
    assert torch.allclose(g[:20], torch.tensor((0.1 + 0.9 * 0.9) ** 0.25))
    assert torch.allclose(g[20:40], torch.tensor(0.1 ** 0.25))  # no target: the floor
    assert torch.allclose(g[40:], torch.ones(20))
    assert torch.equal(frame_gain(frame_share(V, S, B), power=0.0), torch.ones(T))
    smooth = frame_gain(frame_share(V, S, B, width=5), power=1.0, floor=0.0)
    assert float(smooth[19]) == pytest.approx((3 * 0.9 + 2 * 0.0) / 5)  # a moving average over 5 frames
    assert float(smooth[0]) == pytest.approx(0.9)  # edges padded with their own value


def test_frame_gain_attenuates_active_frames_that_hold_only_the_background(pair):
    """A detection that runs on past the tone into the bed (4.0-5.5 s): the frame gain lowers
    the mask there, and keeps it where the tone sounds."""
    mix, query, gt, truth = pair
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(query), NFFT, HOP)
    det = _oracle_detection(X.shape[1], [(2.0, 5.5), (6.5, 8.0)])
    t = det.times_s
    bed, tone = (t > 4.2) & (t < 5.3), (t > 2.2) & (t < 3.8)
    with_gain = mask_nmf(X, Q, det, frame_times_s=t)
    without = mask_nmf(X, Q, det, frame_times_s=t, frame_gain_power=0.0)
    assert with_gain.info["frame_gain_mean"] < 1.0 and "frame_gain_mean" not in without.info
    assert with_gain.mask[:, bed].mean() < 0.8 * without.mask[:, bed].mean()
    assert with_gain.mask[:, tone].mean() > 0.9 * without.mask[:, tone].mean()


def test_a_second_pass_learns_an_interferer_that_sounds_only_inside_estimated_activity(pair):
    """An estimated detection (2.0-5.5 s) runs on past the tone into another tone (1.1 kHz, 4.0-5.5 s)
    that never sounds in the inactive frames. The second decomposition's background atoms learn it
    from the frames the first gives a low target share: less of it passes, and as much of the
    target tone. Known segments ("oracle") keep one decomposition."""
    mix, query, _, _ = pair
    other = harmonic_tone(1.5, f0=1100.0, seed=4)
    mix = mix.copy()
    mix[4 * SR: 4 * SR + len(other)] += other
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(query), NFFT, HOP)
    known = _oracle_detection(X.shape[1], [(2.0, 5.5), (6.5, 8.0)])
    t = known.times_s
    estimated = Detection("query", t, known.activity, known.segments, True)
    inter, tone = (t > 4.2) & (t < 5.3), (t > 2.2) & (t < 3.8)
    P = X.abs().square().numpy()

    def passed(mask, frames):  # share of the mixture's energy the mask lets through
        return float((mask[:, frames] ** 2 * P[:, frames]).sum() / P[:, frames].sum())

    two = mask_nmf(X, Q, estimated, frame_times_s=t)
    one = mask_nmf(X, Q, estimated, frame_times_s=t, second_pass_share=0.0)
    assert one.info["second_pass_frames"] == 0
    # the frames handed to the background are the other tone's (1.5 s ≈ 94 frames), not the target's
    assert 60 <= two.info["second_pass_frames"] <= 110
    assert passed(two.mask, inter) < 0.6 * passed(one.mask, inter)
    assert passed(two.mask, tone) > 0.97 * passed(one.mask, tone)
    k = mask_nmf(X, Q, known, frame_times_s=t)
    assert k.info["second_pass_frames"] == 0
    assert np.array_equal(k.mask, mask_nmf(X, Q, known, frame_times_s=t, second_pass_share=0.0).mask)


def test_two_pass_takes_given_query_atoms_into_both_decompositions(pair):
    """Query atoms given to nmf_two_pass serve both passes: the query's own atoms, given, reproduce
    the decomposition that learns them."""
    from sourcesep import nmf
    from sourcesep.maskers import nmf_two_pass

    mix, query, _, truth = pair
    V = features.stft(torch.from_numpy(mix), NFFT, HOP).abs()
    Vq = features.stft(torch.from_numpy(query), NFFT, HOP).abs()
    act = torch.as_tensor(_oracle_detection(V.shape[1], truth).activity, dtype=torch.float32)
    learned = nmf_two_pass(V, Vq, act, threshold=1.0, seed=3)
    atoms = nmf.learn_dictionary(Vq, 32, n_iter=40, seed=3)
    given = nmf_two_pass(V, Vq, act, threshold=1.0, seed=3, query_atoms=atoms)
    assert learned[2] == given[2] > 0  # a second pass ran
    assert torch.allclose(learned[0], given[0]) and torch.allclose(learned[1], given[1])


def test_second_pass_activity_hands_over_only_low_share_frames():
    """Frames whose share is below the threshold count as inactive; with no active one among
    them the activity is returned as it is."""
    from sourcesep.maskers import second_pass_activity

    act = torch.tensor([0.0, 0.3, 1.0, 1.0, 1.0, 0.6])
    share = torch.tensor([0.0, 0.1, 0.9, 0.2, 0.6, 0.1])
    second, n = second_pass_activity(share, act, 0.5)
    assert n == 2  # frames 3 and 5: active, share below 0.5
    assert torch.equal(second, torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
    same, none = second_pass_activity(torch.tensor([0.0, 0.1, 0.9, 0.6, 0.7, 0.8]), act, 0.5)
    assert none == 0 and same is act


def test_given_background_atoms_are_kept_and_reproduce_the_learned_fit(pair):
    """Background atoms given to nmf_fit stay fixed; the atoms the fit would learn, given, give
    the same decomposition."""
    from sourcesep.maskers import nmf_dictionaries, nmf_fit

    mix, query, _, truth = pair
    V = features.stft(torch.from_numpy(mix), NFFT, HOP).abs()
    Vq = features.stft(torch.from_numpy(query), NFFT, HOP).abs()
    act = torch.as_tensor(_oracle_detection(V.shape[1], truth).activity, dtype=torch.float32)
    learned = nmf_fit(V, Vq, act, seed=3)
    Wq, Wb, _, fixed = nmf_dictionaries(V, Vq, act, seed=3)
    assert fixed
    given = nmf_fit(V, Vq, torch.ones_like(act), seed=3, query_atoms=Wq, background_atoms=Wb)
    assert given.background_fixed and torch.equal(given.W[:, 32:64], Wb)
    assert all(torch.allclose(a, b) for a, b in zip(learned.parts(), given.parts()))
