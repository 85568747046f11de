"""Resource faults: the outbox (and failed/) on a full filesystem — jobs wait and retry, none is
lost or failed for it, status.json and the log say so — and a job over its time limit is stopped
(its process really gone) and recorded.

A full filesystem is a small tmpfs when this runs as root (CI does); elsewhere the fallback is a
file-size limit (RLIMIT_FSIZE) on the daemon, which fails writes with EFBIG the way a quota does.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from audit import audit
from daemon_helpers import Daemon, ledger_transitions, wait_for, write_config
from workload import drop, synthetic

psutil = pytest.importorskip("psutil")
pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def _mount_tmpfs(mnt: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    mnt.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True).returncode == 0


def _fill(fs: Path, leave_bytes: int) -> Path:
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    os.truncate(filler, max(0, os.path.getsize(filler) - leave_bytes))
    return filler


@pytest.fixture(params=["tmpfs", "rlimit"])
def full_disk(request, tmp_path):
    """``(outbox, failed, make_room, daemon_hook)``: outbox/failed folders whose writes fail for
    lack of space until ``make_room()`` is called."""
    if request.param == "tmpfs":
        mnt = tmp_path / "small-fs"
        if not _mount_tmpfs(mnt, "16m"):
            pytest.skip("cannot mount a tmpfs here (not root?): the rlimit case covers it")
        filler = _fill(mnt, 48 * 1024)
        try:
            yield mnt / "outbox", mnt / "failed", lambda d: filler.unlink(), None, "No space left on device"
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        return
    limit = 600 * 1024  # larger than the daemon's own files in this test, smaller than one result
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]  # only the soft limit moves: no privilege needed

    def hook(d: Daemon) -> None:
        psutil.Process(d.proc.pid).rlimit(resource.RLIMIT_FSIZE, (limit, hard))

    def make_room(d: Daemon) -> None:
        psutil.Process(d.proc.pid).rlimit(resource.RLIMIT_FSIZE, (hard, hard))

    yield tmp_path / "outbox", tmp_path / "failed", make_room, hook, "File too large"


def test_full_outbox_waits_and_retries_never_loses_a_job(tmp_path, full_disk, figures):
    outbox, failed, make_room, hook, strerror = full_disk
    outbox.mkdir(exist_ok=True)
    failed.mkdir(exist_ok=True)
    cfg = write_config(tmp_path, outbox=str(outbox), failed=str(failed), max_attempts=2, settle_s=0.3,
                       retry_backoff_s=0.2, retry_backoff_max_s=0.5, params={"save_visualizations": False, "opt_steps": 3})
    good = synthetic(1, seconds=30.0)[0]  # 30 s: each output file is ~1 MB
    d = Daemon(cfg, tmp_path / "daemon.log")
    db = tmp_path / "work" / "state.db"
    status = tmp_path / "work" / "status.json"
    try:
        d.wait_notify("READY=1")
        if hook:
            hook(d)
        drop(tmp_path / "inbox", "big one", good)
        drop(tmp_path / "inbox", "big two", good, folder=True)
        (tmp_path / "inbox" / "broken.query.wav").write_bytes(good.query)  # a bad job: needs failed/
        (tmp_path / "inbox" / "broken.mix.wav").write_bytes(b"not audio" * 100)
        # A full disk never fails a job: it is retried (beyond max_attempts) and, while the outbox
        # stays full, waits without running the separation again.
        wait_for(lambda: sum(t["state"] == "retried" for t in ledger_transitions(db)) >= 2, 90, what="retries")
        wait_for(lambda: sum(e.get("event") == "outbox still full; job waits" for e in d.log_events()) >= 4, 30,
                 what="the daemon to keep waiting for space")
        st = wait_for(lambda: json.loads(status.read_text()).get("disk_full"), 15, what="disk_full in status.json")
        assert st["path"] in (str(outbox), str(failed)) and st["since"]
        assert not [p for p in outbox.iterdir() if not p.name.startswith(".")]
        events = d.log_events()
        retried = [e for e in events if e.get("event") == "job will be retried"]
        assert retried and all(e["kind"] == "resource" for e in retried)
        assert any("full" in e["error"].lower() or strerror.lower() in e["error"].lower() for e in retried), retried[-1]
        make_room(d)
        wait_for(lambda: len([p for p in outbox.iterdir() if not p.name.startswith(".")]) == 2, 90, what="results once space returned")
        wait_for(lambda: (failed / "broken" / "error.json").exists(), 30, what="the bad job in failed/")
        wait_for(lambda: not json.loads(status.read_text()).get("disk_full"), 15, what="disk_full cleared")
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0
    finally:
        d.close()
    result = audit(tmp_path, ["big one", "big two", "broken"], outbox=outbox, failed=failed)
    retries = sum(t["state"] == "retried" for t in ledger_transitions(db))
    figures("full outbox", mode=full_disk_mode(strerror), retries=retries, **result.figures())
    assert result.problems == [], result.problems
    assert set(result.done) == {"big one", "big two"} and set(result.failed) == {"broken"}
    assert "not a readable audio file" in result.failed["broken"]["message"]


def full_disk_mode(strerror: str) -> str:
    return "tmpfs" if strerror.startswith("No space") else "RLIMIT_FSIZE"


def test_job_over_its_timeout_is_stopped_and_recorded(tmp_path, figures):
    cfg = write_config(tmp_path, job_timeout_s=1.0, max_attempts=2, retry_backoff_s=0.1, settle_s=0.3)
    long_job = synthetic(1, seconds=60.0)[0]
    d = Daemon(cfg, tmp_path / "daemon.log")
    try:
        d.wait_notify("READY=1")
        daemon = psutil.Process(d.proc.pid)
        drop(tmp_path / "inbox", "endless", long_job, sidecar="masker: seed\nopt_steps: 1000\n")
        child_pids = set()

        def failed() -> bool:
            child_pids.update(c.pid for c in daemon.children())
            return (tmp_path / "failed" / "endless" / "error.json").exists()

        wait_for(failed, 60, interval=0.05, what="the endless job to fail")
        assert len(child_pids) >= 2  # one process per attempt
        time.sleep(0.3)
        alive = [p for p in child_pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"timed-out job processes still running: {alive}"
        drop(tmp_path / "inbox", "quick", synthetic(1, seconds=2.0)[0])
        wait_for(lambda: (tmp_path / "outbox" / "quick" / "event.json").exists(), 60, what="the next job")
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0
    finally:
        d.close()
    err = json.loads((tmp_path / "failed" / "endless" / "error.json").read_text())
    assert err["error_type"] == "Timeout" and err["attempt"] == 2 and err["kind"] == "transient"
    assert [h["type"] for h in err["history"]] == ["Timeout", "Timeout"]
    assert "job_timeout_s" in err["message"]
    timed_out = [e for e in d.log_events() if e.get("event") == "job timed out"]
    assert len(timed_out) == 2
    result = audit(tmp_path, ["endless", "quick"])
    figures("job timeout", attempts=err["attempt"], job_processes=len(child_pids), **result.figures())
    assert result.problems == [], result.problems
