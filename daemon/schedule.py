"""Periodic and timed work (APScheduler 3, ``BackgroundScheduler``): inbox rescan, processing
windows, retention cleanup, the heartbeat (``status.json`` + systemd watchdog) and the nightly
report. The scheduled functions only set flags or write their own files; every job decision is
taken by the daemon's main loop.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .config import DaemonConfig, parse_hhmm, parse_window
from .outbox import TMP_PREFIX


def in_windows(now: dt.datetime, windows: list[str]) -> bool:
    """Whether local time ``now`` falls in any window ``HH:MM-HH:MM`` (start inclusive, end
    exclusive; a window may wrap past midnight). No windows means always open."""
    if not windows:
        return True
    minute = now.hour * 60 + now.minute
    for w in windows:
        (h0, m0), (h1, m1) = parse_window(w)
        start, end = h0 * 60 + m0, h1 * 60 + m1
        if (start <= minute < end) if start < end else (minute >= start or minute < end):
            return True
    return False


def expired(root: Path, days: float, now: float) -> list[Path]:
    """Result folders directly under ``root`` (and reports under ``root/_reports``) whose mtime
    is older than ``days``. In-progress ``.tmp-*`` folders are never listed."""
    cutoff = now - days * 86400.0
    out: list[Path] = []
    for base in (root, root / "_reports"):
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if e.name.startswith(TMP_PREFIX) or e.name == "_reports":
                continue
            try:
                if e.stat(follow_symlinks=False).st_mtime < cutoff:
                    out.append(Path(e.path))
            except FileNotFoundError:
                continue
    return sorted(out)


def sweep(roots: list[Path], days: float, now: float | None = None) -> list[Path]:
    """Delete what :func:`expired` lists under each root; returns what was deleted."""
    now = time.time() if now is None else now
    deleted = []
    for root in roots:
        for p in expired(root, days, now):
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                deleted.append(p)
            except FileNotFoundError:
                continue
    return deleted


def report_period(day: dt.date, report_time: str) -> tuple[float, float]:
    """The night a report for ``day`` covers: from ``report_time`` the day before to
    ``report_time`` on ``day`` (local time), as epoch seconds."""
    h, m = parse_hhmm(report_time)
    end = dt.datetime.combine(day, dt.time(h, m))
    start = end - dt.timedelta(days=1)
    return start.timestamp(), end.timestamp()


class Hooks(Protocol):
    """What the scheduler calls on the daemon."""

    def request_rescan(self) -> None: ...
    def heartbeat(self) -> None: ...
    def window_changed(self, open_: bool) -> None: ...
    def run_retention(self) -> None: ...
    def run_report(self) -> None: ...


class Schedule:
    """The daemon's APScheduler, rebuilt from the config at start and on reload."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}
        )

    def apply(self, cfg: DaemonConfig, heartbeat_s: float) -> None:
        """(Re)install every job for ``cfg``. ``heartbeat_s`` may be shorter than the config's
        when the systemd watchdog needs pings more often."""
        s = self.scheduler
        s.remove_all_jobs()
        s.add_job(self.hooks.request_rescan, IntervalTrigger(seconds=cfg.rescan_s), id="rescan")
        s.add_job(self.hooks.heartbeat, IntervalTrigger(seconds=heartbeat_s), id="heartbeat")
        for w in cfg.windows:
            (h0, m0), (h1, m1) = parse_window(w)
            s.add_job(self.hooks.window_changed, CronTrigger(hour=h0, minute=m0), args=[True], id=f"window-open-{w}")
            s.add_job(self.hooks.window_changed, CronTrigger(hour=h1, minute=m1), args=[False], id=f"window-close-{w}")
        if cfg.retention_days:
            s.add_job(self.hooks.run_retention, IntervalTrigger(hours=1), id="retention", next_run_time=dt.datetime.now())
        if cfg.report_time:
            h, m = parse_hhmm(cfg.report_time)
            s.add_job(self.hooks.run_report, CronTrigger(hour=h, minute=m), id="report")
        if not s.running:
            s.start()

    def jobs(self) -> list[dict[str, Any]]:
        return [{"id": j.id, "next_run": str(j.next_run_time)} for j in self.scheduler.get_jobs()]

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
