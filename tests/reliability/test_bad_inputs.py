"""Bad inputs, each its own case: every one ends in failed/ with an error.json whose message
names the file and the problem, the inputs byte-identical to what was dropped, and the daemon
still processing the next good job. One daemon takes them all at once (as an inbox would get
them overnight); each case then checks its own outcome."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from daemon.outbox import folder_name
from daemon_helpers import Daemon, sha256, wait_for, write_config
from signals import SR, harmonic_tone, noise
from workload import synthetic

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ORPHAN_TIMEOUT_S = 5.0
SLOW_WRITE_S = 20.0
WEIRD = "..  dög $(touch PWNED); rm -rf * & 'q' \"x\" `id` |> \\n"


def _wav(x: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _long_silent_wav(path: Path, seconds: float, sr: int = SR) -> None:
    """A valid 16-bit mono WAV of ``seconds`` of silence, written sparse (no disk used)."""
    data = int(seconds * sr) * 2
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    header += b"data" + struct.pack("<I", data)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data)


@dataclass
class Case:
    """A bad job: files to drop (bytes, or a callable that creates the file) and what the
    error message must say."""

    name: str
    files: dict[str, object]
    names_file: str  # the file (as dropped) the message must name
    problem: tuple[str, ...]  # words that describe the problem (any one of them, lower case)
    expect: str = "failed"
    sha: dict[str, str] = field(default_factory=dict)


def _cases(tmp: Path) -> list[Case]:
    good = synthetic(1, seconds=3.0)[0]
    mix, query = good.mix, good.query
    nan = noise(1.0).copy()
    nan[1000] = np.nan
    inf = noise(1.0).copy()
    inf[2000] = np.inf
    outside = tmp / "outside" / "secret.wav"
    outside.parent.mkdir(exist_ok=True)
    outside.write_bytes(mix)

    def long_mix(p: Path) -> None:
        _long_silent_wav(p, 7200.0)

    def link_out(p: Path) -> None:
        os.symlink(outside, p)

    cases = [
        Case("truncated", {"truncated.query.wav": query, "truncated.mix.wav": mix[: len(mix) * 6 // 10]},
             "truncated.mix.wav", ("truncated",)),
        Case("zero-byte", {"zero-byte.query.wav": query, "zero-byte.mix.wav": b""}, "zero-byte.mix.wav", ("empty",)),
        Case("random-bytes", {"random-bytes.query.wav": query, "random-bytes.mix.wav": np.random.default_rng(3).bytes(20000)},
             "random-bytes.mix.wav", ("not a readable audio file",)),
        Case("text", {"text.query.wav": query, "text.mix.wav": b"Hello, this is not audio at all.\n" * 40},
             "text.mix.wav", ("not a readable audio file",)),
        Case("nan", {"nan.query.wav": query, "nan.mix.wav": _wav(nan, subtype="FLOAT")}, "nan.mix.wav", ("nan",)),
        Case("inf", {"inf.query.wav": _wav(inf, subtype="FLOAT"), "inf.mix.wav": mix}, "inf.query.wav", ("infinite",)),
        Case("all-zero", {"all-zero.query.wav": query, "all-zero.mix.wav": _wav(np.zeros(3 * SR, np.float32))},
             "all-zero.mix.wav", ("silent",)),
        Case("short-query", {"short-query.query.wav": _wav(harmonic_tone(0.05)), "short-query.mix.wav": mix},
             "short-query.query.wav", ("0.050 s long",)),
        Case("two-hours", {"two-hours.query.wav": query, "two-hours.mix.wav": long_mix},
             "two-hours.mix.wav", ("7200.0 s long",)),
        Case("eight-channels", {"eight-channels.query.wav": query,
                                "eight-channels.mix.wav": _wav(np.tile(noise(2.0)[:, None], (1, 8)))},
             "eight-channels.mix.wav", ("8 channels",)),
        Case("rate-192k", {"rate-192k.query.wav": query,
                           "rate-192k.mix.wav": _wav((0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * 192000) / 192000)).astype(np.float32), sr=192000)},
             "rate-192k.mix.wav", ("192000 hz",)),
        Case("orphan", {"orphan.mix.wav": mix}, "orphan.mix.wav", ("no partner",)),
        Case("malformed-yaml", {"malformed-yaml.yaml": b"opt_steps: [1, 2\nlr: {\n", "malformed-yaml.query.wav": query,
                                "malformed-yaml.mix.wav": mix}, "malformed-yaml.yaml", ("invalid yaml",)),
        Case("yaml-bomb", {"yaml-bomb.yaml": b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                              b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
                           "yaml-bomb.query.wav": query, "yaml-bomb.mix.wav": mix}, "yaml-bomb.yaml", ("alias",)),
        Case("unknown-key", {"unknown-key.yaml": b"opt_steps: 3\nno_such_param: 1\n", "unknown-key.query.wav": query,
                             "unknown-key.mix.wav": mix}, "unknown-key.yaml", ("no_such_param",)),
        Case("wrong-type", {"wrong-type.yaml": b"opt_steps: many\n", "wrong-type.query.wav": query, "wrong-type.mix.wav": mix},
             "wrong-type.yaml", ("opt_steps",)),
        Case("out-of-range", {"out-of-range.yaml": b"opt_steps: 5000\n", "out-of-range.query.wav": query,
                              "out-of-range.mix.wav": mix}, "out-of-range.yaml", ("opt_steps",)),
        Case("huge-sidecar", {"huge-sidecar.yaml": b"# padding\n" * 200_000, "huge-sidecar.query.wav": query,
                              "huge-sidecar.mix.wav": mix}, "huge-sidecar.yaml", ("the limit is 1000000 bytes",)),
        Case(WEIRD, {f"{WEIRD}.query.wav": query, f"{WEIRD}.mix.wav": b"RIFF....WAVEfmt garbage" * 10},
             f"{WEIRD}.mix.wav", ("not a readable audio file",)),
        Case("symlink-out", {"symlink-out.query.wav": query, "symlink-out.mix.wav": link_out},
             "symlink-out.mix.wav", ("symbolic link",)),
        Case("slow-writer", {}, "slow-writer.mix.wav", (), expect="done"),
    ]
    return cases


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, tiny_ast_dir):
    """Drop every case at once into one running daemon, then one good job after they failed."""
    root = tmp_path_factory.mktemp("bad-inputs")
    cfg = write_config(root, model=tiny_ast_dir, settle_s=2.0, orphan_timeout_s=ORPHAN_TIMEOUT_S, rescan_s=1.0,
                       params={"save_visualizations": False, "opt_steps": 4})
    inbox = root / "inbox"
    cases = _cases(root)
    good = synthetic(2, seconds=3.0)[1]
    d = Daemon(cfg, root / "daemon.log")
    slow_mix = good.mix

    def slow_writer() -> None:
        (inbox / "slow-writer.query.wav").write_bytes(good.query)
        with open(inbox / "slow-writer.mix.wav", "wb") as f:
            n = 80
            step = len(slow_mix) // n + 1
            for i in range(0, len(slow_mix), step):
                f.write(slow_mix[i:i + step])
                f.flush()
                time.sleep(SLOW_WRITE_S / n)

    try:
        d.wait_notify("READY=1", timeout=120)
        writer = threading.Thread(target=slow_writer)
        writer.start()
        for case in cases:
            for fname, data in case.files.items():
                p = inbox / fname
                if callable(data):
                    data(p)
                else:
                    p.write_bytes(data)
                case.sha[fname] = f"link:{os.readlink(p)}" if p.is_symlink() else sha256(p)
        writer.join()
        cases[-1].sha = {"slow-writer.query.wav": sha256(inbox / "slow-writer.query.wav"),
                         "slow-writer.mix.wav": sha256(inbox / "slow-writer.mix.wav")}
        expected = len(cases)
        wait_for(lambda: len([p for p in (root / "failed").iterdir() if not p.name.startswith(".")])
                 + len([p for p in (root / "outbox").iterdir() if not p.name.startswith(".")]) >= expected,
                 120, interval=0.3, what="every bad case to finish")
        # The next good job after all of them.
        (inbox / "next.query.wav").write_bytes(good.query)
        (inbox / "next.mix.wav").write_bytes(good.mix)
        wait_for(lambda: (root / "outbox" / "next" / "event.json").exists(), 60, what="the next good job")
        alive = d.proc.poll() is None
        d.signal(signal.SIGTERM)
        code = d.wait(60)
    finally:
        d.close()
    lines = (root / "daemon.log").read_text(encoding="utf-8", errors="replace").splitlines()
    return {"root": root, "cases": {c.name: c for c in cases}, "alive": alive, "exit": code, "log_lines": lines}


def _case_ids() -> list[str]:
    return ["truncated", "zero-byte", "random-bytes", "text", "nan", "inf", "all-zero", "short-query", "two-hours",
            "eight-channels", "rate-192k", "orphan", "malformed-yaml", "yaml-bomb", "unknown-key", "wrong-type",
            "out-of-range", "huge-sidecar", WEIRD, "symlink-out", "slow-writer"]


@pytest.mark.parametrize("case_name", _case_ids(), ids=lambda n: "weird-name" if n == WEIRD else n)
def test_bad_input_is_quarantined_and_explained(bad_run, case_name, figures):
    root: Path = bad_run["root"]
    case: Case = bad_run["cases"][case_name]
    folder = folder_name(case.name)
    if case.expect == "done":  # a file still being written is processed once, complete
        out = root / "outbox" / folder
        ev = json.loads((out / "event.json").read_text())
        assert ev["job"]["attempt"] == 1
        for fname, digest in case.sha.items():
            assert sha256(out / "inputs" / fname) == digest, fname
        assert not (root / "failed" / folder).exists()
        return
    err_dir = root / "failed" / folder
    assert err_dir.is_dir(), f"{case.name!r} is not in failed/: {sorted(os.listdir(root / 'failed'))}"
    assert not (root / "outbox" / folder).exists()
    err = json.loads((err_dir / "error.json").read_text())
    msg = err["message"]
    assert case.names_file in msg, f"message does not name {case.names_file!r}: {msg}"
    assert any(w in msg.lower() for w in case.problem), f"message does not say {case.problem}: {msg}"
    assert str(root) not in msg  # the user's file names, not the daemon's folders
    assert err["retryable"] is False and err["kind"] == "input"
    for fname, digest in case.sha.items():
        p = err_dir / "inputs" / fname
        if digest.startswith("link:"):
            assert os.path.islink(p) and os.readlink(p) == digest[5:], fname  # a link stays a link
        else:
            assert sha256(p) == digest, f"{fname} changed"
    figures("bad input", case="weird-name" if case.name == WEIRD else case.name, quarantined=True, message=msg[:160])


def test_daemon_survived_every_bad_input(bad_run):
    assert bad_run["alive"] and bad_run["exit"] == 0
    not_json = []
    for line in bad_run["log_lines"]:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, "stdout must be one JSON object per line:\n" + "\n".join(not_json[:20])
    assert not any("PWNED" in p for p in os.listdir(bad_run["root"]))
    assert not (Path.cwd() / "PWNED").exists()
    outside = bad_run["root"] / "outside" / "secret.wav"
    assert outside.is_file() and outside.read_bytes()[:4] == b"RIFF"
