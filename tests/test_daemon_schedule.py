"""Processing windows, retention, the nightly report and systemd notification."""

from __future__ import annotations

import datetime as dt
import os
import socket
import time

from PIL import Image

from daemon import report, schedule
from daemon.ledger import DONE, FAILED, Ledger
from daemon.notify import sd_notify, watchdog_interval_s


def _at(h, m):
    return dt.datetime(2024, 5, 1, h, m)


def test_windows_including_ones_that_wrap_midnight():
    assert schedule.in_windows(_at(3, 0), [])
    night = ["22:00-06:00"]
    assert schedule.in_windows(_at(23, 59), night) and schedule.in_windows(_at(0, 0), night)
    assert schedule.in_windows(_at(22, 0), night) and not schedule.in_windows(_at(6, 0), night)
    assert not schedule.in_windows(_at(12, 0), night)
    assert schedule.in_windows(_at(12, 30), ["22:00-06:00", "12:00-13:00"])


def test_retention_sweeps_only_old_finished_folders(tmp_path):
    root = tmp_path / "outbox"
    for name in ("old", "new", ".tmp-running", "_reports"):
        (root / name).mkdir(parents=True)
    (root / "_reports" / "2020-01-01.html").write_text("x")
    old = time.time() - 10 * 86400
    for p in (root / "old", root / ".tmp-running", root / "_reports" / "2020-01-01.html"):
        os.utime(p, (old, old))
    deleted = schedule.sweep([root], days=7)
    assert sorted(p.name for p in deleted) == ["2020-01-01.html", "old"]
    assert (root / "new").exists() and (root / ".tmp-running").exists() and (root / "_reports").exists()


def test_report_period_is_the_night_before():
    start, end = schedule.report_period(dt.date(2024, 5, 2), "07:00")
    assert dt.datetime.fromtimestamp(end) == dt.datetime(2024, 5, 2, 7, 0)
    assert end - start == 86400


def test_nightly_report_lists_jobs_with_thumbnails(tmp_path):
    outbox = tmp_path / "outbox"
    res = outbox / "dog job"
    res.mkdir(parents=True)
    Image.new("RGB", (1000, 600), (200, 30, 30)).save(res / "Dog_comparison.png")
    led = Ledger(tmp_path / "state.db")
    now = time.time()
    led.add("j1", name="dog job", kind="flat", owner="h:1")
    led.transition("j1", DONE, finished_at=now, result_dir=str(res), run_s=1.25, queue_wait_s=3.0, summary={
        "class_name": "Dog", "segments": [{"start": 2.0, "end": 4.0}], "timings": {"detect": 0.5},
        "files": {"comparison_plot": "Dog_comparison.png"}})
    led.add("j3", name="quiet job", kind="flat", owner="h:1")
    led.transition("j3", DONE, finished_at=now, result_dir=str(outbox / "quiet job"), run_s=1.0, summary={
        "class_name": None, "target_found": False, "segments": [], "notes": ["opt_steps: not used by the nmf masker"]})
    led.add("j2", name="<b>bad</b>", kind="flat", owner="h:1")
    led.transition("j2", FAILED, finished_at=now, error={"stage": "validate", "message": "x.mix.wav: empty file"})
    day = dt.date.today()
    path = report.write_report(led, outbox, day, now - 60, now + 60)
    assert path == outbox / "_reports" / f"{day.isoformat()}.html"
    page = path.read_text()
    assert "Dog" in page and "2.0–4.0" in page and "data:image/png;base64," in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page  # escaped
    assert "x.mix.wav: empty file" in page and "<b>3</b> jobs" in page
    assert "— · target not found" in page and "<b>1</b> with the target not found" in page
    assert "note: opt_steps: not used by the nmf masker" in page


def test_sd_notify_path_and_abstract_sockets(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        assert sd_notify("READY=1", env={"NOTIFY_SOCKET": path})
        assert s.recv(100) == b"READY=1"
    name = f"sourcesep-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert sd_notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name})
        assert s.recv(100) == b"WATCHDOG=1"
    assert not sd_notify("READY=1", env={})


def test_watchdog_interval():
    assert watchdog_interval_s({"WATCHDOG_USEC": "3000000"}) == 3.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
