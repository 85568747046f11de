"""The daemon process: start-up, the main loop, signals and systemd notification.

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
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sourcesep import InputError, ModelError, ParamError, Separator
from sourcesep.audio import probe as probe_audio

from . import __version__, inbox, logs, outbox, report, schedule, validate
from .config import ConfigError, DaemonConfig, load_config, prepare_folders
from .ledger import DONE, FAILED, QUEUED, RETRIED, RUNNING, Ledger
from .worker import INPUT, RESOURCE, TRANSIENT, JobSpec, Outcome, Running, choose_isolation, disk_nearly_full, start_fork, start_thread

EXIT_OK, EXIT_CONFIG, EXIT_MODEL, EXIT_RESTART = 0, 2, 3, 75


def sd_notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd's ``NOTIFY_SOCKET``; False when not under
    systemd. Abstract socket names (``@…``) are supported. No dependency beyond ``socket``."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)  # never stall the daemon on a receiver that does not read
            s.connect(addr)
            s.send(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """systemd's watchdog period for this process (``WATCHDOG_USEC``), or None."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


def iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


@dataclass
class Job:
    """A claimed job owned by this process."""

    claim: inbox.Claim
    attempt: int = 0
    next_at: float = 0.0  # monotonic time of the next attempt
    validated: bool = False
    inputs: validate.JobInputs | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    final_error: dict[str, Any] | None = None  # failed, but failed/ could not be written yet
    started_at: float | None = None
    resource_blocked: bool = False

    @property
    def id(self) -> str:
        return self.claim.id


