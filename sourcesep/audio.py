"""Reading, checking, resampling and writing audio.

Everything the pipeline sees is mono float32 at 16 kHz at its true level (never normalised).
Bad input raises :class:`~sourcesep.errors.InputError` with a message that names the file and the
problem in plain words.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr

from .errors import InputError

SAMPLE_RATE = 16000

_MAX_CHUNKS = 256  # chunk headers walked before giving up (a file with more is not a sane WAV)
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streamed WAVs: the writer did not know the length
_READ_BLOCK = 1 << 18  # frames per decode block: bounds peak memory for long multichannel files
_HASH_CHUNK = 1 << 20


@dataclass
class AudioInfo:
    """What an input was before conversion: its own rate, channels and length.

    path: file path (None for arrays); sha256: hex digest of the file bytes (of the array bytes for
    arrays); duration_s: frames / sample_rate (s); frames: samples per channel; format / subtype:
    libsndfile names such as "WAV" / "PCM_16" (None for arrays).
    """

    path: str | None
    sha256: str | None
    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    format: str | None
    subtype: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _libsndfile_detail(exc: Exception) -> str:
    """libsndfile's reason for an error, lower-cased, without the trailing full stop."""
    detail = str(getattr(exc, "error_string", "") or exc).strip().rstrip(".")
    if detail.lower().startswith("error :"):  # libFLAC's prefix
        detail = detail[len("error :"):].strip()
    if "not recognised" in detail.lower():
        return "unknown format"
    return detail[:1].lower() + detail[1:]


def _libsndfile_problem(exc: Exception) -> str:
    """Plain words for a libsndfile open error."""
    detail = _libsndfile_detail(exc)
    return f"not a readable audio file ({detail})" if detail else "not a readable audio file"


