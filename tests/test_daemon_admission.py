"""Header checks before a job is admitted: truncated uploads, channel and rate limits, the cache."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf

from daemon import inbox
from daemon.admission import AudioGate, Limits
from daemon.validate import MAX_SIDECAR_BYTES, validate
from daemon_helpers import drop_flat, pair_audio
from signals import SR, noise
from sourcesep import InputError, ParamError
from sourcesep.audio import header_truncation, probe

LIMITS = Limits(max_bytes=1 << 30, max_duration_s=3600, max_channels=2, max_sample_rate=96000)


def _wav(x, sr=SR, fmt="WAV", subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["WAV", "AIFF"])
def test_truncated_upload_is_refused_complete_file_admitted(tmp_path, fmt):
    # Regression (torture suite, "truncated WAV"): libsndfile reads the part of a cut-off file
    # that is there, so the daemon separated 60 % of a mixture as if it were complete.
    data = _wav(noise(2.0), fmt=fmt)
    whole, cut = tmp_path / "whole.wav", tmp_path / "cut.wav"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert header_truncation(whole) is None
    assert "is truncated" in header_truncation(cut)
    gate = AudioGate(probe, LIMITS)
    assert gate.check(whole).channels == 1
    with pytest.raises(InputError, match=r"cut\.wav: is truncated: its header announces \d+ bytes of audio data"):
        gate.check(cut)


def test_streamed_and_odd_files_are_left_to_the_decoder(tmp_path):
    data = bytearray(_wav(noise(1.0)))
    i = data.index(b"data")
    data[i + 4:i + 8] = b"\xff\xff\xff\xff"  # a streamed WAV: the writer did not know the length
    p = tmp_path / "stream.wav"
    p.write_bytes(bytes(data))
    assert header_truncation(p) is None
    flac = tmp_path / "x.flac"
    flac.write_bytes(_wav(noise(1.0), fmt="FLAC"))
    assert header_truncation(flac) is None
    (tmp_path / "tiny.wav").write_bytes(b"RIF")
    assert header_truncation(tmp_path / "tiny.wav") is None


def test_channel_and_rate_limits(tmp_path):
    # Regression (torture suite, "8 channels", "192 kHz"): both were decoded whole and processed.
    eight = tmp_path / "eight.wav"
    eight.write_bytes(_wav(np.tile(noise(1.0)[:, None], (1, 8))))
    fast = tmp_path / "fast.wav"
    fast.write_bytes(_wav(np.zeros(192000, np.float32) + 0.1, sr=192000))
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(_wav(np.tile(noise(1.0)[:, None], (1, 2)), sr=48000))
    gate = AudioGate(probe, LIMITS)
    with pytest.raises(InputError, match="has 8 channels; the limit is max_channels = 2"):
        gate.check(eight)
    with pytest.raises(InputError, match="is sampled at 192000 Hz; the limit is max_sample_rate = 96000 Hz"):
        gate.check(fast)
    assert gate.check(stereo).sample_rate == 48000
    relaxed = AudioGate(probe, Limits(1 << 30, 3600, 8, 192000))
    assert relaxed.check(eight).channels == 8 and relaxed.check(fast).sample_rate == 192000


def test_cache_follows_file_versions_and_is_pruned(tmp_path):
    calls = []

    def counting_probe(path, **kw):
        calls.append(path)
        return probe(path, **kw)

    p = tmp_path / "a.wav"
    p.write_bytes(_wav(noise(1.0)))
    gate = AudioGate(counting_probe, LIMITS)
    gate.check(p)
    gate.check(p)
    assert len(calls) == 1  # cached
    p.write_bytes(_wav(noise(1.5)))  # a new version of the file
    gate.check(p)
    assert len(calls) == 2 and len(gate) == 2
    # Regression (load test): the cache kept every file ever seen; it now keeps the inbox's only.
    gate.keep_only([AudioGate.key(os.lstat(p))])
    assert len(gate) == 1
    gate.keep_only([])
    assert len(gate) == 0


def test_oversized_sidecar_is_refused_before_it_is_read(tmp_path):
    # Regression (torture suite, "huge sidecar"): the core read the whole file into the daemon's
    # memory before refusing it; now its size is checked first.
    box, work = tmp_path / "inbox", tmp_path / "work"
    box.mkdir()
    work.mkdir()
    drop_flat(box, "big")
    with open(box / "big.yaml", "wb") as f:
        f.truncate(MAX_SIDECAR_BYTES + 1)  # sparse: reading it would fail differently (NUL bytes)
    c = inbox.claim(inbox.scan(box)[("flat", "big")], box, work, "t:1")
    with pytest.raises(ParamError, match=f"sidecar is {MAX_SIDECAR_BYTES + 1} bytes; the limit is {MAX_SIDECAR_BYTES} bytes"):
        validate(c, params={}, config_name="d.yaml", probe=probe)


def test_query_of_a_valid_pair_passes(tmp_path):
    mix, query, _ = pair_audio(2.0)
    for name, data in (("m.wav", mix), ("q.wav", query)):
        (tmp_path / name).write_bytes(data)
        assert header_truncation(tmp_path / name) is None
