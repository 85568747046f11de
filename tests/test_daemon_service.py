"""The daemon end to end: real folders, the real watchdog observer, the daemon as a real
subprocess with real signals and a systemd-style notify socket."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import signal
import time
from pathlib import Path

import jsonschema
import pytest

from daemon_helpers import (
    REPO,
    Daemon,
    drop_flat,
    drop_folder,
    failures,
    leftovers,
    ledger_rows,
    ledger_transitions,
    pair_audio,
    results,
    run_cli,
    sha256,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow


def _check_result(folder: Path, ev: dict) -> None:
    missing = [f for f in ev["outputs"].values() if not (folder / f).exists()]
    assert not missing, f"{folder.name}: event.json lists missing files {missing}"
    lines = [json.loads(x) for x in (folder / "job.log.jsonl").read_text().splitlines()]
    assert lines and all(x["job_id"] == ev["job"]["id"] for x in lines)


def test_once_processes_good_jobs_and_quarantines_bad_ones(tmp_path, tiny_ast_dir):
    cfg = write_config(tmp_path, model=tiny_ast_dir, orphan_timeout_s=2, params={})
    box = tmp_path / "inbox"
    weird = "good ü $(echo x) & 'y'"
    drop_flat(box, weird, sidecar="opt_steps: 3\ncls_percentile: 80\n", gt=True)
    drop_folder(box, "folder job", params="opt_steps: 4\n")
    mix, query, _ = pair_audio()
    bad = {
        "corrupt": {"corrupt.mix.wav": os.urandom(5000), "corrupt.query.wav": query},
        "text": {"text.mix.wav": b"this is a text file, not audio\n" * 20, "text.query.wav": query},
        "empty": {"empty.mix.wav": b"", "empty.query.wav": query},
        "orphan": {"orphan.mix.wav": mix},
        "badside": {"badside.mix.wav": mix, "badside.query.wav": query, "badside.yaml": b"opt_steps: [1, 2]\n"},
        "unknown": {"unknown.mix.wav": mix, "unknown.query.wav": query, "unknown.yaml": b"no_such_param: 1\n"},
        "bomb": {"bomb.mix.wav": mix, "bomb.query.wav": query, "bomb.yaml": b"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"},
        "tiny": {"tiny.mix.wav": mix, "tiny.query.wav": pair_audio(0.05)[0]},
    }
    dropped = {}
    for files in bad.values():
        for fname, data in files.items():
            (box / fname).write_bytes(data)
            dropped[fname] = sha256(box / fname)
    old = time.time() - 86400  # an old mtime (cp -p) does not make it an orphan early: arrival counts
    os.utime(box / "orphan.mix.wav", (old, old))
    secret = tmp_path / "outside.wav"
    secret.write_bytes(mix)
    os.symlink(secret, box / "link.mix.wav")
    (box / "link.query.wav").write_bytes(query)
    drop_flat(box, "after")  # a good job after all the bad ones

    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    for line in p.stdout.splitlines():  # not a tty: one JSON object per line
        json.loads(line)

    res = results(tmp_path / "outbox")
    assert set(res) == {weird, "folder job", "after"}
    ev = res[weird]
    schema = json.loads((REPO / "sourcesep" / "event.schema.json").read_text())
    for e in res.values():
        jsonschema.validate(e, schema)  # the job fields do not break the core's event schema
    assert ev["inputs"]["mix"]["path"] == f"inputs/{weird}.mix.wav"  # where it sits in the result
    assert ev["job"]["attempt"] == 1 and ev["job"]["queue_wait_s"] >= 0
    assert ev["job"]["overrides"] == {"opt_steps": 3, "cls_percentile": 80.0}
    assert ev["params"]["opt_steps"] == 3 and ev["param_sources"]["opt_steps"] == f"sidecar:{weird}.yaml"
    assert ev["metrics"] is not None  # the gt file was used
    assert ev["job"]["inputs"]["mix"]["sha256"] == sha256(tmp_path / "outbox" / weird / "inputs" / f"{weird}.mix.wav")
    assert res["folder job"]["params"]["opt_steps"] == 4
    assert sorted(os.listdir(tmp_path / "outbox" / "folder job" / "inputs")) == ["gt.wav", "mix.wav", "params.yaml", "query.wav"]
    for name, e in res.items():
        _check_result(tmp_path / "outbox" / name, e)
        for f in ("event.json", "target.wav", "job.log.jsonl"):  # umask 0027
            assert os.stat(tmp_path / "outbox" / name / f).st_mode & 0o027 == 0

    fails = failures(tmp_path / "failed")
    assert set(fails) == set(bad) | {"link"}
    expect = {
        "corrupt": "corrupt.mix.wav", "text": "text.mix.wav", "empty": "empty.mix.wav",
        "orphan": "orphan.query.EXT", "badside": "opt_steps", "unknown": "no_such_param",
        "bomb": "alias", "tiny": "tiny.query.wav", "link": "symbolic link",
    }
    for job, word in expect.items():
        err = fails[job]
        assert word in err["message"], (job, err["message"])
        assert err["retryable"] is False and err["stage"] in ("inbox", "validate", "separate")
        assert str(tmp_path) not in err["message"]  # names the user's file, not our folders
    for job, files in bad.items():  # inputs byte-identical
        for fname in files:
            assert sha256(tmp_path / "failed" / job / "inputs" / fname) == dropped[fname]
    assert os.path.islink(tmp_path / "failed" / "link" / "inputs" / "link.mix.wav")
    assert secret.read_bytes() == mix
    assert not list(box.iterdir()) and leftovers(tmp_path) == []

    rows = ledger_rows(tmp_path / "work" / "state.db")
    assert sorted(r["state"] for r in rows) == ["done"] * 3 + ["failed"] * 9
    st = run_cli("status", "--config", str(cfg), "--json", timeout=60)
    assert st.returncode == 0 and json.loads(st.stdout)["counts"]["done"] == 3
    rep = run_cli("report", "--config", str(cfg), timeout=60)
    assert rep.returncode == 0, rep.stderr
    page = next((tmp_path / "outbox" / "_reports").glob("*.html")).read_text()
    assert "folder job" in page and "data:image/png;base64," in page


def test_records_name_files_in_the_result_and_errors_lead_with_the_sidecar(tmp_path):
    # A segments file is named where it sits in the result folder (the work folder is deleted
    # after commit); a sidecar the daemon's model cannot run fails naming the file and key.
    # model: none, and a config parameter only the AST detectors read
    cfg = write_config(tmp_path, params={"save_visualizations": False, "cls_percentile": 85})
    box = tmp_path / "inbox"
    drop_folder(box, "seg job", params="segments: segs.txt\n", gt=False, extra={"segs.txt": "0.5 2.5\n"})
    drop_flat(box, "seedjob", sidecar="preset: seed\n")
    drop_flat(box, "swapped", seconds=1.0, sidecar="opt_steps: 30\n")  # a 1 s mixture, a longer query
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    folder = tmp_path / "outbox" / "seg job"
    ev = results(tmp_path / "outbox")["seg job"]
    assert ev["params"]["segments"] == "inputs/segs.txt" and (folder / ev["params"]["segments"]).is_file()
    assert ev["job"]["overrides"] == {"segments": "inputs/segs.txt"} and ev["detection"]["detector"] == "oracle"
    row = next(r for r in ledger_rows(tmp_path / "work" / "state.db") if r["name"] == "seg job")
    assert json.loads(row["overrides"]) == {"segments": "inputs/segs.txt"}
    assert str(tmp_path / "work") not in (folder / "event.json").read_text()

    # what the user should know about a job that ran: in event.json and the job's log
    ev = results(tmp_path / "outbox")["swapped"]
    assert ev["unused_params"] == {"cls_percentile": "not used by the query detector",
                                   "opt_steps": "not used by the nmf masker"}
    assert ev["notes"][:2] == ["cls_percentile: not used by the query detector", "opt_steps: not used by the nmf masker"]
    assert ev["notes"][2].startswith("the mixture (1.00 s) is shorter than the query")
    assert ev["notes"][2].endswith(f"are {ev['inputs']['mix']['path']} and {ev['inputs']['query']['path']} swapped?")
    log = (tmp_path / "outbox" / "swapped" / "job.log.jsonl").read_text()
    assert '"event":"separation notes"' in log and str(tmp_path / "work") not in log

    err = failures(tmp_path / "failed")["seedjob"]
    expect = "seedjob.yaml: preset: 'seed' needs an AST model (it sets detector: ast); without one (model none)"
    assert err["message"].startswith(expect) and err["stage"] == "validate" and err["retryable"] is False
    events = [json.loads(line) for line in p.stdout.splitlines()]
    # the operator hears once, at start, what the config sets in vain
    warned = [e for e in events if e["event"] == "params in the config that this daemon's pipeline does not read"]
    assert len(warned) == 1 and warned[0]["params"] == {"cls_percentile": "not used by the query detector"}
    failed = next(e for e in events if e["event"] == "job failed")
    assert failed["job"] == "seedjob" and failed["error"].startswith(expect)
    committing = {e["job"]: e for e in events if e["event"] == "job outputs complete; committing"}
    assert committing["seg job"]["job_id"] == results(tmp_path / "outbox")["seg job"]["job"]["id"]


def _closed_window() -> str:
    """A processing window that does not include the current local time."""
    now = dt.datetime.now()
    a, b = now + dt.timedelta(hours=2), now + dt.timedelta(hours=3)
    return f"{a:%H:%M}-{b:%H:%M}"


def test_run_window_sighup_slow_copy_and_sigterm(tmp_path):
    cfg = write_config(tmp_path, settle_s=1.0, windows=[_closed_window()])
    box = tmp_path / "inbox"
    status_path = tmp_path / "work" / "status.json"

    def status():
        return json.loads(status_path.read_text())

    d = Daemon(cfg, tmp_path / "daemon.log", watchdog_usec=1_500_000)
    try:
        d.wait_notify("READY=1")
        # Outside the processing window a ready job waits in the inbox.
        drop_flat(box, "waits")
        wait_for(lambda: status_path.exists() and status()["queue"]["inbox_ready"] == 1, 30, what="job queued")
        assert status()["state"].startswith("paused") and not status()["window_open"]
        time.sleep(1.0)
        assert not results(tmp_path / "outbox")

        # SIGHUP: no windows, new parameters, thread isolation; the waiting job runs with them.
        write_config(tmp_path, settle_s=1.0, isolation="thread", params={"save_visualizations": False, "opt_steps": 5})
        d.signal(signal.SIGHUP)
        wait_for(lambda: (tmp_path / "outbox" / "waits").exists(), 60, what="job after reload")
        ev = results(tmp_path / "outbox")["waits"]
        assert ev["params"]["opt_steps"] == 5 and ev["param_sources"]["opt_steps"].startswith("daemon config")
        assert ev["job"]["daemon"]["isolation"] == "thread"

        # A mixture copied slowly in chunks (each gap much shorter than settle_s) runs once, after it completes.
        mix, query, _ = pair_audio(3.0)
        (box / "slow.query.wav").write_bytes(query)
        with open(box / "slow.mix.wav", "wb") as f:
            step = len(mix) // 12 + 1
            for i in range(0, len(mix), step):
                f.write(mix[i:i + step])
                f.flush()
                time.sleep(0.1)
        copied_at = time.time()
        wait_for(lambda: (tmp_path / "outbox" / "slow").exists(), 60, what="slow job")
        assert sha256(tmp_path / "outbox" / "slow" / "inputs" / "slow.mix.wav") == sha256_bytes(mix)
        row = next(r for r in ledger_rows(tmp_path / "work" / "state.db") if r["name"] == "slow")
        assert row["claimed_at"] >= copied_at - 0.05  # claimed only after the copy completed

        # A bad job does not stop the daemon.
        (box / "broken.mix.wav").write_bytes(b"")
        (box / "broken.query.wav").write_bytes(query)
        drop_flat(box, "next")
        wait_for(lambda: (tmp_path / "outbox" / "next").exists(), 60, what="job after a bad one")
        # An unparseable file may still be arriving: it fails after 3 x settle_s unchanged.
        wait_for(lambda: (tmp_path / "failed" / "broken" / "error.json").exists(), 30, what="bad job failed")
        assert "empty file" in failures(tmp_path / "failed")["broken"]["message"]

        wait_for(lambda: status()["since_start"] == {"done": 3, "failed": 1, "retried": 0}, 10, what="status.json heartbeat")
        assert status()["reloads"] == 1 and status()["window_open"]
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0
    finally:
        d.close()
    msgs = d.messages
    assert any(m.startswith("READY=1") for m in msgs) and "WATCHDOG=1" in msgs and "STOPPING=1" in msgs
    assert "RELOADING=1" in msgs
    assert set(results(tmp_path / "outbox")) == {"waits", "slow", "next"}
    assert leftovers(tmp_path) == [] and not list(box.iterdir())
    events = d.log_events()
    assert {e["event"] for e in events} >= {"config reloaded", "job claimed", "job started", "stage start", "stage end", "job done", "job failed"}
    assert status()["state"] == "stopped"


def sha256_bytes(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


def test_twenty_jobs_dropped_at_once_each_done_exactly_once(tmp_path):
    cfg = write_config(tmp_path)
    box = tmp_path / "inbox"
    names = []
    for i in range(10):
        drop_flat(box, f"flat {i:02d}", seconds=2.0)
        drop_folder(box, f"folder {i:02d}", seconds=2.0, gt=False)
        names += [f"flat {i:02d}", f"folder {i:02d}"]
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-3000:]
    res = results(tmp_path / "outbox")
    assert sorted(res) == sorted(names)  # no "-2" duplicates
    assert len({e["job"]["id"] for e in res.values()}) == 20
    assert not failures(tmp_path / "failed") and leftovers(tmp_path) == []
    trans = ledger_transitions(tmp_path / "work" / "state.db")
    runs = [t["job_id"] for t in trans if t["state"] == "running"]
    assert len(runs) == 20 and len(set(runs)) == 20


def test_two_daemons_share_one_inbox_exactly_once(tmp_path):
    cfg_a = write_config(tmp_path, "a.yaml", status_file="work/status-a.json")
    cfg_b = write_config(tmp_path, "b.yaml", status_file="work/status-b.json")
    da, db = Daemon(cfg_a, tmp_path / "a.log"), Daemon(cfg_b, tmp_path / "b.log")
    try:
        da.wait_notify("READY=1")
        db.wait_notify("READY=1")
        names = [f"job {i:02d}" for i in range(16)]
        for n in names:
            drop_flat(tmp_path / "inbox", n, seconds=2.0)
        wait_for(lambda: len(results(tmp_path / "outbox")) >= 16, 120, interval=0.3, what="16 results")
        time.sleep(1.0)  # let any duplicate show itself
        da.signal(signal.SIGTERM)
        db.signal(signal.SIGTERM)
        assert da.wait(60) == 0 and db.wait(60) == 0
    finally:
        da.close()
        db.close()
    res = results(tmp_path / "outbox")
    assert sorted(res) == names
    rows = ledger_rows(tmp_path / "work" / "state.db")
    assert sorted(r["name"] for r in rows if r["state"] == "done") == names and len(rows) == 16
    runs = [t["job_id"] for t in ledger_transitions(tmp_path / "work" / "state.db") if t["state"] == "running"]
    assert len(runs) == len(set(runs)) == 16
    assert leftovers(tmp_path) == [] and not failures(tmp_path / "failed")
    owners = {r["owner"] for r in rows}
    assert 1 <= len(owners) <= 2


def test_sigterm_then_sigkill_mid_job_then_restart_completes_once(tmp_path):
    cfg = write_config(tmp_path, grace_s=0.5)
    drop_flat(tmp_path / "inbox", "slow", seconds=30.0, sidecar="masker: seed\nopt_steps: 500\n")
    db = tmp_path / "work" / "state.db"

    def running() -> bool:
        return db.exists() and any(r["state"] == "running" for r in ledger_rows(db))

    # 1. SIGTERM while the job runs and the grace period is too short: exit 0, the job is left
    #    queued in work/ and the stopped attempt does not count.
    d = Daemon(cfg, tmp_path / "first.log")
    try:
        d.wait_notify("READY=1")
        wait_for(running, 60, what="job running")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0
    finally:
        d.close()
    (row,) = ledger_rows(db)
    assert row["state"] == "queued" and row["attempt"] == 0
    assert not (tmp_path / "outbox" / "slow").exists() and not list((tmp_path / "outbox").glob(".tmp-*"))

    # 2. SIGKILL mid-job: the job process dies with the daemon, nothing partial is committed.
    d = Daemon(cfg, tmp_path / "second.log")
    try:
        d.wait_notify("READY=1")
        wait_for(running, 60, what="job running again")
        time.sleep(0.5)
        d.signal(signal.SIGKILL)
        d.wait(30)
    finally:
        d.close()
    assert not (tmp_path / "outbox" / "slow").exists()
    (job_dir,) = [p for p in (tmp_path / "work").iterdir() if p.is_dir()]

    def lock_free() -> bool:  # the job's child died with the daemon (PR_SET_PDEATHSIG)
        fd = os.open(job_dir / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    wait_for(lock_free, 10, what="the killed daemon's job process to exit")

    # 3. Restart: the job is adopted and completes exactly once; the killed attempt counted.
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-3000:]
    res = results(tmp_path / "outbox")
    assert list(res) == ["slow"] and res["slow"]["job"]["attempt"] == 2
    _check_result(tmp_path / "outbox" / "slow", res["slow"])
    assert leftovers(tmp_path) == []
    states = [t["state"] for t in ledger_transitions(db)]
    assert states == ["queued", "running", "queued", "running", "retried", "running", "done"]
    log = [json.loads(x) for x in (tmp_path / "outbox" / "slow" / "job.log.jsonl").read_text().splitlines()]
    assert sum(1 for x in log if x["event"] == "stage start" and x.get("stage") == "separate") == 3


def test_timeouts_are_retried_then_fail_and_the_daemon_goes_on(tmp_path):
    cfg = write_config(tmp_path, job_timeout_s=1.0, max_attempts=2, retry_backoff_s=0.1)
    drop_flat(tmp_path / "inbox", "endless", seconds=30.0, sidecar="masker: seed\nopt_steps: 1000\n")
    drop_flat(tmp_path / "inbox", "quick", seconds=2.0)
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-3000:]
    assert list(results(tmp_path / "outbox")) == ["quick"]
    err = failures(tmp_path / "failed")["endless"]
    assert err["error_type"] == "Timeout" and err["attempt"] == 2 and "gave up after 2 attempts" in err["message"]
    assert [h["type"] for h in err["history"]] == ["Timeout", "Timeout"]
    assert leftovers(tmp_path) == []


def test_refusals_exit_non_zero_with_one_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inbox: i\noutbox: o\nwork: w\nfailed: f\nsettle_s: fast\n")
    p = run_cli("--config", str(bad), timeout=60)
    assert p.returncode == 2 and "settle_s" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    cfg = write_config(tmp_path, model=str(tmp_path / "no-such-model"), allow_root=False)
    if os.geteuid() == 0:
        p = run_cli("once", "--config", str(cfg), timeout=120)
        assert p.returncode == 2 and "refusing to run as root" in p.stdout
    p = run_cli("once", "--config", str(cfg), "--allow-root", timeout=120)
    assert p.returncode == 3 and "cannot load the model" in p.stdout and "offline" in p.stdout


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs (needs root/CAP_SYS_ADMIN; skipped elsewhere)."""
    import subprocess

    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_outbox_is_retried_until_space_returns(tmp_path, tiny_fs):
    outbox = tiny_fs / "outbox"
    outbox.mkdir()
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill it, then leave ~24 KiB: too little for a result
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, os.path.getsize(filler) - 24 * 1024)
    cfg = write_config(tmp_path, outbox=str(outbox), max_attempts=1, retry_backoff_s=0.2, retry_backoff_max_s=0.5)
    d = Daemon(cfg, tmp_path / "daemon.log")
    db = tmp_path / "work" / "state.db"
    try:
        d.wait_notify("READY=1")
        drop_flat(tmp_path / "inbox", "big")
        status = tmp_path / "work" / "status.json"
        # A full disk never fails a job: it waits for space (without re-running the separation
        # while the outbox stays full), beyond max_attempts.
        wait_for(lambda: sum(t["state"] == "retried" for t in ledger_transitions(db)) >= 1, 60, what="a retry")
        wait_for(lambda: sum(e.get("event") == "outbox still full; job waits" for e in d.log_events()) >= 3, 30, what="waiting")
        wait_for(lambda: json.loads(status.read_text()).get("disk_full"), 10, what="disk_full in status.json")
        assert not failures(tmp_path / "failed") and not results(outbox)
        assert any(e.get("kind") == "resource" for e in d.log_events() if e.get("event") == "job will be retried")
        filler.unlink()
        wait_for(lambda: (outbox / "big" / "event.json").exists(), 60, what="result once space returned")
        wait_for(lambda: not json.loads(status.read_text()).get("disk_full"), 10, what="disk_full cleared")
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0
    finally:
        d.close()
    assert list(results(outbox)) == ["big"] and not list(outbox.glob(".tmp-*"))
    assert sha256(outbox / "big" / "inputs" / "big.mix.wav") == sha256_bytes(pair_audio()[0])  # copied across filesystems


