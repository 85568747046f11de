"""Structured logging (structlog): JSON lines for journald, a console format on a terminal, and a
per-job copy of every line that carries a ``job_id`` (``job.log.jsonl`` in the job's folder).

Every line is written with one ``write`` call on the raw file descriptor, so lines from the daemon
and its forked job children never interleave (a pipe write ≤ PIPE_BUF bytes is atomic).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(event: dict[str, Any]) -> str:
    """One JSON line. ``ensure_ascii`` keeps undecodable file names (surrogates) valid JSON."""
    return json.dumps(event, default=_jsonable, ensure_ascii=True, separators=(",", ":"))


class JobLogs:
    """Maps job ids to their ``job.log.jsonl`` path; a processor appends each job's lines there.

    Each line is opened-appended-closed, so the file may be moved between lines (the daemon links
    it into the result folder at commit) and a forked child can append to the same file.
    """

    def __init__(self) -> None:
        self._paths: dict[str, Path] = {}
        self._lock = threading.Lock()

    def register(self, job_id: str, path: Path) -> None:
        with self._lock:
            self._paths[job_id] = path

    def unregister(self, job_id: str) -> None:
        with self._lock:
            self._paths.pop(job_id, None)

    def path(self, job_id: str) -> Path | None:
        with self._lock:
            return self._paths.get(job_id)

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        job_id = event.get("job_id")
        path = self.path(job_id) if isinstance(job_id, str) else None
        if path is not None:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
                try:
                    os.write(fd, (dumps(event) + "\n").encode("utf-8", "backslashreplace"))
                finally:
                    os.close(fd)
            except OSError:
                pass  # a full disk must not stop the daemon; the stdout line still goes out
        return event


class LineWriter:
    """A structlog logger that writes whole lines with a single ``os.write`` on a stream's fd."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # pytest capture, StringIO
            self._fd = None
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            try:
                if self._fd is None:
                    self._stream.write(data.decode("utf-8"))
                    self._stream.flush()
                    return
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except (OSError, ValueError):
                pass  # stdout closed (journald gone): keep running; job logs still go to files

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _timestamp(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["ts"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    return event


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    job_logs: JobLogs | None = None,
) -> None:
    """(Re)configure structlog for this process.

    ``fmt``: ``json`` (one object per line), ``console`` (human-readable) or ``auto`` (console when
    ``stream`` is a terminal). Called again in each forked job child so the child gets fresh locks.
    """
    stream = stream if stream is not None else sys.stdout
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    use_console = fmt == "console" or (fmt == "auto" and is_tty)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=is_tty)
        if use_console
        else structlog.processors.JSONRenderer(serializer=lambda obj, **_: dumps(obj))
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        structlog.processors.dict_tracebacks,
    ]
    if job_logs is not None:
        processors.append(job_logs)
    processors.append(renderer)
    writer = LineWriter(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: writer,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(level)


# Benign library messages that would read as failures in the journal.
_QUIET = (
    # watchdog's inotify thread, when the observer is stopped while it waits for events.
    ("watchdog.observers.inotify", "called when the thread is inactive"),
)


class _ToStructlog(logging.Handler):
    """Sends stdlib ``logging`` records (APScheduler, watchdog, transformers, Python warnings)
    through structlog, so stdout stays one JSON object per line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if any(record.name == name and text in message for name, text in _QUIET):
                return
            level = record.levelname.lower()
            # ``logger=`` is structlog's own argument (the wrapped logger): bind another key.
            log = get_logger(logger_name=record.name)
            getattr(log, level if level in _LEVELS else "warning")(message)
        except Exception:  # a log line must never raise into the caller; never print a traceback
            pass


def _route_stdlib_logging(level: str) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _ToStructlog):
            root.removeHandler(h)
    root.addHandler(_ToStructlog())
    root.setLevel(_LEVELS[level])
    # "job skipped: maximum number of running instances reached" is routine for the heartbeat.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.captureWarnings(True)


def get_logger(**bind: Any) -> Any:
    """A bound structlog logger (lazy: it follows later :func:`configure` calls)."""
    return structlog.get_logger("sourcesep-daemon", **bind)