class Service:
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
        self.settler = inbox.Settler()
        self._candidates: dict[tuple[str, str], inbox.Candidate] = {}
        self._verdicts: dict[tuple[str, str], inbox.Verdict] = {}
        self._probe_cache: dict[tuple, Any] = {}
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
        """Start, process until told to stop (or, with ``once``, until the inbox is done)."""
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
        try:
            prepare_folders(cfg)
            self.ledger = Ledger(cfg.ledger_path)
        except ConfigError as e:
            self.log.error("bad configuration", error=str(e))
            return EXIT_CONFIG
        except Exception as e:  # sqlite3.Error, OSError
            self.log.error("cannot open the ledger", path=str(cfg.ledger_path), error=f"{e.__class__.__name__}: {e}")
            return EXIT_CONFIG
        try:
            self.sep, self.isolation = self._load_model(cfg)
        except (ModelError, ParamError) as e:
            self.log.error(
                "cannot load the model",
                model=cfg.model,
                error=str(e),
                hint=f"set 'model:' in {self.config_path or 'the config'} to a local save_pretrained "
                "directory with 'offline: true', or to 'none' (weights-free)",
            )
            return EXIT_MODEL
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
                workers=cfg.workers,
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
            self.log.info("daemon stopped", exit_code=self._exit_code, **self._counts)
        return self._exit_code

    def _load_model(self, cfg: DaemonConfig) -> tuple[Any, str]:
        choice = choose_isolation(cfg.isolation, cfg.device, cfg.threads)
        t0 = time.perf_counter()
        sep = Separator(
            model=cfg.model,
            device=cfg.device,
            threads=choice.parent_threads,
            precision=cfg.precision,
            offline=cfg.offline,
        )
        self.log.info("model loaded", model=cfg.model, seconds=round(time.perf_counter() - t0, 3), isolation=choice.isolation, why=choice.reason)
        self._warm_up(sep, cfg)
        return sep, choice.isolation

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

    def _heartbeat_period(self) -> float:
        hb = self.cfg.heartbeat_s
        if self._watchdog_s:
            hb = min(hb, self._watchdog_s / 3)
        return max(hb, 0.2)

    def heartbeat(self, ping: bool = True) -> None:
        """Rewrite status.json and, when the main loop is alive, ping the systemd watchdog."""
        with self._snap_lock:
            status = dict(self._snapshot)
        status["heartbeat_at"] = iso(time.time())
        status["uptime_s"] = round(time.monotonic() - self._started, 1)
        try:
            if self.ledger is not None:
                status["ledger_counts"] = self.ledger.counts()
        except Exception as e:
            status["ledger_error"] = str(e)
        try:
            outbox.write_json_atomic(self.cfg.status_path, status, fsync=False)
        except OSError as e:
            self.log.warning("cannot write status file", path=str(self.cfg.status_path), error=str(e))
        stall_limit = max(10.0, (self._watchdog_s or 60.0) / 2)
        if ping and (self._busy or time.monotonic() - self._tick < stall_limit):
            sd_notify("WATCHDOG=1")

    def _publish_snapshot(self, state: str | None = None) -> None:
        now = time.monotonic()
        verdicts = list(self._verdicts.values())
        snap = {
            "pid": self.pid,
            "host": self.host,
            "version": __version__,
            "config": str(self.config_path) if self.config_path else None,
            "started_at": iso(self._started_wall),
            "state": state
            or ("draining" if self._draining else "once" if self.once else "running" if self._window_open else "paused (outside processing windows)"),
            "window_open": self._window_open,
            "windows": list(self.cfg.windows),
            "model": self.cfg.model,
            "isolation": self.isolation,
            "workers": self.cfg.workers,
            "queue": {
                "length": sum(v.status in ("ready", "pending") for v in verdicts) + len(self._queue),
                "inbox_ready": sum(v.status == "ready" for v in verdicts),
                "inbox_settling": sum(v.status == "pending" for v in verdicts),
                "inbox_incomplete": sum(v.status == "waiting" for v in verdicts),
                "claimed_waiting": len(self._queue),
            },
            "running": [
                {"job_id": j.id, "name": inbox.display(j.claim.name), "attempt": j.attempt, "elapsed_s": round(now - r.started, 1)}
                for j, r in self._running.values()
            ],
            "since_start": dict(self._counts),
            "last_error": self._last_error,
            "disk_full": self._disk_full,
            "reloads": self._reloads,
        }
        with self._snap_lock:
            self._snapshot = snap

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

    def _requeue_interrupted(self, job: Job, outcome: Outcome) -> None:
        """Shutdown stopped an attempt: it does not count; the job waits in work/ for the next start."""
        outbox.remove_tree(outbox.tmp_dir(self.cfg.outbox, job.id))
        job.attempt -= 1
        self._record(job.id, QUEUED, attempt=job.attempt, detail="attempt interrupted by shutdown; resumes at the next start")
        self.log.warning("job interrupted by shutdown; left queued", job_id=job.id)
        self.job_logs.unregister(job.id)
        job.claim.release()

    # =========================================================================== inbox
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
        """``sourcesep.audio.probe`` with the size/duration limits, cached by inode+size+mtime."""
        st = os.lstat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._probe_cache.get(key)
        if hit is None:
            try:
                hit = probe_audio(path, max_duration_s=self.cfg.max_duration_s, max_bytes=self.cfg.max_bytes)
            except InputError as e:
                hit = e
            self._probe_cache[key] = hit
        if isinstance(hit, InputError):
            raise InputError(path, hit.problem)
        return hit

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
        if len(self._probe_cache) > 20000:
            self._probe_cache.clear()
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
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                self._disk_full = {"path": str(self.cfg.work), "since": iso(time.time()), "error": str(e)}
            return None
        if claim is None:
            self.log.debug("lost the claim race", job=inbox.display(cand.name))
            return None
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

    # =========================================================================== starting jobs
    def _start_jobs(self, now: float) -> None:
        # Jobs whose failure could not be written yet (full disk) are retried first.
        for job in [j for j in self._queue.values() if j.final_error and j.next_at <= now]:
            del self._queue[job.id]
            self._fail(job, job.final_error)
        if not (self._window_open or self.once):
            return
        while len(self._running) < self.cfg.workers:
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
        due = [j for j in self._queue.values() if j.next_at <= now and not j.final_error]
        if not due:
            return None
        job = min(due, key=lambda j: j.next_at)
        del self._queue[job.id]
        return job

    def _next_ready(self) -> inbox.Candidate | None:
        ready = [k for k, v in self._verdicts.items() if v.status == "ready" and not self._claim_blocked(k)]
        if not ready:
            return None
        key = min(ready, key=lambda k: (self._candidates[k].arrived, k))
        del self._verdicts[key]
        return self._candidates.pop(key)

    def _validate(self, job: Job) -> bool:
        """Check the claimed files and the sidecar; a bad job goes to failed/ right away."""
        claim = job.claim
        name = self.config_path.name if self.config_path else "config"
        try:
            v = validate.validate(claim, params=self.cfg.params, config_name=name, probe=self._probe)
        except (InputError, ParamError) as e:
            self._fail(job, self._error(INPUT, e.__class__.__name__, self._public_message(str(e), claim), "validate"))
            return False
        except OSError as e:  # the filesystem misbehaved: an attempt that counts, retried
            job.attempt += 1
            kind = RESOURCE if e.errno in (errno.ENOSPC, errno.EDQUOT) else TRANSIENT
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
            self._after_failure(job, Outcome.failure(RESOURCE if e.errno in (errno.ENOSPC, errno.EDQUOT) else TRANSIENT, e.__class__.__name__, str(e), "write"))
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

    # =========================================================================== finishing jobs
    def _finish(self, job: Job, outcome: Outcome) -> None:
        if outcome.ok:
            try:
                self._commit(job, outcome)
                return
            except OSError as e:
                self.job_logs.register(job.id, job.claim.job_log)
                full = e.errno in (errno.ENOSPC, errno.EDQUOT) or disk_nearly_full(self.cfg.outbox)
                outbox.remove_tree(outbox.tmp_dir(self.cfg.outbox, job.id))
                outcome = Outcome.failure(RESOURCE if full else TRANSIENT, e.__class__.__name__, str(e), "commit", duration_s=outcome.duration_s)
        self._after_failure(job, outcome)

    def _commit(self, job: Job, outcome: Outcome) -> None:
        cfg = self.cfg
        claim = job.claim
        tmp = outbox.tmp_dir(cfg.outbox, job.id)
        outbox.place_inputs(claim.inputs, tmp / "inputs")
        self.log.info("job outputs complete; committing", job_id=job.id, duration_s=round(outcome.duration_s, 3))
        self.job_logs.unregister(job.id)
        _link_or_copy(claim.job_log, tmp / "job.log.jsonl")
        dest = outbox.commit(tmp, cfg.outbox, claim.name, claim.marker, job.id)
        self._record(job.id, DONE, finished_at=time.time(), result_dir=str(dest), summary=outcome.summary, run_s=round(outcome.duration_s, 4))
        claim.discard()
        self._counts["done"] += 1
        if self._disk_full and self._disk_full.get("path") == str(cfg.outbox):
            self._disk_full = None
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
            self._record(job.id, RETRIED, detail=f"{err.get('type')}: {err['message']}", error=record)
            self._counts["retried"] += 1
            self.log.warning("job will be retried", job_id=job.id, attempt=job.attempt, max_attempts=self.cfg.max_attempts,
                             retry_in_s=round(delay, 1), error_type=err.get("type"), error=err["message"], kind=kind)
            self._queue[job.id] = job
            return
        msg = f"gave up after {job.attempt} attempts; last error: {err['message']}"
        self._fail(job, self._error(TRANSIENT, err.get("type", "Error"), msg, err.get("stage", "separate"), traceback=err.get("traceback")))

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
            self._disk_full = {"path": str(cfg.failed), "since": iso(now), "error": str(e)} if e.errno in (errno.ENOSPC, errno.EDQUOT) else self._disk_full
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
        self._last_error = {"job_id": job.id, "stage": doc["stage"], "type": doc["error_type"], "message": doc["message"], "at": iso(now)}

    # =========================================================================== helpers
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
                prepare_folders(new)
            sep, isolation = self.sep, self.isolation
            if new.runtime() != old.runtime() or new.isolation != old.isolation:
                self._busy = True
                try:
                    sep, isolation = self._load_model(new)
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
        self.cfg, self.sep, self.isolation, self.ledger = new, sep, isolation, ledger
        logs.configure(new.log_level, new.log_format, self.stream, self.job_logs)
        os.umask(new.umask)
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
        sd_notify("READY=1")


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copyfile(src, dst)
