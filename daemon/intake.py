"""The inbox side of the daemon: when to scan, settling and probing candidates, claiming them,
failing bad ones at once, and adopting the jobs a dead daemon left in ``work/``.

Part of :class:`daemon.service.Service` (the state — config, ledger, queue, verdicts — lives there).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sourcesep import InputError

from . import inbox, outbox
from .admission import AudioGate
from .job import Job, iso
from .ledger import DONE, FAILED, RETRIED, RUNNING
from .room import is_resource_error
from .worker import INPUT, TRANSIENT


class Intake:
    """Scanning, claiming and adoption (mixed into :class:`daemon.service.Service`)."""

    def _should_scan(self, now: float) -> bool:
        since = now - self._last_scan
        # A big inbox costs tens of ms per scan: never spend more than ~20% of the loop on it.
        floor = max(0.05, 5 * self._scan_cost)
        if self._dirty and since >= max(floor, 0.2):
            return True
        if self.once or any(v.status == "pending" for v in self._verdicts.values()):
            return since >= max(min(self.cfg.settle_s / 3, 1.0), floor)
        return since >= self.cfg.rescan_s

    def _probe(self, path: Path) -> Any:
        """The header checks of :mod:`daemon.admission` (size, duration, channels, rate,
        truncation), cached per file version."""
        return self.gate.check(path)

    def _scan(self, now: float) -> None:
        self._dirty = False
        self._last_scan = now
        self._scans += 1
        t0 = time.perf_counter()
        try:
            self._scan_inbox(now)
        finally:
            self._scan_cost = time.perf_counter() - t0

    def _scan_inbox(self, now: float) -> None:
        try:
            cands = inbox.scan(self.cfg.inbox)
        except OSError as e:
            self.log.error("cannot scan the inbox", inbox=str(self.cfg.inbox), error=str(e))
            return
        self.settler.observe(cands, now)
        wall = time.time()
        verdicts = {}
        for key, cand in cands.items():
            try:
                verdicts[key] = inbox.assess(
                    cand,
                    self.cfg.inbox,
                    stable_s=self.settler.stable_for(key, now),
                    settle_s=self.cfg.settle_s,
                    orphan_timeout_s=self.cfg.orphan_timeout_s,
                    now_wall=wall,
                    probe=self._probe,
                    input_error=InputError,
                )
            except OSError:
                continue  # claimed by someone else while we looked; seen again next scan
        self._candidates, self._verdicts = cands, verdicts
        for key in [k for k in self._claim_errors if k not in cands]:
            del self._claim_errors[key]
        self.gate.keep_only(AudioGate.key_of(e) for c in cands.values() for e in c.entries)
        if now - self._last_adopt >= self.cfg.rescan_s:
            self._adopt_all()

    def _claim_blocked(self, key: tuple[str, str]) -> bool:
        """A candidate whose claim failed (unwritable work/, odd filesystem) waits a rescan period."""
        t = self._claim_errors.get(key)
        return t is not None and time.monotonic() - t < self.cfg.rescan_s

    def _fail_bad_candidates(self, limit: int = 50) -> None:
        for key, v in list(self._verdicts.items()):
            if limit <= 0:
                break
            if v.status != "bad" or self._claim_blocked(key):
                continue
            cand = self._candidates.pop(key)
            del self._verdicts[key]
            claim = self._claim(cand)
            if claim is None:
                continue
            limit -= 1
            job = Job(claim)
            self._fail(job, self._error(INPUT, "InputError", self._public_message(v.reason or "bad input", claim), "inbox"))

    def _claim(self, cand: inbox.Candidate) -> inbox.Claim | None:
        try:
            claim = inbox.claim(cand, self.cfg.inbox, self.cfg.work, self.owner)
        except OSError as e:
            self._claim_errors[cand.key] = time.monotonic()
            self._note_error("claim", e, name=cand.name)
            self.log.error("cannot claim job", job=inbox.display(cand.name), error=str(e))
            if is_resource_error(e):
                self._disk_full = {"path": str(self.cfg.work), "since": iso(time.time()), "error": str(e)}
            return None
        if claim is None:
            self.log.debug("lost the claim race", job=inbox.display(cand.name))
            return None
        self._space_returned(self.cfg.work)
        self.job_logs.register(claim.id, claim.job_log)
        try:
            self.ledger.add(
                claim.id,
                name=inbox.display(claim.name),
                kind=claim.kind,
                owner=self.owner,
                claimed_at=claim.claimed_at,
                dropped_at=claim.dropped_at,
                attempt=0,
            )
        except Exception as e:
            self.log.error("ledger write failed", job_id=claim.id, error=str(e))
        self.log.info("job claimed", job_id=claim.id, job=inbox.display(claim.name), kind=claim.kind, sources=[inbox.display(s) for s in claim.sources])
        return claim

    def _adopt_all(self) -> None:
        """Resume jobs left in work/ by a daemon that died (their lock is free)."""
        self._last_adopt = time.monotonic()
        try:
            inbox.remove_stale_stages(self.cfg.work, self.owner)
            dirs = inbox.job_dirs(self.cfg.work)
        except OSError as e:
            self.log.error("cannot list the work folder", error=str(e))
            return
        mine = set(self._queue) | set(self._running)
        for d in dirs:
            if d.name in mine:
                continue
            try:
                claim = inbox.adopt(d, self.cfg.inbox, self.owner)
            except OSError as e:
                self.log.error("cannot adopt job", work_dir=str(d), error=str(e))
                continue
            if claim is not None:
                self._resume(claim)

    def _resume(self, claim: inbox.Claim) -> None:
        self.job_logs.register(claim.id, claim.job_log)
        log = self.log.bind(job_id=claim.id, job=inbox.display(claim.name))
        row = self._ledger_get(claim.id)
        done_dir = outbox.committed_folder(claim.marker, claim.id)
        if done_dir is not None:
            state = DONE if (done_dir / "event.json").exists() else FAILED
            if not row or row.get("state") not in (DONE, FAILED):
                self._record(claim.id, state, finished_at=time.time(), result_dir=str(done_dir), detail="committed before the previous daemon died; recorded on resume")
            log.info("job was already committed; cleaning up", result_dir=str(done_dir))
            self.job_logs.unregister(claim.id)
            claim.discard()
            return
        outbox.remove_tree(outbox.tmp_dir(self.cfg.outbox, claim.id))
        outbox.remove_tree(outbox.tmp_dir(self.cfg.failed, claim.id))
        if row is None:
            try:
                self.ledger.add(claim.id, name=inbox.display(claim.name), kind=claim.kind, owner=self.owner,
                                claimed_at=claim.claimed_at, dropped_at=claim.dropped_at, attempt=0, detail="adopted from work/")
            except Exception as e:
                log.error("ledger write failed", error=str(e))
        job = Job(claim, attempt=int(row.get("attempt") or 0) if row else 0, next_at=time.monotonic())
        if row and row.get("state") == RUNNING:
            detail = f"attempt {job.attempt} was interrupted: the daemon running it ({row.get('owner')}) died"
            log.warning("resuming an interrupted job", previous_owner=row.get("owner"), attempt=job.attempt)
            job.history.append({"attempt": job.attempt, "type": "Interrupted", "message": detail, "kind": TRANSIENT})
            if job.attempt >= self.cfg.max_attempts:
                self._fail(job, self._error(TRANSIENT, "Interrupted", f"{detail}; gave up after {job.attempt} attempts (does this job crash the daemon?)", "separate"))
                return
            self._record(claim.id, RETRIED, owner=self.owner, detail=detail)
        else:
            if row is not None:
                try:
                    self.ledger.update(claim.id, owner=self.owner)
                except Exception as e:
                    log.error("ledger write failed", error=str(e))
            log.info("resuming a queued job", previous_owner=row.get("owner") if row else None)
        self._queue[job.id] = job

    def _next_ready(self) -> inbox.Candidate | None:
        ready = [k for k, v in self._verdicts.items() if v.status == "ready" and not self._claim_blocked(k)]
        if not ready:
            return None
        key = min(ready, key=lambda k: (self._candidates[k].arrived, k))
        del self._verdicts[key]
        return self._candidates.pop(key)
