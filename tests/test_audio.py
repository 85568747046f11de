"""sourcesep.audio on real files written to tmp_path: formats, rates, channels and bad input."""

from __future__ import annotations

import hashlib
import os
import struct
import time

import numpy as np
import pytest
import soundfile as sf

from sourcesep.audio import (
    SAMPLE_RATE,
    AudioInfo,
    header_truncation,
    is_silent,
    load,
    peak_safe,
    probe,
    trim_most_energetic,
    write,
)
from sourcesep.errors import InputError


def tone(dur_s: float, sr: int, channels: int, f0: float = 440.0, amp: float = 0.25) -> np.ndarray:
    """(n, channels) sine at f0; every channel has the same phase and amplitude ``amp``."""
    t = np.arange(int(round(dur_s * sr))) / sr
    x = amp * np.sin(2 * np.pi * f0 * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def dominant_hz(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# (container, subtype, extension, sample rate, channels, lossless)
FORMATS = [
    ("WAV", "PCM_16", "wav", 8000, 1, True),
    ("WAV", "PCM_24", "wav", 44100, 2, True),
    ("WAV", "FLOAT", "wav", 48000, 3, True),
    ("WAV", "PCM_16", "wav", 192000, 8, True),
    ("FLAC", "PCM_16", "flac", 48000, 6, True),
    ("FLAC", "PCM_24", "flac", 22050, 1, True),
    ("OGG", "VORBIS", "ogg", 44100, 2, False),
    ("OGG", "OPUS", "opus", 48000, 1, False),
    ("AIFF", "PCM_16", "aiff", 32000, 4, True),
    ("MP3", "MPEG_LAYER_III", "mp3", 44100, 2, False),
]


@pytest.mark.parametrize("container,subtype,ext,sr,channels,lossless", FORMATS,
                         ids=[f"{f[0]}-{f[1]}-{f[3]}Hz-{f[4]}ch" for f in FORMATS])
def test_load_formats_rates_channels(tmp_path, container, subtype, ext, sr, channels, lossless):
    if container not in sf.available_formats() or subtype not in sf.available_subtypes(container):
        pytest.skip(f"this libsndfile cannot write {container}/{subtype}")
    path = tmp_path / f"in.{ext}"
    src = tone(0.5, sr, channels)
    sf.write(path, src, sr, format=container, subtype=subtype)

    x, info = load(path)

    assert x.dtype == np.float32 and x.ndim == 1
    assert isinstance(info, AudioInfo)
    assert info.sample_rate == sr and info.channels == channels
    assert info.format == container and info.subtype == subtype
    assert info.path == str(path)
    # lossy codecs add priming/padding; lossless keeps the length exactly (0.5 s at 16 kHz)
    if lossless:
        assert len(x) == 8000
        assert info.frames == len(src)
        assert info.duration_s == pytest.approx(0.5)
    else:
        assert abs(len(x) - 8000) < 0.1 * SAMPLE_RATE
    mid = x[len(x) // 4: 3 * len(x) // 4]
    assert dominant_hz(mid) == pytest.approx(440.0, abs=5.0)
    # true level, not normalised: the channel mean of equal channels is the 0.25-amplitude tone
    assert rms(mid) == pytest.approx(0.25 / np.sqrt(2), rel=0.01 if lossless else 0.12)


def test_mp3_is_readable_when_libsndfile_has_it():
    # documents what this build supports; load() relies on libsndfile for MP3
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile built without MP3")
    assert "MPEG_LAYER_III" in sf.available_subtypes("MP3")


def test_multichannel_is_channel_mean(tmp_path):
    sr = 16000
    left = tone(0.25, sr, 1, f0=500.0, amp=0.4)[:, 0]
    right = np.zeros_like(left)
    path = tmp_path / "lr.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    x, info = load(path)
    assert info.channels == 2
    np.testing.assert_allclose(x, left / 2, atol=1e-7)


def test_probe_reads_header_and_hashes_bytes(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, tone(1.0, 44100, 2), 44100)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, 44100)
    assert info.duration_s == pytest.approx(1.0)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    d = info.to_dict()
    assert d["format"] == "FLAC" and d["sha256"] == info.sha256 and set(d) == {
        "path", "sha256", "duration_s", "sample_rate", "channels", "frames", "format", "subtype"}


def test_load_array_inputs():
    mono = tone(0.5, 16000, 1)[:, 0]
    x, info = load(mono)
    np.testing.assert_array_equal(x, mono)
    assert info.path is None and info.sample_rate == 16000 and info.channels == 1 and info.sha256

    stereo44 = tone(0.5, 44100, 2, f0=1000.0)
    x, info = load(stereo44, sr_in=44100)
    assert len(x) == 8000 and info.channels == 2 and info.sample_rate == 44100
    assert dominant_hz(x[2000:6000]) == pytest.approx(1000.0, abs=5.0)

    pcm = (mono * 32767).astype(np.int16)
    x, _ = load(pcm)
    np.testing.assert_allclose(x, mono, atol=1e-4)

    with pytest.raises(InputError, match="looks like \\(channels, samples\\)"):
        load(np.zeros((2, 16000), np.float32))
    with pytest.raises(InputError, match="empty"):
        load(np.zeros(0, np.float32))
    bad = mono.copy()
    bad[100] = np.nan
    with pytest.raises(InputError, match="NaN"):
        load(bad)
    with pytest.raises(InputError, match="limit is 0.25 s"):
        load(mono, max_duration_s=0.25)
    with pytest.raises(InputError) as err:
        load(bad, name="mix")
    assert str(err.value) == "mix: audio array contains NaN or infinite sample values"
    with pytest.raises(InputError, match="unsupported dtype"):
        load(np.zeros(10, np.uint8))


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(InputError) as err:
        load(path)
    assert str(err.value) == f"{path}: file not found"
    assert err.value.path == str(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        probe(tmp_path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(InputError) as err:
        load(path)
    assert str(err.value) == f"{path}: empty file (0 bytes)"


@pytest.mark.parametrize("content", [os.urandom(4096), b"hello, this is not audio\n" * 40],
                         ids=["random-bytes", "text"])
def test_not_audio_named_wav(tmp_path, content):
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load(path)
    assert str(err.value) == f"{path}: not a readable audio file (unknown format)"


def test_header_only_wav_has_no_samples(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(InputError, match="nothing.wav: contains no audio samples"):
        load(path)


def test_truncated_wav_is_refused_with_what_is_missing(tmp_path):
    # libsndfile would decode the 6000 frames that are there; a cut-off mixture separated as if it
    # were whole is worse than a refusal.
    full = tmp_path / "full.wav"
    sf.write(full, tone(1.0, 16000, 2), 16000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + 2 * 2 * 6000 + 3])  # header + 6000 stereo frames + a partial frame
    assert struct.unpack("<I", data[40:44])[0] == 2 * 2 * 16000  # the header still claims 1 s

    assert header_truncation(full) is None
    t0 = time.monotonic()
    with pytest.raises(InputError) as err:
        load(cut)
    assert time.monotonic() - t0 < 2.0
    assert str(err.value).startswith(f"{cut}: is truncated: its header announces 64000 bytes of audio data, "
                                     "the file holds 24003")
    x, info = load(full)
    assert info.frames == 16000 and len(x) == 16000


@pytest.mark.parametrize("keep", [0.5, 1.0], ids=["truncated", "corrupted"])
def test_broken_flac(tmp_path, rng, keep):
    good = tmp_path / "good.flac"
    sf.write(good, 0.3 * rng.standard_normal((48000, 2)), 48000)
    data = bytearray(good.read_bytes())
    n = len(data)
    data[n // 3: n // 3 + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path = tmp_path / "bad.flac"
    path.write_bytes(bytes(data[: int(n * keep)]))
    t0 = time.monotonic()
    with pytest.raises(InputError) as err:
        load(path)
    assert time.monotonic() - t0 < 2.0
    assert str(err.value).startswith(f"{path}: audio data is corrupt or truncated (")


def test_header_claiming_huge_data_chunk(tmp_path):
    # a hand-made WAV header that declares ~4 GB of data followed by 1000 bytes
    path = tmp_path / "liar.wav"
    nbytes = 0xFFFFFF00
    header = (b"RIFF" + struct.pack("<I", 36 + nbytes) + b"WAVE" + b"fmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", nbytes))
    path.write_bytes(header + np.full(500, 1000, np.int16).tobytes())
    t0 = time.monotonic()
    with pytest.raises(InputError, match=rf"liar\.wav: is truncated: its header announces {nbytes} bytes"):
        load(path)
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_samples(tmp_path, bad):
    x = tone(0.2, 16000, 1)
    x[1234, 0] = bad
    path = tmp_path / "nonfinite.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(InputError) as err:
        load(path)
    assert str(err.value) == f"{path}: contains NaN or infinite sample values"


def test_long_file_refused_from_header_quickly(tmp_path):
    # 2 hours at 100 Hz, 8-bit: a 720 kB file whose header says 7200 s
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(7200 * 100), 100, subtype="PCM_U8")
    t0 = time.monotonic()
    with pytest.raises(InputError) as err:
        probe(path, max_duration_s=600)
    with pytest.raises(InputError):
        load(path, max_duration_s=600)
    assert time.monotonic() - t0 < 1.0
    assert str(err.value) == f"{path}: is 7200.0 s long; the limit is 600 s"


def test_duration_is_checked_before_decoding(tmp_path):
    # the NaN at the very end would be found by decoding; the duration error proves nothing was decoded
    path = tmp_path / "long_nan.wav"
    x = np.zeros(700 * 100, np.float32)
    x[-1] = np.nan
    sf.write(path, x, 100, subtype="FLOAT")
    with pytest.raises(InputError, match="is 700.0 s long; the limit is 600 s"):
        load(path, max_duration_s=600)
    with pytest.raises(InputError, match="NaN"):
        load(path)


def test_max_bytes(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    size = path.stat().st_size
    with pytest.raises(InputError, match=f"is {size} bytes; the limit is 1000 bytes"):
        probe(path, max_bytes=1000)
    assert probe(path, max_bytes=size).frames == 16000


# ---------------------------------------------------------------- helpers


def test_peak_safe():
    x = np.array([0.1, -0.5, 0.9], np.float32)
    assert peak_safe(x) is x
    y = np.array([0.2, -2.0, 1.0], np.float32)
    z = peak_safe(y)
    assert z.dtype == np.float32
    assert np.max(np.abs(z)) == pytest.approx(0.999)
    np.testing.assert_allclose(z / z[0], y / y[0], rtol=1e-6)  # scaled, not clipped
    assert peak_safe(np.zeros(0, np.float32)).size == 0


def test_trim_most_energetic(rng):
    sr = 1000
    x = 0.01 * rng.standard_normal(10 * sr)
    x[6200:6700] += 1.0  # a loud 0.5 s burst at 6.2 s
    seg, start = trim_most_energetic(x, sr, 1.0)
    assert len(seg) == sr
    assert 5.7 <= start <= 6.2
    assert np.all(seg[int((6.2 - start) * sr): int((6.7 - start) * sr)] > 0.9)
    np.testing.assert_array_equal(seg, x[int(round(start * sr)):][:sr])

    short = x[:500]
    seg, start = trim_most_energetic(short, sr, 1.0)
    assert seg is short and start == 0.0


def test_write_formats_roundtrip(tmp_path):
    x = tone(0.5, 16000, 1)[:, 0] * 8.0  # peak 2.0: over full scale
    p16 = write(tmp_path / "a.wav", x)
    y, sr = sf.read(p16, dtype="float32")
    assert sr == 16000 and sf.info(p16).subtype == "PCM_16"
    assert np.max(np.abs(y)) <= 0.999 + 1e-4 and np.max(np.abs(y)) > 0.99
    np.testing.assert_allclose(y, x * (0.999 / np.max(np.abs(x))), atol=1e-4)  # scaled, not clipped

    pf = write(tmp_path / "b.wav", x, fmt="FLOAT")
    y, _ = sf.read(pf, dtype="float32")
    assert sf.info(pf).subtype == "FLOAT"
    np.testing.assert_array_equal(y, x)  # true level kept

    pfl = write(tmp_path / "c.flac", x / 8.0, sr=22050, fmt="FLAC")
    y, sr = sf.read(pfl, dtype="float32")
    assert sr == 22050 and sf.info(pfl).format == "FLAC"
    np.testing.assert_allclose(y, x / 8.0, atol=1e-4)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "c.flac"]  # no temp files left

    with pytest.raises(ValueError):
        write(tmp_path / "d.wav", np.array([0.0, np.nan]))
    with pytest.raises(ValueError):
        write(tmp_path / "d.wav", x, fmt="MP3")
    assert not (tmp_path / "d.wav").exists()


def test_write_then_load(tmp_path):
    x = tone(0.3, 16000, 1)[:, 0]
    y, info = load(write(tmp_path / "x.wav", x))
    np.testing.assert_allclose(y, x, atol=1e-4)
    assert info.subtype == "PCM_16"


def test_is_silent(rng):
    assert is_silent(np.zeros(1000))
    assert is_silent(np.zeros(0))
    assert is_silent(10 ** (-70 / 20) * rng.standard_normal(16000))  # about -70 dBFS
    assert not is_silent(10 ** (-50 / 20) * rng.standard_normal(16000))
    assert is_silent(10 ** (-50 / 20) * rng.standard_normal(16000), floor_db=-40)


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = write(tmp_path / "x.wav", np.zeros(1600, np.float32))
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640
    assert not list(tmp_path.glob(".*.part"))
