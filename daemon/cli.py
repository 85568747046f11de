"""``sourcesep-daemon``: run the watch-folder daemon, process the inbox once, or show its state.

    sourcesep-daemon --config FILE            # = run
    sourcesep-daemon run --config FILE        # the service (systemd: Type=notify)
    sourcesep-daemon once --config FILE       # process what the inbox holds, then exit (cron, tests)
    sourcesep-daemon status --config FILE [--json]
    sourcesep-daemon report --config FILE [--date YYYY-MM-DD]

Exit status: 0 ok; 2 bad config, bad usage (``--date`` not YYYY-MM-DD), refused to run as root,
or ``report`` with nothing to report (the daemon never ran with this config: no ledger);
3 the model cannot be loaded; 1 anything else (an unreadable ledger, an unwritable outbox);
75 a stuck job thread (thread isolation) needs a restart. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from sourcesep.openmp import limit_spin_waits

from .config import ConfigError, load_config

COMMANDS = ("run", "once", "status", "report")
EXIT_USAGE, EXIT_OTHER = 2, 1


class UsageError(Exception):
    """A command-line value is unusable. The message is one line for the user."""


def report_day(text: str) -> dt.date:
    """``--date``: a calendar day written YYYY-MM-DD (raises :class:`UsageError`)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        raise UsageError(f"--date {text!r}: expected a day as YYYY-MM-DD (e.g. 2026-01-31)")
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as e:
        raise UsageError(f"--date {text!r}: not a calendar day ({e}); expected YYYY-MM-DD") from None


def no_ledger(cfg: Any) -> str:
    """Why there is no ledger to read: the daemon has not run with this config (names the folder)."""
    if cfg.ledger is not None:
        return f"ledger {cfg.ledger_path} does not exist"
    state = "does not exist" if not cfg.work.exists() else "holds no state.db"
    return f"work folder {cfg.work} {state}"


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (and like ``sourcesep``), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sourcesep-daemon", description="Watch-folder source separation daemon.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in (
        ("run", "run the daemon until SIGTERM (default)"),
        ("once", "process what is in the inbox, then exit"),
        ("status", "show the queue and recent jobs from the ledger"),
        ("report", "write the HTML report of the last 24 h (or of the night ending on --date)"),
    ):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--config", "-c", required=True, help="daemon config file (YAML)")
        if name in ("run", "once"):
            sp.add_argument("--allow-root", action="store_true", help="allow running as root (refused by default)")
        if name == "status":
            sp.add_argument("--json", action="store_true", help="machine-readable output")
            sp.add_argument("--limit", type=int, default=15, help="recent jobs to list")
        if name == "report":
            sp.add_argument("--date", help="report day YYYY-MM-DD (default: today)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv = ["run", *argv]  # `sourcesep-daemon --config FILE` means run
    args = _parser().parse_args(argv)
    try:
        day = report_day(args.date) if getattr(args, "date", None) else None
        cfg = load_config(args.config)
        if args.command in ("run", "once"):
            return _run(cfg, args)
    except (ConfigError, UsageError) as e:
        return _fail(str(e), EXIT_USAGE)
    if args.command == "status":
        return _status(cfg, as_json=args.json, limit=args.limit)
    return _report(cfg, args.config, day)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"sourcesep-daemon: {message}\n")
    return code


def _run(cfg: Any, args: argparse.Namespace) -> int:
    limit_spin_waits()  # before torch is imported: see sourcesep/openmp.py
    from .service import Service  # imports torch: keep `status` fast

    code = Service(cfg, args.config, once=args.command == "once", allow_root=args.allow_root).run()
    if code == 75:  # a job thread is stuck in native code: do not wait for it at interpreter exit
        sys.stdout.flush()
        os._exit(code)
    return code


