"""One attempt in a forked child (and in a thread) with a real Separator on real files."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from daemon.worker import INPUT, RESOURCE, TRANSIENT, JobSpec, choose_isolation, classify, start_fork, start_thread
from daemon_helpers import pair_audio
from sourcesep import InputError, ModelError, ParamError, Separator


@pytest.fixture(scope="module")
def sep():
    # One thread in the parent: forked children may then start their own OpenMP pool.
    return Separator(model="none", threads=1, device="cpu")  # fork isolation is CPU-only


def _spec(tmp_path, mix_bytes=None, **over):
    mix, query, _ = pair_audio(2.0)
    (tmp_path / "m.wav").write_bytes(mix if mix_bytes is None else mix_bytes)
    (tmp_path / "q.wav").write_bytes(query)
    out = tmp_path / "out"
    out.mkdir()
    base = dict(
        job_id="j1", name="j", mix=str(tmp_path / "m.wav"), query=str(tmp_path / "q.wav"), gt=None,
        overrides={"save_visualizations": False}, extra_event={"job": {"id": "j1", "attempt": 1}},
        out_dir=str(out), job_log=str(tmp_path / "job.log.jsonl"), threads=1, log_format="json",
    )
    base.update(over)
    return JobSpec(**base)


def _wait(r, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.read():
            return r.outcome()
        time.sleep(0.02)
    raise AssertionError("attempt did not finish")


def test_forked_attempt_writes_results_and_job_log(sep, tmp_path):
    spec = _spec(tmp_path)
    out = _wait(start_fork(sep, spec))
    assert out.ok, out.error
    ev = json.loads((tmp_path / "out" / "event.json").read_text())
    assert ev["job"] == {"id": "j1", "attempt": 1}
    assert out.summary["files"]["target"] == "target.wav" and out.summary["segments"] is not None
    lines = [json.loads(x) for x in (tmp_path / "job.log.jsonl").read_text().splitlines()]
    assert {(x["stage"], x["event"]) for x in lines} >= {("separate", "stage start"), ("separate", "stage end"), ("write", "stage end")}
    assert all(x["job_id"] == "j1" for x in lines)


def test_forked_attempt_reports_bad_input_as_not_retryable(sep, tmp_path):
    out = _wait(start_fork(sep, _spec(tmp_path, mix_bytes=b"RIFF....garbage")))
    assert not out.ok and out.error["kind"] == INPUT and out.error["type"] == "InputError"
    assert "m.wav" in out.error["message"]


def test_timeout_kill_is_real(sep, tmp_path):
    spec = _spec(tmp_path, overrides={"save_visualizations": False, "opt_steps": 1000})
    r = start_fork(sep, spec)
    time.sleep(0.3)
    r.kill("timeout")
    out = r.outcome()
    assert not out.ok and out.error["type"] == "Timeout" and out.error["kind"] == TRANSIENT
    with pytest.raises(ProcessLookupError):
        os.kill(r.pid, 0)  # reaped: no zombie, no orphan


def test_thread_attempt(sep, tmp_path):
    out = _wait(start_thread(sep, _spec(tmp_path)))
    assert out.ok and (tmp_path / "out" / "target.wav").exists()


def test_classify():
    assert classify(InputError("x", "bad")) == INPUT
    assert classify(ParamError("bad")) == INPUT
    assert classify(OSError(errno.ENOSPC, "No space left on device")) == RESOURCE
    assert classify(MemoryError()) == TRANSIENT
    assert classify(ModelError("gone")) == TRANSIENT
    assert classify(RuntimeError("boom")) == TRANSIENT


def test_isolation_choice():
    assert choose_isolation("auto", "cpu", 4).isolation == "fork"
    assert choose_isolation("auto", "cpu", 4).parent_threads == 1
    assert choose_isolation("auto", "cuda:0", 4).isolation == "thread"
    assert choose_isolation("thread", "cpu", 4).parent_threads == 4
    with pytest.raises(ValueError, match="isolation: fork cannot run on CUDA"):
        choose_isolation("fork", "cuda:0", 4)


def test_no_room_sees_quota_and_size_limits_that_free_space_hides(tmp_path):
    # Regression (torture suite, full outbox under a file size limit / quota): libsndfile says
    # "System error." and statvfs shows free space, so the job was called transient and failed
    # after max_attempts. The write probe sees EFBIG (and ENOSPC, EDQUOT) itself.
    import subprocess
    import sys

    from daemon.room import no_room

    assert no_room(tmp_path) is None and os.listdir(tmp_path) == []  # the probe cleans up
    code = (
        "import resource, sys; from daemon.room import no_room\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "print(no_room(sys.argv[1], 2 << 20))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == os.strerror(errno.EFBIG), p.stderr
    assert os.listdir(tmp_path) == []


def test_write_failure_without_room_is_a_resource_error(tmp_path, sep):
    import resource

    spec = _spec(tmp_path)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    pid = os.fork()
    if pid == 0:  # a child with a 16 KiB file size limit: the results cannot be written
        code = 1
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
            from daemon.worker import run_attempt

            out = run_attempt(sep, spec)
            (tmp_path / "outcome.json").write_text(json.dumps(out.error))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    err = json.loads((tmp_path / "outcome.json").read_text())
    assert err["kind"] == RESOURCE and err["stage"] == "write"
    assert "no room to write the results" in err["message"] and os.strerror(errno.EFBIG) in err["message"]


def test_stale_room_probes_are_removed(tmp_path):
    from daemon.room import PROBE_PREFIX, remove_stale_probes

    (tmp_path / f"{PROBE_PREFIX}123-456").write_bytes(b"\0" * 10)
    (tmp_path / "keep").mkdir()
    assert remove_stale_probes(tmp_path) == 1 and os.listdir(tmp_path) == ["keep"]
