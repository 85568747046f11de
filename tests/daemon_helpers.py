"""Helpers for the daemon tests: real WAV files in real folders, the daemon as a real subprocess
with a real systemd-style notify socket, and checks on what it left behind."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import soundfile as sf
import yaml

from signals import SR, make_pair

REPO = Path(__file__).resolve().parents[1]


def wav_bytes(x, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def pair_audio(seconds: float = 3.0, seed: int = 0) -> tuple[bytes, bytes, bytes]:
    """(mix, query, gt) WAV bytes: the first ``seconds`` of the synthetic 10 s pair."""
    mix, query, gt, _ = make_pair(seed)
    n = int(seconds * SR)
    return wav_bytes(mix[:n]), wav_bytes(query), wav_bytes(gt[:n])


def drop_flat(inbox: Path, name: str, seconds: float = 3.0, sidecar: str | None = None, gt: bool = False) -> None:
    """Write NAME.mix.wav + NAME.query.wav (+ NAME.yaml, NAME.gt.wav) into ``inbox``."""
    mix, query, gtb = pair_audio(seconds)
    if sidecar is not None:
        (inbox / f"{name}.yaml").write_text(sidecar, encoding="utf-8")
    if gt:
        (inbox / f"{name}.gt.wav").write_bytes(gtb)
    (inbox / f"{name}.query.wav").write_bytes(query)
    (inbox / f"{name}.mix.wav").write_bytes(mix)


def drop_folder(inbox: Path, name: str, seconds: float = 3.0, params: str | None = None, gt: bool = True,
                extra: dict[str, str] | None = None) -> None:
    """Build a job folder next to the inbox and rename it in (how users should drop folders).
    ``extra``: more text files for the folder (e.g. a segments file the sidecar names)."""
    mix, query, gtb = pair_audio(seconds)
    staging = inbox.parent / f"staging-{name}"
    staging.mkdir()
    for fname, text in (extra or {}).items():
        (staging / fname).write_text(text, encoding="utf-8")
    (staging / "mix.wav").write_bytes(mix)
    (staging / "query.wav").write_bytes(query)
    if gt:
        (staging / "gt.wav").write_bytes(gtb)
    if params is not None:
        (staging / "params.yaml").write_text(params, encoding="utf-8")
    os.rename(staging, inbox / name)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_config(root: Path, name: str = "daemon.yaml", **overrides: Any) -> Path:
    """A daemon config under ``root`` with test-friendly timings; ``overrides`` win."""
    cfg: dict[str, Any] = {
        "inbox": "inbox",
        "outbox": "outbox",
        "work": "work",
        "failed": "failed",
        "model": "none",
        "offline": True,
        "device": "cpu",
        "threads": 1,
        "settle_s": 0.3,
        "orphan_timeout_s": 3600,
        "rescan_s": 1.0,
        "heartbeat_s": 0.5,
        "retry_backoff_s": 0.2,
        "grace_s": 10,
        "log_format": "json",
        "allow_root": True,
        "report_time": None,
        "params": {"save_visualizations": False},
    }
    cfg.update(overrides)
    path = root / name
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    for key in ("inbox", "outbox", "work", "failed"):
        (root / cfg[key]).mkdir(parents=True, exist_ok=True)
    return path


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra or {})
    return env


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m daemon.cli ARGS`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO,
        env=env or daemon_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Daemon:
    """``sourcesep-daemon run`` as a subprocess with its own NOTIFY_SOCKET (like systemd's)."""

    def __init__(self, config: Path, log_path: Path, watchdog_usec: int | None = None, command: str = "run") -> None:
        self.notify_path = log_path.with_suffix(".notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._reader = threading.Thread(target=self._read_notify, daemon=True)
        self._closed = False
        self._reader.start()
        extra = {"NOTIFY_SOCKET": str(self.notify_path)}
        if watchdog_usec:
            extra["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", command, "--config", str(config)],
            cwd=REPO,
            env=daemon_env(extra),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        # WATCHDOG_PID would be our pid here, not the daemon's: leave it unset (systemd sets it).

    def _read_notify(self) -> None:
        # Like systemd: always read, so the daemon's datagrams never pile up.
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.messages.append(data.decode())

    def wait_notify(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {text!r}:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from the daemon within {timeout} s:\n{self.log_text()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.flush()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._log.close()
        self._closed = True
        self._reader.join(timeout=2)
        self.sock.close()
        try:
            self.notify_path.unlink()
        except FileNotFoundError:
            pass


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def results(outbox: Path) -> dict[str, dict[str, Any]]:
    """Committed result folders: name → event.json."""
    out = {}
    for d in sorted(outbox.iterdir()):
        if d.is_dir() and not d.name.startswith((".", "_")):
            out[d.name] = json.loads((d / "event.json").read_text(encoding="utf-8"))
    return out


def failures(failed: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for d in sorted(failed.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            out[d.name] = json.loads((d / "error.json").read_text(encoding="utf-8"))
    return out


def ledger_rows(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(str(db))
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM jobs")]
    finally:
        con.close()


def ledger_transitions(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(str(db))
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM transitions ORDER BY seq")]
    finally:
        con.close()


def leftovers(root: Path) -> list[str]:
    """Anything that must not remain after the daemon is done: ``.tmp-*`` folders in outbox/failed
    and job folders in work/."""
    out = []
    for sub in ("outbox", "failed"):
        out += [f"{sub}/{p.name}" for p in (root / sub).iterdir() if p.name.startswith(".tmp-")]
    out += [f"work/{p.name}" for p in (root / "work").iterdir() if p.is_dir()]
    return out
