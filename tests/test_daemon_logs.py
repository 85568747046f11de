"""The daemon's logging: one JSON object per line, library messages included."""

from __future__ import annotations

import io
import json
import logging
import warnings

from daemon import logs


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_stdlib_library_messages_become_json_lines():
    # Regression (torture suite): every stdlib record (watchdog, APScheduler, transformers) failed
    # in the handler with "wrap_logger() got multiple values for argument 'logger'" and printed a
    # "--- Logging error ---" traceback to stderr instead of a JSON line.
    buf = io.StringIO()
    logs.configure("info", "json", buf)
    logging.getLogger("some.library").error("disk %s is slow", "sda")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library warning", UserWarning, stacklevel=1)
    lines = _lines(buf)
    assert [ln["event"] for ln in lines][0] == "disk sda is slow"
    assert lines[0]["level"] == "error" and lines[0]["logger_name"] == "some.library"
    assert any("a library warning" in ln["event"] for ln in lines)


def test_benign_watchdog_shutdown_message_is_dropped():
    buf = io.StringIO()
    logs.configure("info", "json", buf)
    logging.getLogger("watchdog.observers.inotify").error("InotifyEmitter.queue_events() called when the thread is inactive")
    logging.getLogger("watchdog.observers.inotify").error("inotify watch limit reached")
    assert [ln["event"] for ln in _lines(buf)] == ["inotify watch limit reached"]


def test_job_lines_are_copied_to_the_job_log(tmp_path):
    buf = io.StringIO()
    jl = logs.JobLogs()
    jl.register("j1", tmp_path / "job.log.jsonl")
    logs.configure("info", "json", buf, jl)
    logs.get_logger(job_id="j1").info("stage start", stage="separate")
    logs.get_logger().info("not a job line")
    copied = [json.loads(x) for x in (tmp_path / "job.log.jsonl").read_text().splitlines()]
    assert [c["event"] for c in copied] == ["stage start"] and len(_lines(buf)) == 2