def test_thread_isolation_timeout_exits_75_and_the_job_resumes(tmp_path):
    cfg = write_config(tmp_path, isolation="thread", job_timeout_s=1.0, max_attempts=3)
    # Seconds of DGMO however fast the machine: 1000 steps over a 30 s mixture.
    drop_flat(tmp_path / "inbox", "stuck", seconds=30.0, sidecar="masker: seed\nopt_steps: 1000\n")
    p = run_cli("once", "--config", str(cfg), timeout=120)
    assert p.returncode == 75, p.stdout[-3000:]  # a thread cannot be killed: restart the process
    assert any(json.loads(l).get("event") == "job timed out" for l in p.stdout.splitlines())
    rows = ledger_rows(tmp_path / "work" / "state.db")
    assert [r["state"] for r in rows] == ["retried"] and not results(tmp_path / "outbox")
    # The next start (fork isolation, enough time) adopts the job left in work/ and finishes it.
    cfg = write_config(tmp_path, job_timeout_s=120)
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-3000:]
    res = results(tmp_path / "outbox")
    assert list(res) == ["stuck"] and res["stuck"]["job"]["attempt"] == 2
    assert leftovers(tmp_path) == []


def test_config_with_the_oracle_detector_starts_and_leaves_segments_to_the_sidecars(tmp_path):
    # Its pipeline is only known per job (the sidecar names the segments file): no start-up note.
    cfg = write_config(tmp_path, params={"detector": "oracle"})
    p = run_cli("once", "--config", str(cfg), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert any(e["event"] == "daemon started" for e in events)
    assert not any("does not read" in e["event"] for e in events)
