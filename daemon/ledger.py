"""The job ledger: every job and every state transition, in SQLite (WAL, busy timeout).

The folders are the source of truth for exactly-once (a job is done when its outbox folder exists);
the ledger is the record: timestamps, attempts, input hashes, errors, summaries. Several daemon
processes on one host may share it (WAL + ``busy_timeout``). Network filesystems do not support
WAL's shared memory: give each host its own ledger there (``ledger:`` in the config).

States: ``queued`` (claimed, waiting) → ``running`` (an attempt) → ``done`` | ``failed`` |
``retried`` (a transient error; the job waits for its backoff, then runs again).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

QUEUED, RUNNING, DONE, FAILED, RETRIED = "queued", "running", "done", "failed", "retried"
STATES = (QUEUED, RUNNING, DONE, FAILED, RETRIED)
WAITING = (QUEUED, RETRIED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    dropped_at REAL,
    claimed_at REAL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    owner TEXT,
    inputs TEXT,
    overrides TEXT,
    result_dir TEXT,
    error TEXT,
    summary TEXT,
    queue_wait_s REAL,
    run_s REAL
);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL,
    attempt INTEGER,
    owner TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at);
"""

_JSON_COLS = ("inputs", "overrides", "error", "summary")
_COLS = (
    "name", "kind", "attempt", "dropped_at", "claimed_at", "started_at", "finished_at", "owner",
    "inputs", "overrides", "result_dir", "error", "summary", "queue_wait_s", "run_s",
)


def _enc(col: str, value: Any) -> Any:
    if col in _JSON_COLS and value is not None:
        return json.dumps(value, ensure_ascii=True, default=str)
    return value


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    for col in _JSON_COLS:
        if d.get(col):
            try:
                d[col] = json.loads(d[col])
            except ValueError:
                pass
    return d


class Ledger:
    """Thread-safe handle: one SQLite connection per thread, opened on first use."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0, readonly: bool = False) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.readonly = readonly
        self._local = threading.local()
        if not readonly:
            # idempotent; executescript manages its own transaction
            self._while_locked(lambda: self._db().executescript(_SCHEMA))

    def _while_locked(self, fn: Any) -> Any:
        """Run ``fn``, retrying while SQLite reports the database locked, up to the busy timeout.

        Two daemons opening a new ledger at the same moment race to switch it to WAL and create
        the tables; SQLite answers one of them "database is locked" at once, without waiting for
        its busy timeout, when the other holds the lock those steps need.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # ------------------------------------------------------------------ connections
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if self.readonly:
                uri = f"file:{self.path}?mode=ro"
                db = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s, isolation_level=None)
            else:
                db = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s, isolation_level=None)
                self._while_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> "Ledger._Tx":
        return Ledger._Tx(self._db())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ writes
    def add(self, job_id: str, *, name: str, kind: str, owner: str, detail: str | None = None, **cols: Any) -> None:
        """Record a newly claimed job as ``queued`` (no-op for the row if it already exists)."""
        now = time.time()
        values = {"name": name, "kind": kind, "owner": owner, **cols}
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._tx() as db:
            cur = db.execute(
                f"INSERT OR IGNORE INTO jobs (id, state, updated_at, {names}) VALUES (?, ?, ?, {marks})",
                (job_id, QUEUED, now, *(_enc(k, v) for k, v in values.items())),
            )
            if cur.rowcount:
                db.execute(
                    "INSERT INTO transitions (job_id, state, at, attempt, owner, detail) VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, QUEUED, now, values.get("attempt", 0), owner, detail),
                )

    def transition(self, job_id: str, state: str, *, owner: str | None = None, detail: str | None = None, **cols: Any) -> None:
        """Move a job to ``state`` (recorded with a timestamp) and update any other columns."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        unknown = set(cols) - set(_COLS)
        if unknown:
            raise ValueError(f"unknown ledger columns {sorted(unknown)}")
        now = time.time()
        if owner is not None:
            cols["owner"] = owner
        sets = ", ".join(["state = ?", "updated_at = ?", *(f"{k} = ?" for k in cols)])
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (state, now, *(_enc(k, v) for k, v in cols.items()), job_id))
            attempt = db.execute("SELECT attempt FROM jobs WHERE id = ?", (job_id,)).fetchone()
            db.execute(
                "INSERT INTO transitions (job_id, state, at, attempt, owner, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, state, now, attempt[0] if attempt else None, owner, detail),
            )

    def update(self, job_id: str, **cols: Any) -> None:
        """Set columns without a state change (e.g. input hashes once validated)."""
        unknown = set(cols) - set(_COLS)
        if unknown:
            raise ValueError(f"unknown ledger columns {sorted(unknown)}")
        if not cols:
            return
        sets = ", ".join(["updated_at = ?", *(f"{k} = ?" for k in cols)])
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (time.time(), *(_enc(k, v) for k, v in cols.items()), job_id))

    # ------------------------------------------------------------------ reads
    def get(self, job_id: str) -> dict[str, Any] | None:
        r = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(r) if r else None

    def history(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT * FROM transitions WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        out = {s: 0 for s in STATES}
        out.update({r[0]: r[1] for r in rows})
        return out

    def in_states(self, states: Iterable[str], limit: int = 1000) -> list[dict[str, Any]]:
        states = list(states)
        marks = ", ".join("?" for _ in states)
        rows = self._db().execute(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY claimed_at LIMIT ?", (*states, limit)
        ).fetchall()
        return [_row(r) for r in rows]

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT * FROM jobs ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
        return [_row(r) for r in rows]

    def finished_between(self, t0: float, t1: float) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT * FROM jobs WHERE state IN (?, ?) AND finished_at >= ? AND finished_at < ? ORDER BY finished_at",
            (DONE, FAILED, t0, t1),
        ).fetchall()
        return [_row(r) for r in rows]

    def transitions_count(self, job_id: str, state: str) -> int:
        r = self._db().execute("SELECT COUNT(*) FROM transitions WHERE job_id = ? AND state = ?", (job_id, state)).fetchone()
        return int(r[0])
