"""Forward batching in the daemon: jobs running as threads share batched AST forwards; fork
isolation keeps it off (and says why); how batch_windows resolves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.service import batching_choice
from daemon_helpers import drop_flat, leftovers, results, run_cli, write_config


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _one(events: list[dict], name: str) -> dict:
    found = [e for e in events if e.get("event") == name]
    assert len(found) == 1, (name, found)
    return found[0]


@pytest.mark.slow
def test_thread_jobs_share_batched_forwards(tmp_path, tiny_ast_dir):
    # A generous wait: the two jobs start a few milliseconds apart, and their forwards (query,
    # then windows) must meet inside it however loaded the machine is.
    cfg = write_config(tmp_path, model=tiny_ast_dir, isolation="thread", workers=2, batch_windows="on",
                       batch_wait_ms=200)
    for i in range(4):
        drop_flat(tmp_path / "inbox", f"job{i}")
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]

    assert set(results(tmp_path / "outbox")) == {f"job{i}" for i in range(4)}
    assert leftovers(tmp_path) == []
    events = _events(p.stdout)
    loaded = _one(events, "model loaded")
    assert (loaded["isolation"], loaded["batch_windows"], loaded["batch_wait_ms"]) == ("thread", "on", 200.0)
    stats = _one(events, "daemon stopped")["batching"]
    assert stats["merged_forwards"] > 0 and stats["merged_requests"] >= 2 * stats["merged_forwards"], stats
    assert stats["forwards"] < stats["requests"]


@pytest.mark.slow
def test_fork_isolation_keeps_batching_off_and_says_why(tmp_path, tiny_ast_dir):
    cfg = write_config(tmp_path, model=tiny_ast_dir, isolation="fork", workers=2, batch_windows="on")
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    events = _events(p.stdout)
    warning = _one(events, "batch_windows: on has no effect")
    assert "fork" in warning["why"]
    loaded = _one(events, "model loaded")
    assert loaded["batch_windows"] == "off" and "fork" in loaded["batch_why"]
    assert "batching" not in _one(events, "daemon stopped")


def _cfg(tmp_path: Path, text: str = "", model: str = "some/model"):
    path = tmp_path / "d.yaml"
    path.write_text(f"inbox: in\noutbox: out\nwork: work\nfailed: failed\nmodel: {model}\ndevice: cpu\n" + text)
    return load_config(path)


def test_batch_windows_resolution(tmp_path):
    auto = _cfg(tmp_path)
    assert (auto.batch_windows, auto.batch_wait_ms) == ("auto", 5.0)
    assert batching_choice(auto, "thread", 2)[0] is None  # auto: not on a CPU
    assert batching_choice(auto, "fork", 2)[0] is None
    on = _cfg(tmp_path, "batch_windows: on\nbatch_wait_ms: 12\n")  # unquoted YAML on is a bool
    assert on.batch_windows == "on"
    assert batching_choice(on, "thread", 2) == (12.0, "batch_windows: on")
    assert batching_choice(on, "thread", 1)[0] == 12.0  # forced: even for one worker
    wait, why = batching_choice(on, "fork", 2)
    assert wait is None and "fork" in why
    assert batching_choice(_cfg(tmp_path, "batch_windows: off\n"), "thread", 2)[0] is None
    assert batching_choice(_cfg(tmp_path, "batch_windows: 'on'\n", model="none"), "thread", 2)[0] is None
