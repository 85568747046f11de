"""``sourcesep-daemon`` as a user runs it: bad use gets one line on stderr and a documented exit
status, never a traceback; the read-only commands never create the daemon's state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from daemon_helpers import run_cli, write_config


def _one_line(p) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def _fresh_config(root: Path) -> Path:
    """A config whose daemon never ran: none of its folders exist yet."""
    cfg = root / "daemon.yaml"
    cfg.write_text(yaml.safe_dump({"inbox": "inbox", "outbox": "outbox", "work": "work", "failed": "failed", "model": "none"}))
    return cfg


@pytest.mark.parametrize("date", ["yesterday", "2026-13-45", "2026-02-30", "31.01.2026"])
def test_report_date_must_be_a_day_written_yyyy_mm_dd(tmp_path, date):
    cfg = write_config(tmp_path)
    p = run_cli("report", "--config", str(cfg), "--date", date, timeout=60)
    line = _one_line(p)
    assert p.returncode == 2 and line.startswith("sourcesep-daemon: --date") and "YYYY-MM-DD" in line and repr(date) in line


def test_report_and_status_before_the_daemon_ever_ran(tmp_path):
    cfg = _fresh_config(tmp_path)
    work = tmp_path / "work"
    p = run_cli("report", "--config", str(cfg), timeout=60)
    line = _one_line(p)
    assert p.returncode == 2 and "nothing to report yet" in line and "has not run with this config" in line
    assert f"work folder {work} does not exist" in line and str(cfg) in line
    st = run_cli("status", "--config", str(cfg), timeout=60)
    assert st.returncode == 0 and not st.stderr, st.stderr
    assert f"ledger   none yet: the daemon has not run with this config (work folder {work} does not exist)" in st.stdout
    sj = run_cli("status", "--config", str(cfg), "--json", timeout=60)
    assert sj.returncode == 0 and json.loads(sj.stdout)["counts"] == {}
    assert sorted(os.listdir(tmp_path)) == ["daemon.yaml"]  # read-only commands created nothing

    work.mkdir()  # the folder exists (made by hand, or another daemon's), the ledger does not
    p = run_cli("report", "--config", str(cfg), "--date", "2026-01-31", timeout=60)
    assert p.returncode == 2 and f"work folder {work} holds no state.db" in _one_line(p)
    assert not list(work.iterdir())


def test_unusable_folders_are_one_config_line_on_stderr(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test folder")
    inbox = shm / f"sourcesep-test-inbox-{os.getpid()}"
    try:
        cfg = write_config(tmp_path, inbox=str(inbox))
        p = run_cli("once", "--config", str(cfg), timeout=120)
        line = _one_line(p)
        assert p.returncode == 2 and line.startswith(f"sourcesep-daemon: {cfg}: inbox, work: ")
        assert "must be on the same filesystem" in line and not p.stdout.strip()
    finally:
        inbox.rmdir()


def test_usage_errors_are_one_line():
    p = run_cli("report", timeout=60)
    assert p.returncode == 2 and "--config" in _one_line(p) and "sourcesep-daemon report --help" in p.stderr
    p = run_cli("status", "--config", "x.yaml", "--limit", "many", timeout=60)
    assert p.returncode == 2 and "--limit" in _one_line(p)


def test_fork_isolation_on_cuda_is_a_config_error(tmp_path):
    """Every forked attempt would fail on a GPU; the daemon refuses the config at start instead."""
    cfg = write_config(tmp_path, device="cuda:0", isolation="fork")
    p = run_cli("once", "--config", str(cfg), timeout=120)
    line = _one_line(p)
    assert p.returncode == 2 and line.startswith(f"sourcesep-daemon: {cfg}: isolation: fork cannot run on CUDA")
    assert "set isolation: thread" in line