def header_truncation(path: str | os.PathLike) -> str | None:
    """Why a RIFF/WAVE or AIFF file is shorter than its header says, or None.

    libsndfile silently decodes the part that is there, so without this check a cut-off mixture
    (an interrupted copy or upload) would be separated as if it were complete. Walks the chunk
    headers (``fmt ``, ``LIST``…) to the audio chunk (``data`` / ``SSND``) and compares its declared
    size with the bytes present. Other formats, RF64 and streamed WAVs (data size 0 or 0xFFFFFFFF)
    return None: the decoder is the judge there. Raises OSError when the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        size = os.fstat(f.fileno()).st_size
        if len(head) < 12:
            return None
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            fmt, audio_id = "<I", b"data"
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            fmt, audio_id = ">I", b"SSND"
        else:
            return None
        pos = 12
        for _ in range(_MAX_CHUNKS):
            f.seek(pos)
            hdr = f.read(8)
            if len(hdr) < 8:
                return None  # no audio chunk: the decoder reports it
            (declared,) = struct.unpack(fmt, hdr[4:])
            if hdr[:4] == audio_id:
                if declared in _UNKNOWN_SIZES:
                    return None
                present = size - pos - 8
                if present < declared:
                    return (f"is truncated: its header announces {declared} bytes of audio data, the file "
                            f"holds {max(present, 0)} (an interrupted copy or upload? use the complete file)")
                return None
            pos += 8 + declared + (declared & 1)
            if pos > size:
                return f"is truncated: its '{hdr[:4].decode('latin-1')}' chunk runs past the end of the file"
    return None


def probe(path: str | os.PathLike, max_duration_s: float | None = None, max_bytes: int | None = None) -> AudioInfo:
    """Check an audio file from its header, without decoding samples, and hash its bytes.

    Parameters
    ----------
    path : audio file in any format libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...).
    max_duration_s : refuse files longer than this many seconds (header duration).
    max_bytes : refuse files larger than this many bytes (checked before anything is read).

    Returns
    -------
    AudioInfo of the file as stored (its own sample rate and channel count).

    Raises
    ------
    InputError naming the file: missing, not a regular file, empty, too large, unreadable/not
    audio, no audio frames, longer than ``max_duration_s``, or shorter than its header says.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(p, "file not found")
    if not os.path.isfile(p):
        raise InputError(p, "not a regular file")
    size = os.path.getsize(p)
    if size == 0:
        raise InputError(p, "empty file (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise InputError(p, f"is {size} bytes; the limit is {max_bytes} bytes")
    try:
        info = sf.info(p)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise InputError(p, _libsndfile_problem(exc)) from None
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise InputError(p, "contains no audio samples (0 frames)")
    duration = info.frames / info.samplerate
    if max_duration_s is not None and duration > max_duration_s:
        raise InputError(p, f"is {duration:.1f} s long; the limit is {max_duration_s:g} s")
    try:
        why = header_truncation(p)
    except OSError as e:
        raise InputError(p, f"cannot be read ({e.strerror or e})") from None
    if why:
        raise InputError(p, why)
    return AudioInfo(
        path=p,
        sha256=_sha256_file(p),
        duration_s=duration,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=info.format,
        subtype=info.subtype,
    )


def _decode_mono(path: str) -> np.ndarray:
    """Decode a file block by block into a float32 mono channel mean, (frames,).

    Reads until the decoder returns nothing, so a header that overstates the length (truncated
    file) yields the samples that are really there instead of an error or a hang.
    """
    blocks = []
    try:
        with sf.SoundFile(path) as f:
            while True:
                block = f.read(_READ_BLOCK, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                if not np.isfinite(block).all():
                    raise InputError(path, "contains NaN or infinite sample values")
                blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy())
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        detail = _libsndfile_detail(exc) or "decoder error"
        raise InputError(path, f"audio data is corrupt or truncated ({detail})") from None
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def _array_to_float(x: np.ndarray, name: str | None) -> np.ndarray:
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if np.issubdtype(x.dtype, np.signedinteger):
        # integer PCM: full scale maps to 1.0, as soundfile does for files
        return (x.astype(np.float64) / (np.iinfo(x.dtype).max + 1.0)).astype(np.float32)
    raise InputError(name, f"audio array has unsupported dtype {x.dtype}; use float or signed integer PCM")


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample (n,) or (n, ch) audio with soxr 'HQ'; returns float32, unchanged when rates match."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load(
    source: str | os.PathLike | np.ndarray,
    *,
    sr_in: int | None = None,
    max_duration_s: float | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, AudioInfo]:
    """Load audio as mono float32 at 16 kHz, at its true level.

    Parameters
    ----------
    source : a file path (any libsndfile format: WAV, FLAC, OGG, MP3, ...; any sample rate; any
        channel count) or an array (n,) or (n, ch) of float or signed-integer PCM samples.
    sr_in : sample rate of an array source (default 16000); ignored for files (the header's rate is used).
    max_duration_s : refuse inputs longer than this (s); files are refused from their header,
        before any sample is decoded.
    name : what to call an array source in error messages (e.g. "mix"); files use their path.

    Returns
    -------
    (x, info): x (n16,) float32 at 16 kHz, the mean of the channels, resampled with soxr 'HQ';
    info describes the source as given (its own rate and channel count; for files, ``frames`` and
    ``duration_s`` count the samples actually decoded). A WAV/AIFF file shorter than its header
    says is refused (:func:`header_truncation`).

    Raises
    ------
    InputError: unreadable/missing/empty/truncated file, empty array, NaN/Inf samples, too long.
    """
    if isinstance(source, np.ndarray):
        sr = SAMPLE_RATE if sr_in is None else int(sr_in)
        if sr <= 0:
            raise InputError(name, f"sample rate must be positive, got {sr}")
        if source.ndim not in (1, 2):
            raise InputError(name, f"audio array must be (samples,) or (samples, channels), got shape {source.shape}")
        if source.ndim == 2 and source.shape[1] > 32:
            raise InputError(name, f"audio array of shape {source.shape} looks like (channels, samples); "
                             "pass (samples, channels)")
        if source.size == 0:
            raise InputError(name, "audio array is empty")
        x = _array_to_float(source, name)
        if not np.isfinite(x).all():
            raise InputError(name, "audio array contains NaN or infinite sample values")
        channels = 1 if x.ndim == 1 else x.shape[1]
        frames = x.shape[0]
        duration = frames / sr
        if max_duration_s is not None and duration > max_duration_s:
            raise InputError(name, f"audio is {duration:.1f} s long; the limit is {max_duration_s:g} s")
        info = AudioInfo(
            path=None,
            sha256=hashlib.sha256(np.ascontiguousarray(source).tobytes()).hexdigest(),
            duration_s=duration, sample_rate=sr, channels=channels, frames=frames, format=None, subtype=None,
        )
        mono = x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)
        return np.ascontiguousarray(resample(mono, sr)), info

    info = probe(source, max_duration_s=max_duration_s)
    mono = _decode_mono(info.path)
    if mono.size == 0:
        raise InputError(info.path, "contains no audio samples (0 frames decoded)")
    if mono.size != info.frames:
        info = replace(info, frames=int(mono.size), duration_s=mono.size / info.sample_rate)
    return np.ascontiguousarray(resample(mono, info.sample_rate)), info


