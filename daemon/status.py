"""``status.json`` and the systemd watchdog: the main loop publishes a snapshot of its state; the
heartbeat (a scheduler thread) writes it with the ledger counts and pings the watchdog only while
the main loop is alive.

Part of :class:`daemon.service.Service` (the state lives there).
"""

from __future__ import annotations

import time

from . import __version__, inbox, outbox
from .job import iso
from .notify import sd_notify


class Status:
    """status.json and watchdog pings (mixed into :class:`daemon.service.Service`)."""

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
            "workers": self.workers,
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
