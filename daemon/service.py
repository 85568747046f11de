"""The daemon process: start-up, the main loop, signals, starting attempts and config reloads.

One thread (the main one) takes every decision: it scans the inbox, settles and claims jobs,
starts attempts, collects their outcomes, commits results and records the ledger. Other threads
only set flags and wake it: the watchdog observer (inotify events), the APScheduler jobs (rescan,
window changes) and the signal handlers (through ``signal.set_wakeup_fd``). The heartbeat and
the nightly report run in scheduler threads and only read (the ledger has one connection per
thread) and write their own files.

Signals: SIGTERM/SIGINT stop taking jobs, let running attempts finish for ``grace_s``, then stop
them and leave them queued for the next start (exit 0; a second signal skips the grace).
SIGHUP reloads the config (the model only if model/device/precision/offline changed); an invalid
new config is logged and the current one kept.

The :class:`Service` is assembled from parts named after what they do: :class:`~daemon.intake.Intake`
(inbox scans, claims, adoption of a dead daemon's jobs), :class:`~daemon.outcomes.Outcomes`
(commit, retry or fail after an attempt) and :class:`~daemon.status.Status` (status.json and the
watchdog). They share the Service's state; only the main thread calls them (the heartbeat reads a
snapshot).
"""

from __future__ import annotations

import datetime as dt
import os
import selectors
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from sourcesep import InputError, ModelError, ParamError, Separator
from sourcesep.audio import probe as probe_audio
from sourcesep.separator import resolve_device

from . import __version__, inbox, logs, outbox, report, schedule, validate
from .admission import AudioGate, Limits
from .config import ConfigError, DaemonConfig, effective_workers, load_config, prepare_folders
from .intake import Intake
from .job import Job, iso
from .ledger import RUNNING, Ledger
from .notify import sd_notify, watchdog_interval_s
from .outcomes import Outcomes
from .room import is_resource_error, remove_stale_probes, why_no_room
from .status import Status
from .worker import INPUT, RESOURCE, TRANSIENT, JobSpec, Outcome, Running, choose_isolation, start_fork, start_thread

EXIT_OK, EXIT_CONFIG, EXIT_MODEL, EXIT_RESTART = 0, 2, 3, 75


