"""Admission of an audio file into a job: every check that can be made from its size and header,
before a single sample is decoded.

The core's :func:`sourcesep.audio.probe` refuses missing, empty, unreadable, truncated (a WAV/AIFF
file shorter than its header says: an interrupted upload) and too long files. On top of it the
daemon refuses what would be expensive to run unattended: more channels than ``max_channels`` or
a higher rate than ``max_sample_rate`` (decoding cost grows with both; a 192 kHz, 8-channel hour
is 20 GiB of float samples).

Results are cached by (device, inode, size, mtime): a settled file is probed once, and a claim
(a rename) does not change the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from sourcesep import InputError

@dataclass(frozen=True)
class Limits:
    """What a job's audio may be (from the daemon config)."""

    max_bytes: int
    max_duration_s: float
    max_channels: int
    max_sample_rate: int


class AudioGate:
    """``check(path)``: the core's header probe plus the daemon's limits, cached per file version.

    ``probe`` is :func:`sourcesep.audio.probe` (raises :class:`sourcesep.InputError`).
    """

    def __init__(self, probe: Callable[..., Any], limits: Limits) -> None:
        self._probe = probe
        self.limits = limits
        self._cache: dict[tuple[int, int, int, int], Any] = {}

    @staticmethod
    def key(st: os.stat_result) -> tuple[int, int, int, int]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @staticmethod
    def key_of(entry: Any) -> tuple[int, int, int, int]:
        """The cache key of an :class:`daemon.inbox.Entry` (what a scan saw)."""
        return (entry.dev, entry.ino, entry.size, entry.mtime_ns)

    def check(self, path: Path) -> Any:
        """The file's ``AudioInfo``; :class:`InputError` naming ``path`` when it is refused."""
        key = self.key(os.lstat(path))
        hit = self._cache.get(key)
        if hit is None:
            try:
                hit = self._admit(path)
            except InputError as e:
                hit = e
            self._cache[key] = hit
        if isinstance(hit, InputError):
            raise InputError(path, hit.problem)
        return hit

    def _admit(self, path: Path) -> Any:
        lim = self.limits
        info = self._probe(path, max_duration_s=lim.max_duration_s, max_bytes=lim.max_bytes)
        if info.channels > lim.max_channels:
            raise InputError(path, f"has {info.channels} channels; the limit is max_channels = {lim.max_channels} "
                             "(mix it down, or raise max_channels in the daemon config)")
        if info.sample_rate > lim.max_sample_rate:
            raise InputError(path, f"is sampled at {info.sample_rate} Hz; the limit is max_sample_rate = "
                             f"{lim.max_sample_rate} Hz (resample it, or raise max_sample_rate in the daemon config)")
        return info

    def keep_only(self, keys: Iterable[tuple[int, int, int, int]]) -> None:
        """Forget every file version not in ``keys`` (those still in the inbox), so the cache
        stays as small as the inbox instead of growing with every job ever seen."""
        keep = set(keys)
        for k in [k for k in self._cache if k not in keep]:
            del self._cache[k]

    def __len__(self) -> int:
        return len(self._cache)
