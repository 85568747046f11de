"""Two daemons on one inbox (as two hosts on an NFS share would be): every job is done exactly
once, the ledger and the outbox agree. Midway one daemon is SIGKILLed and started again, so the
survivor and the newcomer race to adopt the dead one's claimed jobs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from audit import audit
from daemon_helpers import Daemon, ledger_rows, write_config
from workload import drop, synthetic

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def _finished(root) -> int:
    return sum(1 for sub in ("outbox", "failed") for p in os.scandir(root / sub) if not p.name.startswith((".", "_")))


def test_two_daemons_one_inbox_each_job_once(tmp_path, scale, figures):
    n = scale.two_daemon_jobs
    common = dict(settle_s=0.3, rescan_s=1.0, params={"save_visualizations": False, "opt_steps": 3})
    cfg_a = write_config(tmp_path, "a.yaml", status_file="work/status-a.json", **common)
    cfg_b = write_config(tmp_path, "b.yaml", status_file="work/status-b.json", **common)
    sources = synthetic(5, seconds=1.5)
    names = [f"job {i:04d}" for i in range(n)]
    a = Daemon(cfg_a, tmp_path / "a.log")
    b = Daemon(cfg_b, tmp_path / "b.log")
    b2 = None
    t0 = time.monotonic()
    try:
        a.wait_notify("READY=1")
        b.wait_notify("READY=1")
        bursts = [names[i::4] for i in range(4)]
        for i, burst in enumerate(bursts):
            for j, name in enumerate(burst):
                drop(tmp_path / "inbox", name, sources[j % len(sources)], folder=j % 3 == 0)
            if i == 1:  # midway: kill B while it holds claimed jobs, then start it again
                deadline = time.monotonic() + 120
                while _finished(tmp_path) < n * 0.3 and time.monotonic() < deadline:
                    time.sleep(0.1)
                b.signal(signal.SIGKILL)
                b.wait(30)
                b2 = Daemon(cfg_b, tmp_path / "b2.log")
                b2.wait_notify("READY=1")
        deadline = time.monotonic() + (1200 if scale.full else 240)
        while time.monotonic() < deadline:
            if _finished(tmp_path) >= n and not any(p.is_dir() for p in (tmp_path / "work").iterdir()):
                break
            assert a.proc.poll() is None and b2.proc.poll() is None
            time.sleep(0.3)
        time.sleep(1.0)  # a duplicate (there must be none) would show up now
        a.signal(signal.SIGTERM)
        b2.signal(signal.SIGTERM)
        assert a.wait(60) == 0 and b2.wait(60) == 0
    finally:
        for d in (a, b, b2):
            if d is not None:
                d.close()
    elapsed = time.monotonic() - t0
    result = audit(tmp_path, names, status_files=("status-a.json", "status-b.json"))
    owners = {}
    for r in ledger_rows(tmp_path / "work" / "state.db"):
        owners[r["owner"]] = owners.get(r["owner"], 0) + 1
    figures("two daemons", **result.figures(), seconds=round(elapsed, 1), jobs_per_owner=sorted(owners.values()))
    assert result.problems == [], "\n".join(result.problems[:40])
    assert not result.failed
    assert len(owners) >= 2  # both daemons did work