class Service(Intake, Outcomes, Status):
    """The daemon. ``once=True`` processes what the inbox holds and returns (no scheduler, no
    observer, processing windows ignored)."""

    def __init__(
        self,
        cfg: DaemonConfig,
        config_path: str | os.PathLike | None = None,
        *,
        once: bool = False,
        allow_root: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.once = once
        self.allow_root = allow_root
        self.stream = stream if stream is not None else sys.stdout
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}"
        self.job_logs = logs.JobLogs()
        self.log = logs.get_logger()
        self.ledger: Ledger | None = None
        self.sep: Any = None
        self.isolation = "fork"
        self.workers = 1
        self.settler = inbox.Settler()
        self._candidates: dict[tuple[str, str], inbox.Candidate] = {}
        self._verdicts: dict[tuple[str, str], inbox.Verdict] = {}
        self.gate = AudioGate(probe_audio, _limits(cfg))
        self._claim_errors: dict[tuple[str, str], float] = {}  # candidate → monotonic time of a failed claim
        self._queue: dict[str, Job] = {}  # claimed, waiting for an attempt
        self._running: dict[str, tuple[Job, Running]] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r = self._wake_w = -1
        self._dirty = True
        self._last_scan = -1e9
        self._last_adopt = -1e9
        self._scans = 0
        self._scan_cost = 0.0
        self._stop_count = 0
        self._reload_requested = False
        self._draining = False
        self._drain_deadline = 0.0
        self._exit_code = EXIT_OK
        self._window_open = True
        self._tick = time.monotonic()
        self._busy = False  # a long step in the main loop (model reload): keep the watchdog fed
        self._started_wall = time.time()
        self._started = time.monotonic()
        self._counts = {"done": 0, "failed": 0, "retried": 0}
        self._last_error: dict[str, Any] | None = None
        self._disk_full: dict[str, Any] | None = None
        self._reloads = 0
        self._snapshot: dict[str, Any] = {}
        self._snap_lock = threading.Lock()
        self._observer: Any = None
        self._schedule: schedule.Schedule | None = None
        self._watchdog_s = watchdog_interval_s()

    # =========================================================================== start / stop
    def run(self) -> int:
        """Start, process until told to stop (or, with ``once``, until the inbox is done).

        Raises :class:`ConfigError` when the configured folders are unusable (the CLI prints it
        like any other config error: one line on stderr, exit 2)."""
        cfg = self.cfg
        logs.configure(cfg.log_level, cfg.log_format, self.stream, self.job_logs)
        if os.geteuid() == 0 and not (cfg.allow_root or self.allow_root):
            self.log.error(
                "refusing to run as root: run as a dedicated user (see systemd/sourcesep.service), "
                "or set 'allow_root: true' in the config / pass --allow-root",
                config=str(self.config_path),
            )
            return EXIT_CONFIG
        os.umask(cfg.umask)
        prepare_folders(cfg, self._config_name())
        try:
            # A daemon killed while rewriting status.json or probing for room leaves litter.
            outbox.remove_stale_json_tmp(cfg.status_path, self.pid)
            for folder in (cfg.outbox, cfg.failed):
                remove_stale_probes(folder)
            self.ledger = Ledger(cfg.ledger_path)
        except Exception as e:  # sqlite3.Error, OSError
            self.log.error("cannot open the ledger", path=str(cfg.ledger_path), error=f"{e.__class__.__name__}: {e}")
            return EXIT_CONFIG
        try:
            self.sep, self.isolation, self.workers = self._load_model(cfg)
        except (ModelError, ParamError) as e:
            self.log.error(
                "cannot load the model",
                model=cfg.model,
                error=str(e),
                hint=f"set 'model:' in {self.config_path or 'the config'} to a local save_pretrained "
                "directory with 'offline: true', or to 'none' (weights-free)",
            )
            return EXIT_MODEL
        self._note_unused_params(cfg)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        handlers = self._install_signals()
        try:
            self._window_open = schedule.in_windows(dt.datetime.now(), cfg.windows)
            if not self.once:
                self._start_observer()
                self._schedule = schedule.Schedule(self)
                self._schedule.apply(cfg, self._heartbeat_period())
            self._adopt_all()
            self.log.info(
                "daemon started",
                version=__version__,
                pid=self.pid,
                mode="once" if self.once else "run",
                model=cfg.model,
                isolation=self.isolation,
                workers=self.workers,
                inbox=str(cfg.inbox),
                outbox=str(cfg.outbox),
                window_open=self._window_open,
            )
            self._publish_snapshot()
            self.heartbeat()
            sd_notify(f"READY=1\nMAINPID={self.pid}\nSTATUS=watching {cfg.inbox}")
            self._loop()
        finally:
            sd_notify("STOPPING=1")
            if self._schedule is not None:
                self._schedule.shutdown()
            self._stop_observer()
            for job in list(self._queue.values()):
                self.job_logs.unregister(job.id)
                job.claim.release()
            self._queue.clear()
            self._publish_snapshot(state="stopped")
            self.heartbeat(ping=False)
            for s, h in handlers.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(-1)
            batching = self.sep.batching_stats() if self.sep is not None else None
            self.log.info("daemon stopped", exit_code=self._exit_code, **self._counts,
                          **({"batching": batching} if batching is not None else {}))
        return self._exit_code

    def _config_name(self) -> str:
        """The config file as the operator named it: it leads every config error message."""
        return str(self.config_path) if self.config_path else "config"

    def _load_model(self, cfg: DaemonConfig) -> tuple[Any, str, int]:
        """(separator, isolation, workers) for ``cfg``: the model loaded and warmed up."""
        try:
            choice = choose_isolation(cfg.isolation, cfg.device, cfg.threads)
        except ValueError as e:
            raise ConfigError(f"{self._config_name()}: {e}") from None
        workers = effective_workers(cfg, choice.isolation)
        batch_ms, batch_why = self._batching(cfg, choice.isolation, workers)
        t0 = time.perf_counter()
        sep = Separator(
            model=cfg.model,
            device=cfg.device,
            threads=choice.parent_threads,
            precision=cfg.precision,
            offline=cfg.offline,
            batch_wait_ms=batch_ms,
        )
        self.log.info("model loaded", model=cfg.model, seconds=round(time.perf_counter() - t0, 3), isolation=choice.isolation,
                      why=choice.reason, batch_windows="on" if batch_ms else "off", batch_wait_ms=batch_ms, batch_why=batch_why)
        self._warm_up(sep, cfg)
        return sep, choice.isolation, workers

    def _batching(self, cfg: DaemonConfig, isolation: str, workers: int) -> tuple[float | None, str]:
        """The forward batching wait (ms) for ``cfg`` with ``isolation`` and ``workers``, None for
        off, and why. Logs a warning when ``batch_windows: on`` cannot apply."""
        wait, why = batching_choice(cfg, isolation, workers)
        if cfg.batch_windows == "on" and wait is None:
            self.log.warning("batch_windows: on has no effect", why=why)
        return wait, why

    def _warm_up(self, sep: Any, cfg: DaemonConfig) -> None:
        """One tiny separation in the daemon itself, so lazy imports and first-call set-up
        (plotting, filterbanks, kernels) happen once here and every forked job inherits them."""
        import tempfile

        import numpy as np

        t0 = time.perf_counter()
        sr = 16000
        t = np.arange(2 * sr) / sr
        tone = 0.3 * np.sin(2 * np.pi * 440.0 * t)
        mix = (0.02 * np.random.default_rng(0).standard_normal(t.size) + tone * ((t > 0.5) & (t < 1.5))).astype(np.float32)
        params = {k: v for k, v in cfg.params.items() if k != "segments"}
        try:
            with tempfile.TemporaryDirectory(prefix="sourcesep-warmup-") as d:
                sep.separate(mix, tone[:sr].astype(np.float32), source="warm-up", **params).write(d)
        except Exception as e:  # a warm-up problem must not stop the daemon; jobs report their own
            self.log.warning("warm-up separation failed", error=f"{e.__class__.__name__}: {e}")
            return
        self.log.info("warm-up done", seconds=round(time.perf_counter() - t0, 3))

    def _install_signals(self) -> dict[int, Any]:
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # operators: stack dump on SIGUSR1
        previous = {}
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[s] = signal.signal(s, self._on_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        return previous

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Runs in the main thread between bytecodes: only set flags; the loop acts on them.
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stop_count += 1

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    # =========================================================================== observer
    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer

            service = self

            class _Handler(FileSystemEventHandler):
                def on_any_event(self, event: Any) -> None:
                    service.request_rescan()

            obs = Observer()
            obs.schedule(_Handler(), str(self.cfg.inbox), recursive=True)
            obs.daemon = True
            obs.start()
            self._observer = obs
        except Exception as e:  # inotify limits, unsupported filesystem: the rescan still works
            self._observer = None
            self.log.warning("file watcher unavailable; relying on periodic rescans", error=str(e), rescan_s=self.cfg.rescan_s)

    def _stop_observer(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:
                pass
            self._observer = None

    # =========================================================================== scheduler hooks
    def request_rescan(self) -> None:
        self._dirty = True
        self._wake()

    def window_changed(self, open_: bool) -> None:
        now_open = schedule.in_windows(dt.datetime.now(), self.cfg.windows)
        if now_open != self._window_open:
            self._window_open = now_open
            self.log.info("processing window " + ("opened" if now_open else "closed"))
        self._wake()

    def run_retention(self) -> None:
        days = self.cfg.retention_days
        if not days:
            return
        try:
            deleted = schedule.sweep([self.cfg.outbox, self.cfg.failed], days)
        except OSError as e:
            self.log.error("retention cleanup failed", error=str(e))
            return
        if deleted:
            self.log.info("retention cleanup", deleted=len(deleted), older_than_days=days)

    def run_report(self, day: dt.date | None = None) -> Path | None:
        if not self.cfg.report_time or self.ledger is None:
            return None
        day = day or dt.date.today()
        start, end = schedule.report_period(day, self.cfg.report_time)
        try:
            path = report.write_report(self.ledger, self.cfg.outbox, day, start, end)
        except Exception as e:  # never let a report take the daemon down
            self.log.error("nightly report failed", error=f"{e.__class__.__name__}: {e}")
            return None
        self.log.info("nightly report written", path=str(path))
        return path


    # =========================================================================== main loop
    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            self._tick = now
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            if self._stop_count and not self._draining:
                self._begin_drain("signal")
            self._check_timeouts(now)
            if self._draining:
                if not self._running:
                    break
                if now >= self._drain_deadline or self._stop_count >= 2:
                    for _job, r in list(self._running.values()):
                        r.kill("daemon shutdown")
                    self._collect_all_killed()
                    break
            else:
                if self._should_scan(now):
                    self._scan(now)
                self._fail_bad_candidates()
                self._start_jobs(now)
                if self.once and self._once_done(now):
                    break
            self._publish_snapshot()
            self._wait(self._wait_timeout(now))

    def _begin_drain(self, why: str) -> None:
        self._draining = True
        self._drain_deadline = time.monotonic() + self.cfg.grace_s
        for job in list(self._queue.values()):  # not started: leave them in work/ for the next start
            self.job_logs.unregister(job.id)
            job.claim.release()
        self._queue.clear()
        self.log.info("stopping: no new jobs", reason=why, running=len(self._running), grace_s=self.cfg.grace_s)
        sd_notify("STOPPING=1")

    def _wait_timeout(self, now: float) -> float:
        t = 1.0
        if any(v.status == "pending" for v in self._verdicts.values()):
            t = min(t, max(self.cfg.settle_s / 4, 0.05))
        if self._queue:
            t = min(t, max(min(j.next_at for j in self._queue.values()) - now, 0.05))
        for _job, r in self._running.values():
            t = min(t, max(r.started + self.cfg.job_timeout_s - now, 0.05))
        if self._draining:
            t = min(t, max(self._drain_deadline - now, 0.05))
        return max(t, 0.02)

    def _wait(self, timeout: float) -> None:
        try:
            events = self._selector.select(timeout)
        except InterruptedError:
            return
        for key, _ in events:
            if key.data is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                continue
            job_id = key.data
            entry = self._running.get(job_id)
            if entry is None:
                continue
            job, r = entry
            if r.read():
                self._selector.unregister(r.fd)
                del self._running[job_id]
                self._finish(job, r.outcome())

    def _check_timeouts(self, now: float) -> None:
        for job_id, (job, r) in list(self._running.items()):
            if r.killed_for is None and now - r.started > self.cfg.job_timeout_s:
                self.log.error("job timed out", job_id=job_id, timeout_s=self.cfg.job_timeout_s, attempt=job.attempt)
                r.kill("timeout")
                if r.pid is None:  # a thread cannot be stopped: restart the whole daemon
                    self._selector.unregister(r.fd)
                    del self._running[job_id]
                    self._finish(job, r.outcome())
                    self._exit_code = EXIT_RESTART
                    self.log.error("a job thread is stuck; the daemon exits for a clean restart", exit_code=EXIT_RESTART)
                    if not self._draining:
                        self._begin_drain("stuck job thread")

    def _collect_all_killed(self) -> None:
        for job_id, (job, r) in list(self._running.items()):
            try:
                self._selector.unregister(r.fd)
            except (KeyError, ValueError):
                pass
            del self._running[job_id]
            outcome = r.outcome()
            self._requeue_interrupted(job, outcome)

    # =========================================================================== starting jobs
    def _start_jobs(self, now: float) -> None:
        # Jobs whose failure could not be written yet (full disk) are retried first.
        for job in [j for j in self._queue.values() if j.final_error and j.next_at <= now]:
            del self._queue[job.id]
            self._fail(job, job.final_error)
        if not (self._window_open or self.once):
            return
        while len(self._running) < self.workers:
            job = self._next_queued(now)
            if job is None:
                cand = self._next_ready()
                if cand is None:
                    return
                claim = self._claim(cand)
                if claim is None:
                    continue
                job = Job(claim)
            if not job.validated and not self._validate(job):
                continue
            self._launch(job)

    def _next_queued(self, now: float) -> Job | None:
        due = sorted((j for j in self._queue.values() if j.next_at <= now and not j.final_error), key=lambda j: j.next_at)
        checked: dict[tuple[int, int], str | None] = {}  # one probe per size, not one per waiting job
        for job in due:
            if job.resource_blocked:
                # Still no room in the outbox: do not spend a whole separation to find out again.
                size = (job.probe_bytes, job.file_bytes)
                if size not in checked:
                    checked[size] = why_no_room(self.cfg.outbox, *size)
                why = checked[size]
                if why:
                    job.next_at = now + max(self.cfg.retry_backoff_max_s, 0.2)
                    self._disk_full = {**(self._disk_full or {}), "path": str(self.cfg.outbox), "error": why,
                                       "since": (self._disk_full or {}).get("since") or iso(time.time())}
                    self.log.warning("outbox still full; job waits", job_id=job.id, path=str(self.cfg.outbox), error=why,
                                     retry_in_s=round(job.next_at - now, 1))
                    continue
            del self._queue[job.id]
            return job
        return None

    def _validate(self, job: Job) -> bool:
        """Check the claimed files and the sidecar; a bad job goes to failed/ right away."""
        claim = job.claim
        name = self.config_path.name if self.config_path else "config"
        try:
            v = validate.validate(claim, params=self.cfg.params, config_name=name, probe=self._probe)
            validate.check_model_fit(v, self.cfg.model)
        except (InputError, ParamError) as e:
            self._fail(job, self._error(INPUT, e.__class__.__name__, self._public_message(str(e), claim), "validate"))
            return False
        except OSError as e:  # the filesystem misbehaved: an attempt that counts, retried
            job.attempt += 1
            kind = RESOURCE if is_resource_error(e) else TRANSIENT
            self._after_failure(job, Outcome.failure(kind, e.__class__.__name__, str(e), "validate"))
            return False
        job.inputs = v
        job.validated = True
        try:
            self.ledger.update(job.id, inputs=v.info, overrides=v.sidecar_overrides)
        except Exception as e:
            self.log.error("ledger write failed", job_id=job.id, error=str(e))
        return True

    def _launch(self, job: Job) -> None:
        cfg = self.cfg
        claim = job.claim
        v = job.inputs
        assert v is not None, "validated before launch"
        job.attempt += 1
        job.started_at = time.time()
        try:
            tmp = outbox.fresh_tmp(cfg.outbox, job.id)
        except OSError as e:
            self._after_failure(job, Outcome.failure(RESOURCE if is_resource_error(e) else TRANSIENT, e.__class__.__name__, str(e), "write"))
            return
        queue_wait = max(0.0, job.started_at - claim.dropped_at) if claim.dropped_at else None
        extra = {
            "job": {
                "id": job.id,
                "name": inbox.display(claim.name),
                "kind": claim.kind,
                "attempt": job.attempt,
                "max_attempts": cfg.max_attempts,
                "queue_wait_s": None if queue_wait is None else round(queue_wait, 3),
                "dropped_at": iso(claim.dropped_at) if claim.dropped_at else None,
                "claimed_at": iso(claim.claimed_at),
                "started_at": iso(job.started_at),
                "sidecar": v.sidecar,
                "overrides": v.sidecar_overrides,
                "inputs": v.info,
                "daemon": {"host": self.host, "pid": self.pid, "version": __version__, "isolation": self.isolation},
            },
            "param_sources": v.param_sources,
        }
        spec = JobSpec(
            job_id=job.id,
            name=inbox.display(claim.name),
            mix=v.mix,
            query=v.query,
            gt=v.gt,
            overrides=v.overrides,
            extra_event=extra,
            out_dir=str(tmp),
            job_log=str(claim.job_log),
            threads=cfg.threads,
            log_level=cfg.log_level,
            log_format=cfg.log_format,
            input_paths={
                role: str(Path("inputs") / Path(path).relative_to(claim.inputs))
                for role, path in (("mix", v.mix), ("query", v.query), ("gt", v.gt))
                if path is not None
            },
            param_paths=v.result_paths,
        )
        self._record(job.id, RUNNING, owner=self.owner, attempt=job.attempt, started_at=job.started_at, queue_wait_s=queue_wait)
        self.log.info("job started", job_id=job.id, job=spec.name, attempt=job.attempt, queue_wait_s=None if queue_wait is None else round(queue_wait, 3), overrides=v.sidecar_overrides)
        try:
            r = start_fork(self.sep, spec) if self.isolation == "fork" else start_thread(self.sep, spec)
        except OSError as e:  # fork failed (out of memory, process limit)
            outbox.remove_tree(tmp)
            self._after_failure(job, Outcome.failure(TRANSIENT, e.__class__.__name__, f"cannot start the job process: {e}", "separate"))
            return
        self._selector.register(r.fd, selectors.EVENT_READ, job.id)
        self._running[job.id] = (job, r)

    def _once_done(self, now: float) -> bool:
        if self._running or self._scans < 2 or now - self._started < self.cfg.settle_s:
            return False
        if any(v.status in ("pending", "ready", "bad") and k not in self._claim_errors for k, v in self._verdicts.items()):
            return False
        return all(j.resource_blocked for j in self._queue.values())

    # =========================================================================== reload
    def _reload(self) -> None:
        if self.config_path is None:
            self.log.warning("SIGHUP ignored: no config file to reload")
            return
        self.log.info("reloading config", config=str(self.config_path))
        sd_notify("RELOADING=1")
        try:
            new = load_config(self.config_path)
            old = self.cfg
            if (new.inbox, new.outbox, new.work, new.failed, new.ledger_path) != (old.inbox, old.outbox, old.work, old.failed, old.ledger_path):
                prepare_folders(new, self._config_name())
            sep, isolation, workers = self.sep, self.isolation, self.workers
            if new.runtime() != old.runtime() or new.isolation != old.isolation:
                self._busy = True
                try:
                    sep, isolation, workers = self._load_model(new)
                finally:
                    self._busy = False
            ledger = self.ledger if new.ledger_path == old.ledger_path else Ledger(new.ledger_path)
        except (ConfigError, ModelError, ParamError) as e:
            self.log.error("reload failed; keeping the current config", error=str(e))
            sd_notify("READY=1")
            return
        except Exception as e:
            self.log.error("reload failed; keeping the current config", error=f"{e.__class__.__name__}: {e}")
            sd_notify("READY=1")
            return
        changed = sorted(k for k in new.model_fields if getattr(new, k) != getattr(old, k))
        if sep is self.sep:  # same model: workers and batching follow the new config
            workers = effective_workers(new, isolation)
            wait, why = self._batching(new, isolation, workers)
            if wait != sep.batch_wait_ms:
                sep.set_batching(wait)  # running jobs finish their forwards with the old batcher
                self.log.info("forward batching changed", batch_windows="on" if wait else "off", batch_wait_ms=wait,
                              batch_why=why)
        self.cfg, self.sep, self.isolation, self.ledger, self.workers = new, sep, isolation, ledger, workers
        logs.configure(new.log_level, new.log_format, self.stream, self.job_logs)
        os.umask(new.umask)
        self.gate = AudioGate(probe_audio, _limits(new))
        if new.inbox != old.inbox and not self.once:
            self._stop_observer()
            self._start_observer()
            self._candidates, self._verdicts = {}, {}
        if self._schedule is not None:
            self._schedule.apply(new, self._heartbeat_period())
        self._window_open = schedule.in_windows(dt.datetime.now(), new.windows)
        self._reloads += 1
        self._dirty = True
        self.log.info("config reloaded", changed=changed, window_open=self._window_open)
        self._note_unused_params(new)
        sd_notify("READY=1")

    def _note_unused_params(self, cfg: DaemonConfig) -> None:
        """Warn once that the config's ``params`` set what this daemon's pipeline does not read
        (each job's event.json notes it too), rather than leave the operator to find it per job."""
        try:
            unused = self.sep.unused_params(cfg.params, f"daemon config:{self._config_name()}")
        except ParamError:  # e.g. detector: oracle, whose segments file each job's sidecar names
            return
        if unused:
            self.log.warning("params in the config that this daemon's pipeline does not read", params=unused,
                             config=self._config_name())


def batching_choice(cfg: DaemonConfig, isolation: str, workers: int) -> tuple[float | None, str]:
    """Whether jobs' AST forwards are merged into batches: the wait in ms (None: off) and why.

    Batching merges forwards of jobs that share one model in one process, so it needs thread
    isolation (a forked child runs one job alone). ``auto`` turns it on where it pays: a CUDA
    device (one job's windows leave most of a GPU idle; a CPU's cost grows with the windows)
    and more than one worker. ``on`` forces it with thread isolation, e.g. on CPU for tests.
    """
    if cfg.batch_windows == "off":
        return None, "batch_windows: off"
    if cfg.model.strip().lower() == "none":
        return None, "no AST model (model: none)"
    if isolation != "thread":
        return None, "fork isolation: each job runs alone in its own process"
    if cfg.batch_windows == "on":
        return cfg.batch_wait_ms, "batch_windows: on"
    if resolve_device(cfg.device).type != "cuda":
        return None, "auto: the device is a CPU"
    if workers < 2:
        return None, "auto: one worker"
    return cfg.batch_wait_ms, f"auto: CUDA, thread isolation, {workers} workers"


def _limits(cfg: DaemonConfig) -> Limits:
    return Limits(cfg.max_bytes, cfg.max_duration_s, cfg.max_channels, cfg.max_sample_rate)
