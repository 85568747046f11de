"""Reference stitching and time activity on exact, hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signals import SR, harmonic_tone
from sourcesep import features, reference
from sourcesep.types import Segment

HOP = 256


def _numbered_query(n_mels: int = 8, tq: int = 5) -> torch.Tensor:
    """Query mel whose frame j is the constant j + 1, so the stitched index can be read back."""
    return torch.arange(1, tq + 1, dtype=torch.float32)[None, :].repeat(n_mels, 1)


def test_stitch_tiles_query_from_each_segment_start():
    t = features.frame_times(200, HOP, SR)  # 3.2 s
    segs = [Segment(0.5, 1.2), Segment(2.0, 2.6)]
    ref = reference.stitch_reference(_numbered_query(), segs, t)
    assert ref.shape == (8, 200)
    assert torch.all(ref == ref[:1])  # every band carries the same frame index here
    got = ref[0].numpy()
    dt = HOP / SR
    for seg in segs:
        inside = (t >= seg.start) & (t < seg.end)
        offs = np.floor((t[inside] - seg.start) / dt + 1e-6).astype(int)
        np.testing.assert_array_equal(got[inside], offs % 5 + 1)
        assert got[inside][0] == 1  # restarts at the query's first frame
    outside = ~np.any([(t >= s.start) & (t < s.end) for s in segs], axis=0)
    assert outside.sum() > 0 and np.all(got[outside] == 0)


def test_stitch_mean_mode_and_no_segments():
    t = features.frame_times(100, HOP, SR)
    q = _numbered_query()
    ref = reference.stitch_reference(q, [Segment(0.3, 0.9)], t, mode="mean")
    inside = (t >= 0.3) & (t < 0.9)
    assert torch.allclose(ref[:, torch.from_numpy(inside)], torch.full((8, int(inside.sum())), 3.0))
    assert torch.all(ref[:, torch.from_numpy(~inside)] == 0)
    assert torch.all(reference.stitch_reference(q, [], t) == 0)
    with pytest.raises(ValueError):
        reference.stitch_reference(q, [], t, mode="loop")
    with pytest.raises(ValueError):
        reference.stitch_reference(torch.zeros(8, 0), [], t)


def test_time_activity_binary_and_soft():
    t = features.frame_times(100, HOP, SR)
    segs = [Segment(0.2, 0.6)]
    act = reference.time_activity(segs, t)
    inside = (t >= 0.2) & (t < 0.6)
    assert act.shape == (100,) and act.dtype == torch.float32
    np.testing.assert_array_equal(act.numpy(), inside.astype(np.float32))
    soft = np.linspace(0.0, 1.0, 100)
    act_soft = reference.time_activity(segs, t, soft)
    assert float(act_soft.max()) == pytest.approx(1.0)
    assert torch.all(act_soft[torch.from_numpy(~inside)] == 0)
    assert torch.all((act_soft >= 0) & (act_soft <= 1))
    vals = act_soft.numpy()[inside]
    assert np.all(np.diff(vals) > 0)  # follows the rising soft curve inside the segment
    with pytest.raises(ValueError):
        reference.time_activity(segs, t, np.ones(7))


def test_query_mel_trims_silent_edges_and_profile():
    tone = harmonic_tone(0.5, f0=1000.0)
    padded = np.concatenate([np.zeros(SR // 2, np.float32), tone, np.zeros(SR // 2, np.float32)])
    mag = features.stft(torch.from_numpy(padded), 512, HOP).abs()
    fb = features.mel_filterbank(257, 64, SR)
    qm = reference.query_mel(mag, fb)
    full = fb @ mag
    assert qm.shape[0] == 64
    # The tone is 0.5 s = ~31 frames of the 94; only about that many (+ window overlap) remain.
    assert 30 <= qm.shape[1] <= 36 < full.shape[1]
    prof = reference.frequency_profile(mag)
    assert prof.shape == (257,) and float(prof.max()) == pytest.approx(1.0)
    assert int(prof.argmax()) == 32  # 1 kHz at 31.25 Hz per bin
    assert float(prof[16]) < 0.05 and float(prof[64]) > 0.2  # no energy at 500 Hz, 2nd harmonic present
