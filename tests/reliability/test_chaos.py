"""Crash chaos: a driver SIGKILLs the daemon at random moments (during start-up, mid-job, mid-
commit) and restarts it, while jobs keep arriving. Afterwards every job is in the outbox exactly
once or in failed/ with a reason, nothing is half-written or left behind, and the ledger agrees
with the folders."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from audit import audit
from daemon_helpers import Daemon, sha256, write_config
from workload import JobAudio, dev_cases, drop, synthetic

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def plan_jobs(n: int, full: bool) -> list[tuple[str, JobAudio, dict]]:
    """``n`` jobs: the dev cases (when present) copied under new names, else short synthetic
    pairs; flat and folder jobs, some with a sidecar, some with ground truth, some with plots."""
    sources = dev_cases() if full else dev_cases(limit=4) + synthetic(6, seconds=2.0)
    sources = sources or synthetic(8, seconds=2.0)
    rng = random.Random(11)
    jobs = []
    for i in range(n):
        audio = sources[i % len(sources)]
        kind = rng.random()
        opts: dict = {"folder": kind < 0.4, "with_gt": rng.random() < 0.3}
        if rng.random() < 0.3:
            opts["sidecar"] = "opt_steps: 6\nsave_visualizations: true\n" if rng.random() < 0.3 else "opt_steps: 4\n"
        jobs.append((f"{audio.label} copy {i:04d}", audio, opts))
    return jobs


def _finished(root: Path) -> int:
    n = 0
    for sub in ("outbox", "failed"):
        n += sum(1 for p in os.scandir(root / sub) if p.is_dir() and not p.name.startswith((".", "_")))
    return n


def _work_jobs(root: Path) -> int:
    return sum(1 for p in os.scandir(root / "work") if p.is_dir())


def test_crash_chaos_every_job_exactly_once(tmp_path, tiny_ast_dir, scale, figures):
    rng = random.Random(20250131)
    cfg = write_config(
        tmp_path, model=tiny_ast_dir, settle_s=0.3, rescan_s=1.0, max_attempts=5,
        retry_backoff_s=0.1, retry_backoff_max_s=1.0, params={"save_visualizations": False, "opt_steps": 4},
    )
    inbox = tmp_path / "inbox"
    jobs = plan_jobs(scale.chaos_jobs, scale.full)
    dropped: dict[str, dict[str, str]] = {}  # job name → {file: sha256}
    pending = list(jobs)

    def drop_some(k: int) -> None:
        for name, audio, opts in pending[:k]:
            dropped[name] = drop(inbox, name, audio, **opts)
        del pending[:k]

    drop_some(len(jobs) // 3)
    kills = startup_kills = incarnations = 0
    unexpected_exits: list[str] = []
    t0 = time.monotonic()
    deadline = t0 + (3600 if scale.full else 600)
    logs: list[Path] = []
    while True:
        assert time.monotonic() < deadline, f"chaos did not finish: {_finished(tmp_path)}/{len(jobs)} jobs after {kills} kills"
        log = tmp_path / f"daemon-{incarnations:04d}.log"
        logs.append(log)
        d = Daemon(cfg, log)
        incarnations += 1
        try:
            work_left = _finished(tmp_path) < len(jobs) or pending
            if kills < scale.chaos_kills and work_left:
                if rng.random() < 0.15:  # during start-up: model load, warm-up, adoption of work/
                    time.sleep(rng.uniform(0.05, 1.5))
                    startup = True
                else:
                    d.wait_notify("READY=1", timeout=120)
                    if pending:
                        drop_some(max(1, len(jobs) // 10))
                    time.sleep(rng.uniform(*scale.chaos_gap_s))
                    startup = False
                if d.proc.poll() is not None:
                    unexpected_exits.append(f"{log.name}: exit {d.proc.returncode}")
                    continue
                d.signal(signal.SIGKILL)
                d.wait(30)
                kills += 1
                startup_kills += startup
                continue
            # The last daemon: no more kills; everything left must drain.
            d.wait_notify("READY=1", timeout=120)
            drop_some(len(pending))
            limit = time.monotonic() + (1800 if scale.full else 300)
            while time.monotonic() < limit:
                if _finished(tmp_path) >= len(jobs) and not os.listdir(inbox) and _work_jobs(tmp_path) == 0:
                    break
                assert d.proc.poll() is None, d.log_text()
                time.sleep(0.3)
            time.sleep(0.5)  # let a duplicate (there must be none) show itself
            d.signal(signal.SIGTERM)
            assert d.wait(60) == 0, d.log_text()
            break
        finally:
            d.close()
    elapsed = time.monotonic() - t0

    a = audit(tmp_path, [name for name, _, _ in jobs])
    # Inputs byte-identical to what was dropped, wherever the job ended.
    changed = []
    for name, files in dropped.items():
        base = tmp_path / ("outbox" if name in a.done else "failed") / (a.done.get(name) or name)
        for rel, digest in files.items():
            inner = rel.split("/", 1)[1] if "/" in rel else rel
            p = base / "inputs" / inner
            if not p.is_file() or sha256(p) != digest:
                changed.append(f"{name}: {rel}")
    errors = []
    for log in logs:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Traceback") or '"level":"error"' in line and "job failed" not in line:
                errors.append(f"{log.name}: {line[:300]}")
    fail_reasons = sorted({(e.get("error_type"), e.get("message", "")[:120]) for e in a.failed.values()})
    figures("crash chaos", **a.figures(), kills=kills, startup_kills=startup_kills, incarnations=incarnations,
            seconds=round(elapsed, 1), unexpected_exits=len(unexpected_exits), failure_reasons=fail_reasons[:5])
    assert not unexpected_exits, unexpected_exits
    assert a.problems == [], "\n".join(a.problems[:40])
    assert not changed, changed[:20]
    assert not errors, "\n".join(errors[:20])
    assert kills >= min(scale.chaos_kills, 5)
    # Kills interrupt attempts (each counts); a job fails only after max_attempts interruptions.
    for err in a.failed.values():
        assert err["error_type"] == "Interrupted" and err["attempt"] == 5, json.dumps(err)[:500]
