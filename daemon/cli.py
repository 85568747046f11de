"""``sourcesep-daemon``: run the watch-folder daemon, process the inbox once, or show its state.

    sourcesep-daemon --config FILE            # = run
    sourcesep-daemon run --config FILE        # the service (systemd: Type=notify)
    sourcesep-daemon once --config FILE       # process what the inbox holds, then exit (cron, tests)
    sourcesep-daemon status --config FILE [--json]
    sourcesep-daemon report --config FILE [--date YYYY-MM-DD]

Exit status: 0 ok; 2 bad config or refused to run as root; 3 the model cannot be loaded;
75 a stuck job thread (thread isolation) needs a restart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, load_config

COMMANDS = ("run", "once", "status", "report")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sourcesep-daemon", description="Watch-folder source separation daemon.")
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
        cfg = load_config(args.config)
    except ConfigError as e:
        sys.stderr.write(f"sourcesep-daemon: {e}\n")
        return 2
    if args.command in ("run", "once"):
        from .service import Service  # imports torch: keep `status` fast

        code = Service(cfg, args.config, once=args.command == "once", allow_root=args.allow_root).run()
        if code == 75:  # a job thread is stuck in native code: do not wait for it at interpreter exit
            sys.stdout.flush()
            os._exit(code)
        return code
    if args.command == "status":
        return _status(cfg, as_json=args.json, limit=args.limit)
    return _report(cfg, args.config, args.date)


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

    out: dict[str, Any] = {"config": {"inbox": str(cfg.inbox), "outbox": str(cfg.outbox), "work": str(cfg.work), "failed": str(cfg.failed)}}
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
    if Path(cfg.ledger_path).exists():
        led = Ledger(cfg.ledger_path, readonly=True)
        out["counts"] = led.counts()
        out["queue"] = [_brief(r) for r in led.in_states((*WAITING, RUNNING))]
        out["recent"] = [_brief(r) for r in led.recent(limit)]
        now = time.time()
        out["last_24h"] = throughput(led.finished_between(now - 86400, now))
        led.close()
    else:
        out["counts"], out["queue"], out["recent"], out["last_24h"] = {}, [], [], {}
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
    w("ledger   " + ", ".join(f"{k} {v}" for k, v in out["counts"].items()) + "\n")
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


def _report(cfg: Any, config_path: str, date: str | None) -> int:
    from . import logs, report, schedule
    from .ledger import Ledger

    logs.configure(cfg.log_level, cfg.log_format)
    os.umask(cfg.umask)  # the report is one of the daemon's outputs: same modes as when it runs
    if date:  # the night that ends on DATE at report_time (what the scheduled report covers)
        day = dt.date.fromisoformat(date)
        start, end = schedule.report_period(day, cfg.report_time or "07:00")
    else:  # the last 24 hours
        day, end = dt.date.today(), time.time()
        start = end - 86400
    path = report.write_report(Ledger(cfg.ledger_path), cfg.outbox, day, start, end)
    logs.get_logger().info("report written", path=str(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
