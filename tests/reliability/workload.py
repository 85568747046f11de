"""Job inputs for the torture suite: short synthetic pairs, or the dev benchmark cases copied
under new names, dropped into an inbox the way users drop them (flat files or job folders)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daemon_helpers import REPO, wav_bytes
from signals import SR, harmonic_tone, noise

DEV_CASES = REPO.parent / "shared" / "bench" / "dev"


@dataclass(frozen=True)
class JobAudio:
    """WAV bytes of one job's inputs."""

    label: str
    mix: bytes
    query: bytes
    gt: bytes | None = None


def synthetic(n: int, seconds: float = 2.0) -> list[JobAudio]:
    """``n`` different short pairs: a noise bed with a harmonic tone (pitch varies by pair) for
    part of the mix, and a separate take of the tone as the query."""
    out = []
    for i in range(n):
        f0 = 300.0 * 2 ** (i / 7)
        bed = noise(seconds, seed=i)
        tone = harmonic_tone(seconds / 2, f0=f0, seed=i)
        gt = np.zeros_like(bed)
        start = int(0.25 * seconds * SR)
        gt[start:start + len(tone)] = tone
        query = harmonic_tone(1.0, f0=f0, seed=i + 100)
        out.append(JobAudio(f"synthetic-{i}", wav_bytes(bed + gt), wav_bytes(query), wav_bytes(gt)))
    return out


def dev_cases(limit: int | None = None) -> list[JobAudio]:
    """The dev benchmark cases (``../shared/bench/dev/NNN/{mix,query,gt}.wav``); [] when absent."""
    if not DEV_CASES.is_dir():
        return []
    out = []
    for d in sorted(p for p in DEV_CASES.iterdir() if p.is_dir() and (p / "mix.wav").is_file() and (p / "query.wav").is_file())[:limit]:
        gt = d / "gt.wav"
        out.append(JobAudio(f"dev-{d.name}", (d / "mix.wav").read_bytes(), (d / "query.wav").read_bytes(),
                            gt.read_bytes() if gt.is_file() else None))
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def drop(inbox: Path, name: str, audio: JobAudio, *, folder: bool = False, sidecar: str | None = None,
         with_gt: bool = False) -> dict[str, str]:
    """Drop one job; returns ``{file as dropped (relative to the inbox): sha256}``.

    Flat jobs are written in place (sidecar first, mix last, as a copy would arrive); job folders
    are built next to the inbox and renamed in, as the README recommends.
    """
    files: dict[str, bytes] = {}
    if folder:
        if sidecar is not None:
            files["params.yaml"] = sidecar.encode()
        if with_gt and audio.gt is not None:
            files["gt.wav"] = audio.gt
        files["query.wav"] = audio.query
        files["mix.wav"] = audio.mix
        staging = inbox.parent / f".staging-{os.getpid()}-{sha256_bytes(name.encode())[:12]}"
        staging.mkdir()
        for fname, data in files.items():
            (staging / fname).write_bytes(data)
        os.rename(staging, inbox / name)
        return {f"{name}/{k}": sha256_bytes(v) for k, v in files.items()}
    if sidecar is not None:
        files[f"{name}.yaml"] = sidecar.encode()
    if with_gt and audio.gt is not None:
        files[f"{name}.gt.wav"] = audio.gt
    files[f"{name}.query.wav"] = audio.query
    files[f"{name}.mix.wav"] = audio.mix
    for fname, data in files.items():
        (inbox / fname).write_bytes(data)
    return {k: sha256_bytes(v) for k, v in files.items()}