def peak_safe(x: np.ndarray, limit: float = 0.999) -> np.ndarray:
    """Scale x down so that max |x| <= limit; returns x itself when it is already within limit.

    x: any shape, float. Used before fixed-point writes so loud output is attenuated, never clipped.
    """
    x = np.asarray(x)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= limit:
        return x
    return (x * (limit / peak)).astype(x.dtype, copy=False)


def trim_most_energetic(x: np.ndarray, sr: int, max_sec: float) -> tuple[np.ndarray, float]:
    """The max_sec-long excerpt of x with the most energy.

    Parameters
    ----------
    x : (n,) mono audio.
    sr : sample rate (Hz).
    max_sec : excerpt length (s).

    Returns
    -------
    (excerpt (min(n, round(max_sec * sr)),), start time in s). Input no longer than max_sec is
    returned as is with start 0.0. Ties go to the earliest window.
    """
    x = np.asarray(x)
    n_win = max(1, int(round(max_sec * sr)))
    if x.shape[0] <= n_win:
        return x, 0.0
    c = np.concatenate(([0.0], np.cumsum(np.square(x, dtype=np.float64))))
    energy = c[n_win:] - c[:-n_win]  # energy of every window start, (n - n_win + 1,)
    start = int(np.argmax(energy))
    return x[start:start + n_win], start / sr


_WRITE_FORMATS: dict[str, tuple[str, str]] = {
    "PCM_16": ("WAV", "PCM_16"),
    "FLOAT": ("WAV", "FLOAT"),
    "FLAC": ("FLAC", "PCM_16"),
}


def write(path: str | os.PathLike, x: np.ndarray, sr: int = SAMPLE_RATE,
          fmt: Literal["PCM_16", "FLOAT", "FLAC"] = "PCM_16") -> Path:
    """Write audio atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    path : destination; its suffix is the caller's choice (".wav" for PCM_16/FLOAT, ".flac" for FLAC).
    x : (n,) or (n, ch) float audio, finite.
    sr : sample rate (Hz).
    fmt : "PCM_16" (WAV 16-bit, default), "FLOAT" (WAV 32-bit float, true level, may exceed 1.0)
        or "FLAC" (16-bit). The 16-bit formats pass through :func:`peak_safe` so they never clip.

    Returns
    -------
    The path written.
    """
    if fmt not in _WRITE_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(_WRITE_FORMATS)}, not {fmt!r}")
    container, subtype = _WRITE_FORMATS[fmt]
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("refusing to write audio with NaN or infinite samples")
    if subtype == "PCM_16":
        x = peak_safe(x)
    path = Path(path)
    # A unique temporary name created with mode 0666 so the process umask applies (mkstemp would
    # force 0600 on every output file).
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.part")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        sf.write(tmp, x, sr, subtype=subtype, format=container)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def rms_db(x: np.ndarray) -> float:
    """RMS level of x in dBFS (full scale 1.0); -inf for silence or empty input."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return float("-inf")
    ms = float(np.mean(np.square(x)))
    return 10.0 * np.log10(ms) if ms > 0 else float("-inf")


def is_silent(x: np.ndarray, floor_db: float = -60.0) -> bool:
    """True when the RMS level of x (any shape) is below floor_db dBFS (empty input is silent)."""
    return rms_db(x) < floor_db
