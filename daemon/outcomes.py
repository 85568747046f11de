"""What happens to a job after an attempt: commit to the outbox, retry later (with backoff, or
until the outbox has room again), or fail to ``failed/`` with an ``error.json`` — each recorded
in the ledger. Also the stop of an attempt by a shutdown (it does not count).

Part of :class:`daemon.service.Service` (the state — config, ledger, queue, counts — lives there).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from . import __version__, inbox, outbox, validate
from .job import Job, iso
from .ledger import DONE, FAILED, QUEUED, RETRIED
from .room import is_resource_error, no_room
from .worker import INPUT, RESOURCE, TRANSIENT, Outcome


class Outcomes:
    """Commit, retry, fail (mixed into :class:`daemon.service.Service`)."""

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if outcome.ok:
            try:
                self._commit(job, outcome)
                return
            except OSError as e:
                self.job_logs.register(job.id, job.claim.job_log)
                outbox.remove_tree(outbox.tmp_dir(self.cfg.outbox, job.id))
                why = e.strerror if is_resource_error(e) else no_room(self.cfg.outbox)
                message = f"no room to commit the results in {self.cfg.outbox}: {why} ({e})" if why else str(e)
                outcome = Outcome.failure(RESOURCE if why else TRANSIENT, e.__class__.__name__, message, "commit", duration_s=outcome.duration_s)
        self._after_failure(job, outcome)

    def _commit(self, job: Job, outcome: Outcome) -> None:
        cfg = self.cfg
        claim = job.claim
        tmp = outbox.tmp_dir(cfg.outbox, job.id)
        outbox.apply_umask(tmp, cfg.umask)
        outbox.place_inputs(claim.inputs, tmp / "inputs")
        self.log.info("job outputs complete; committing", job_id=job.id, job=inbox.display(claim.name),
                      duration_s=round(outcome.duration_s, 3))
        self.job_logs.unregister(job.id)
        _link_or_copy(claim.job_log, tmp / "job.log.jsonl")
        dest = outbox.commit(tmp, cfg.outbox, claim.name, claim.marker, job.id)
        self._record(job.id, DONE, finished_at=time.time(), result_dir=str(dest), summary=outcome.summary, run_s=round(outcome.duration_s, 4))
        claim.discard()
        self._counts["done"] += 1
        self._space_returned(cfg.outbox)
        self.log.info("job done", job_id=job.id, job=inbox.display(claim.name), result_dir=str(dest), attempt=job.attempt,
                      seconds=round(outcome.duration_s, 3), class_name=(outcome.summary or {}).get("class_name"))

    def _after_failure(self, job: Job, outcome: Outcome) -> None:
        err = dict(outcome.error or {})
        kind = err.get("kind", TRANSIENT)
        err["message"] = self._public_message(str(err.get("message", "")), job.claim)
        outbox.remove_tree(outbox.tmp_dir(self.cfg.outbox, job.id))
        record = {"attempt": job.attempt, "at": iso(time.time()), **{k: err.get(k) for k in ("type", "message", "stage", "kind")}}
        job.history.append(record)
        self._last_error = {"job_id": job.id, **record}
        if kind == INPUT:
            self._fail(job, self._error(INPUT, err.get("type", "Error"), err["message"], err.get("stage", "separate"), traceback=err.get("traceback")))
            return
        if kind == RESOURCE or job.attempt < self.cfg.max_attempts:
            if kind == RESOURCE:
                self._disk_full = {"path": str(self.cfg.outbox), "since": iso(time.time()), "error": err["message"]}
            delay = min(self.cfg.retry_backoff_s * 2 ** max(job.attempt - 1, 0), self.cfg.retry_backoff_max_s)
            job.next_at = time.monotonic() + delay
            job.resource_blocked = kind == RESOURCE
            job.probe_bytes = int(err.get("probe_bytes") or 0)
            job.file_bytes = int(err.get("file_bytes") or 0)
            self._record(job.id, RETRIED, detail=f"{err.get('type')}: {err['message']}", error=record)
            self._counts["retried"] += 1
            self.log.warning("job will be retried", job_id=job.id, attempt=job.attempt, max_attempts=self.cfg.max_attempts,
                             retry_in_s=round(delay, 1), error_type=err.get("type"), error=err["message"], kind=kind)
            self._queue[job.id] = job
            return
        msg = f"gave up after {job.attempt} attempts; last error: {err['message']}"
        self._fail(job, self._error(TRANSIENT, err.get("type", "Error"), msg, err.get("stage", "separate"), traceback=err.get("traceback")))

    def _requeue_interrupted(self, job: Job, outcome: Outcome) -> None:
        """Shutdown stopped an attempt: it does not count; the job waits in work/ for the next start."""
        outbox.remove_tree(outbox.tmp_dir(self.cfg.outbox, job.id))
        job.attempt -= 1
        self._record(job.id, QUEUED, attempt=job.attempt, detail="attempt interrupted by shutdown; resumes at the next start")
        self.log.warning("job interrupted by shutdown; left queued", job_id=job.id)
        self.job_logs.unregister(job.id)
        job.claim.release()

    def _error(self, kind: str, type_: str, message: str, stage: str, **more: Any) -> dict[str, Any]:
        return {"kind": kind, "type": type_, "message": message, "stage": stage, **{k: v for k, v in more.items() if v}}

    def _fail(self, job: Job, error: dict[str, Any]) -> None:
        """Move the job to failed/NAME/ with its inputs (byte-identical) and error.json."""
        cfg = self.cfg
        claim = job.claim
        now = time.time()
        doc = {
            "job": {"id": job.id, "name": inbox.display(claim.name), "kind": claim.kind},
            "job_id": job.id,
            "stage": error.get("stage"),
            "error_type": error.get("type"),
            "message": error.get("message"),
            "kind": error.get("kind"),
            "retryable": error.get("kind") != INPUT,
            "attempt": job.attempt,
            "max_attempts": cfg.max_attempts,
            "dropped_at": iso(claim.dropped_at) if claim.dropped_at else None,
            "claimed_at": iso(claim.claimed_at),
            "started_at": iso(job.started_at),
            "failed_at": iso(now),
            "inputs": job.inputs.info if job.inputs else self._input_hashes(claim),
            "history": job.history,
            "daemon": {"host": self.host, "pid": self.pid, "version": __version__},
        }
        if error.get("traceback"):
            doc["traceback"] = error["traceback"]
        self.log.error("job failed", job_id=job.id, job=inbox.display(claim.name), stage=doc["stage"], error_type=doc["error_type"], error=doc["message"], attempt=job.attempt)
        try:
            tmp = outbox.fresh_tmp(cfg.failed, job.id)
            if claim.inputs.exists():
                outbox.place_inputs(claim.inputs, tmp / "inputs")
            outbox.write_json_atomic(tmp / "error.json", doc)
            self.job_logs.unregister(job.id)
            _link_or_copy(claim.job_log, tmp / "job.log.jsonl")
            dest = outbox.commit(tmp, cfg.failed, claim.name, claim.marker, job.id)
        except OSError as e:  # failed/ itself is unwritable or full: keep the job, try again later
            self.job_logs.register(job.id, claim.job_log)
            outbox.remove_tree(outbox.tmp_dir(cfg.failed, job.id))
            self._disk_full = {"path": str(cfg.failed), "since": iso(now), "error": str(e)} if is_resource_error(e) else self._disk_full
            job.final_error = error
            job.resource_blocked = True
            job.next_at = time.monotonic() + min(max(self.cfg.retry_backoff_s, 1.0), self.cfg.retry_backoff_max_s or 1.0)
            self._queue[job.id] = job
            self.log.error("cannot write the failed job yet; will try again", job_id=job.id, error=str(e))
            return
        summary = {k: doc[k] for k in ("stage", "error_type", "message", "kind")}
        self._record(job.id, FAILED, finished_at=now, result_dir=str(dest), error=summary, attempt=job.attempt)
        claim.discard()
        self._counts["failed"] += 1
        self._space_returned(cfg.failed)
        self._last_error = {"job_id": job.id, "stage": doc["stage"], "type": doc["error_type"], "message": doc["message"], "at": iso(now)}

    def _input_hashes(self, claim: inbox.Claim) -> dict[str, Any]:
        """``{file: {sha256, bytes}}`` of a failed job's regular input files (links: their target
        text; nothing is followed), so anyone can check the inputs were kept byte-identical."""
        out: dict[str, Any] = {}
        for dirpath, _dirs, files in os.walk(claim.inputs):
            for n in sorted(files):
                p = Path(dirpath) / n
                st = os.lstat(p)
                key = self._public_path(p, claim)
                if stat.S_ISLNK(st.st_mode):
                    out[key] = {"symlink_to": inbox.display(os.readlink(p))}
                elif stat.S_ISREG(st.st_mode) and st.st_size <= self.cfg.max_bytes:
                    out[key] = {"sha256": validate.sha256_file(p), "bytes": st.st_size}
                else:
                    out[key] = {"bytes": st.st_size}
        return out

    def _public_path(self, p: Path, claim: inbox.Claim) -> str:
        return validate.public_path(p, claim)

    def _public_message(self, msg: str, claim: inbox.Claim) -> str:
        return validate.public_message(msg, claim, self.cfg.inbox)

    def _space_returned(self, folder: Path) -> None:
        """A write into ``folder`` succeeded: clear a disk-full condition reported for it."""
        if self._disk_full and self._disk_full.get("path") == str(folder):
            self.log.info("space is available again", path=str(folder), full_since=self._disk_full.get("since"))
            self._disk_full = None

    def _note_error(self, stage: str, e: BaseException, **more: Any) -> None:
        self._last_error = {"stage": stage, "type": e.__class__.__name__, "message": str(e), "at": iso(time.time()), **{k: inbox.display(str(v)) for k, v in more.items()}}

    def _ledger_get(self, job_id: str) -> dict[str, Any] | None:
        try:
            return self.ledger.get(job_id)
        except Exception as e:
            self.log.error("ledger read failed", job_id=job_id, error=str(e))
            return None

    def _record(self, job_id: str, state: str, *, detail: str | None = None, owner: str | None = None, **cols: Any) -> None:
        """A ledger transition that never takes the daemon down (a full disk, a locked file)."""
        try:
            self.ledger.transition(job_id, state, detail=detail, owner=owner, **cols)
        except Exception as e:
            self.log.error("ledger write failed", job_id=job_id, state=state, error=f"{e.__class__.__name__}: {e}")


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copyfile(src, dst)
