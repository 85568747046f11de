"""What must hold after any torture: every job exactly once (outbox) or in failed/ with a reason,
nothing half-written, nothing left behind, and a ledger that agrees with the folders."""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = ("done", "failed")
# What may remain in work/ once every job is finished: the ledger and the heartbeat files.
WORK_FILES = ("state.db", "state.db-wal", "state.db-shm")


@dataclass
class Audit:
    """The outcome of :func:`audit`. ``problems`` is empty when every invariant holds."""

    expected: int
    done: dict[str, str] = field(default_factory=dict)  # job name → outbox folder
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # job name → error.json
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ledger_rows: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "jobs": self.expected,
            "done": len(self.done),
            "failed": len(self.failed),
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "problems": len(self.problems),
        }


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ledger(db: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        jobs = [dict(r) for r in con.execute("SELECT * FROM jobs")]
        trans = [dict(r) for r in con.execute("SELECT * FROM transitions ORDER BY seq")]
    finally:
        con.close()
    return jobs, trans


def audit(root: Path, expected: list[str], *, inbox_empty: bool = True, status_files: tuple[str, ...] = ("status.json",),
          outbox: Path | None = None, failed: Path | None = None) -> Audit:
    """Check the daemon's folders under ``root`` (inbox, outbox, work, failed; ``outbox`` and
    ``failed`` may live elsewhere) after it stopped.

    ``expected``: the job names dropped (as the daemon names them: ``NAME`` of ``NAME.mix.wav``
    or of the folder ``NAME/``). Every one must be in exactly one outbox folder or one failed/
    folder; the ledger must list exactly those jobs, each finished, with its folder.
    """
    a = Audit(expected=len(expected))
    work, inbox = root / "work", root / "inbox"
    outbox, failed = outbox or root / "outbox", failed or root / "failed"
    seen: Counter[str] = Counter()
    ids: dict[str, tuple[str, Path]] = {}  # job id → (state, folder)

    for entry in sorted(outbox.iterdir()):
        if entry.name == "_reports":
            continue
        if entry.name.startswith("."):
            a.problems.append(f"outbox/{entry.name}: left behind (hidden/.tmp-* folder)")
            continue
        ev = _json(entry / "event.json")
        if ev is None or not isinstance(ev.get("job"), dict):
            a.problems.append(f"outbox/{entry.name}: no readable event.json with a job object")
            continue
        missing = [f for f in (ev.get("outputs") or {}).values() if not (entry / f).is_file()]
        if missing:
            a.problems.append(f"outbox/{entry.name}: event.json lists missing files {missing}")
        if not (entry / "inputs").is_dir() or not any((entry / "inputs").iterdir()):
            a.problems.append(f"outbox/{entry.name}: no inputs/")
        name, job_id = ev["job"]["name"], ev["job"]["id"]
        seen[name] += 1
        a.done[name] = entry.name
        if job_id in ids:
            a.problems.append(f"job id {job_id} in two folders: {ids[job_id][1]} and {entry}")
        ids[job_id] = ("done", entry)

    for entry in sorted(failed.iterdir()):
        if entry.name.startswith("."):
            a.problems.append(f"failed/{entry.name}: left behind (hidden/.tmp-* folder)")
            continue
        err = _json(entry / "error.json")
        if err is None or not isinstance(err.get("job"), dict):
            a.problems.append(f"failed/{entry.name}: no readable error.json")
            continue
        if not str(err.get("message") or "").strip() or not err.get("stage") or not err.get("error_type"):
            a.problems.append(f"failed/{entry.name}: error.json without a reason: {err}")
        name, job_id = err["job"]["name"], err["job"]["id"]
        seen[name] += 1
        a.failed[name] = err
        if job_id in ids:
            a.problems.append(f"job id {job_id} in two folders: {ids[job_id][1]} and {entry}")
        ids[job_id] = ("failed", entry)

    want = set(expected)
    a.lost = sorted(want - set(seen))
    a.duplicated = sorted(n for n, c in seen.items() if c > 1)
    unexpected = sorted(set(seen) - want)
    for n in a.lost:
        a.problems.append(f"lost: {n!r} is neither in outbox/ nor in failed/")
    for n in a.duplicated:
        a.problems.append(f"duplicated: {n!r} has {seen[n]} result folders")
    for n in unexpected:
        a.problems.append(f"unexpected job {n!r} in the results")

    for entry in sorted(work.iterdir()):
        if entry.name in WORK_FILES or entry.name in status_files:
            continue
        what = "folder" if entry.is_dir() and not entry.is_symlink() else "file"
        a.problems.append(f"work/{entry.name}: {what} left behind")

    if inbox_empty:
        left = sorted(os.listdir(inbox))
        if left:
            a.problems.append(f"inbox not empty: {left[:10]}")

    db = work / "state.db"
    if not db.exists():
        a.problems.append("no ledger work/state.db")
        return a
    jobs, trans = _ledger(db)
    a.ledger_rows = len(jobs)
    by_id = {r["id"]: r for r in jobs}
    for job_id, (state, folder) in ids.items():
        row = by_id.get(job_id)
        if row is None:
            a.problems.append(f"ledger: no row for job {job_id} ({folder.name})")
            continue
        if row["state"] != state:
            a.problems.append(f"ledger: job {job_id} ({folder.name}) is {row['state']!r}, its folder says {state!r}")
        if row["result_dir"] != str(folder):
            a.problems.append(f"ledger: job {job_id} result_dir {row['result_dir']!r}, folder is {str(folder)!r}")
    for row in jobs:
        if row["id"] not in ids:
            a.problems.append(f"ledger: job {row['id']} ({row['name']!r}, {row['state']}) has no result or failed folder")
    terminal = Counter(t["job_id"] for t in trans if t["state"] in TERMINAL)
    for job_id in ids:
        if terminal[job_id] != 1:
            a.problems.append(f"ledger: job {job_id} has {terminal[job_id]} done/failed transitions (want 1)")
    return a