def _pid_alive(status: dict[str, Any]) -> bool | None:
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return None
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _status(cfg: Any, as_json: bool, limit: int) -> int:
    from . import inbox
    from .ledger import RETRIED, RUNNING, WAITING, Ledger

    out: dict[str, Any] = {"config": {"inbox": str(cfg.inbox), "outbox": str(cfg.outbox), "work": str(cfg.work),
                                      "failed": str(cfg.failed), "ledger": str(cfg.ledger_path)}}
    try:
        status = json.loads(Path(cfg.status_path).read_text(encoding="utf-8"))
        out["daemon"] = status
        out["daemon_alive"] = _pid_alive(status)
    except (OSError, ValueError):
        out["daemon"] = None
    cands = inbox.scan(cfg.inbox) if cfg.inbox.is_dir() else {}
    out["inbox"] = {
        "complete_jobs": sum(c.complete for c in cands.values()),
        "incomplete": sum(not c.complete for c in cands.values()),
    }
    out["counts"], out["queue"], out["recent"], out["last_24h"] = {}, [], [], {}
    if Path(cfg.ledger_path).exists():  # read-only: status never creates the ledger
        led = Ledger(cfg.ledger_path, readonly=True)
        try:
            out["counts"] = led.counts()
            out["queue"] = [_brief(r) for r in led.in_states((*WAITING, RUNNING))]
            out["recent"] = [_brief(r) for r in led.recent(limit)]
            now = time.time()
            out["last_24h"] = throughput(led.finished_between(now - 86400, now))
        except sqlite3.Error as e:
            return _fail(f"ledger {cfg.ledger_path}: cannot read it: {e}", EXIT_OTHER)
        finally:
            led.close()
    if as_json:
        sys.stdout.write(json.dumps(out, indent=1, default=str) + "\n")
        return 0
    w = sys.stdout.write
    d = out["daemon"]
    if d:
        alive = {True: "alive", False: "NOT RUNNING", None: "on another host?"}[out["daemon_alive"]]
        if d.get("state") == "stopped" and out["daemon_alive"] is False:
            alive = "stopped"
        w(f"daemon   pid {d.get('pid')} on {d.get('host')} ({alive}), state {d.get('state')}, heartbeat {d.get('heartbeat_at')}\n")
        if d.get("last_error"):
            w(f"last error: {d['last_error'].get('message')}\n")
        if d.get("disk_full"):
            w(f"DISK FULL: {d['disk_full'].get('path')}: {d['disk_full'].get('error')}\n")
    else:
        w("daemon   no status file (never started with this config?)\n")
    w(f"inbox    {out['inbox']['complete_jobs']} complete job(s) waiting to be claimed, {out['inbox']['incomplete']} incomplete\n")
    if out["counts"]:
        w("ledger   " + ", ".join(f"{k} {v}" for k, v in out["counts"].items()) + "\n")
    else:
        w(f"ledger   none yet: the daemon has not run with this config ({no_ledger(cfg)})\n")
    t = out["last_24h"]
    if t.get("done"):
        w(
            f"last 24h {t['done']} done, {t['failed']} failed; {t['jobs_per_hour']:.0f} jobs/h over {t['span_s']:.0f} s; "
            f"per job: {t['mean_run_s']:.2f} s in the daemon, {t['mean_core_s']:.2f} s in the core, "
            f"overhead {t['mean_overhead_s']:.3f} s; mean queue wait {t['mean_queue_wait_s']:.1f} s\n"
        )
    if out["queue"]:
        w("\nqueue (claimed):\n")
        for r in out["queue"]:
            extra = f" — {r['error']}" if r["state"] == RETRIED and r.get("error") else ""
            w(f"  {r['id']}  {r['state']:<8} attempt {r['attempt']}  {r['name']}{extra}\n")
    if out["recent"]:
        w("\nrecent jobs:\n")
        for r in out["recent"]:
            w(f"  {r['updated']}  {r['id']}  {r['state']:<8} {r['name']}  {r.get('result_dir') or ''}\n")
    return 0


def throughput(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over finished ledger rows: jobs per hour (first start to last finish), and per done
    job the time in the daemon (attempt start to commit) against the core's own time (event.json
    ``timings.total``); the difference is the daemon's overhead (fork, result copy, fsync, rename)."""
    done = [r for r in rows if r["state"] == "done" and r.get("started_at") and r.get("finished_at")]
    out: dict[str, Any] = {"done": len(done), "failed": sum(r["state"] == "failed" for r in rows)}
    if not done:
        return out
    span = max(r["finished_at"] for r in done) - min(r["started_at"] for r in done)
    walls = [r["finished_at"] - r["started_at"] for r in done]
    cores = [((r.get("summary") or {}).get("timings") or {}).get("total") for r in done]
    pairs = [(w, c) for w, c in zip(walls, cores, strict=True) if isinstance(c, (int, float))]
    waits = [r["queue_wait_s"] for r in done if r.get("queue_wait_s") is not None]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    out.update(
        span_s=round(span, 3),
        jobs_per_hour=round(len(done) / span * 3600, 1) if span > 0 else None,
        mean_run_s=round(mean(walls), 4),
        mean_core_s=round(mean([c for _, c in pairs]), 4),
        mean_overhead_s=round(mean([w - c for w, c in pairs]), 4),
        mean_queue_wait_s=round(mean(waits), 3),
    )
    return out


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    err = r.get("error")
    return {
        "id": r["id"],
        "name": r["name"],
        "state": r["state"],
        "attempt": r.get("attempt"),
        "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["updated_at"])),
        "result_dir": r.get("result_dir"),
        "error": err.get("message") if isinstance(err, dict) else err,
        "class_name": (r.get("summary") or {}).get("class_name") if isinstance(r.get("summary"), dict) else None,
    }


def _report(cfg: Any, config_path: str, day: dt.date | None) -> int:
    from . import logs, report, schedule
    from .ledger import Ledger

    if not Path(cfg.ledger_path).exists():  # never create a ledger just to report on it
        return _fail(f"{config_path}: nothing to report yet: the daemon has not run with this config "
                     f"({no_ledger(cfg)})", EXIT_USAGE)
    logs.configure(cfg.log_level, cfg.log_format)
    os.umask(cfg.umask)  # the report is one of the daemon's outputs: same modes as when it runs
    if day:  # the night that ends on DAY at report_time (what the scheduled report covers)
        start, end = schedule.report_period(day, cfg.report_time or "07:00")
    else:  # the last 24 hours
        day, end = dt.date.today(), time.time()
        start = end - 86400
    led = Ledger(cfg.ledger_path, readonly=True)
    try:
        path = report.write_report(led, cfg.outbox, day, start, end)
    except sqlite3.Error as e:
        return _fail(f"ledger {cfg.ledger_path}: cannot read it: {e}", EXIT_OTHER)
    except OSError as e:
        return _fail(f"outbox {cfg.outbox}: cannot write the report: {e.strerror or e}", EXIT_OTHER)
    finally:
        led.close()
    logs.get_logger().info("report written", path=str(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
