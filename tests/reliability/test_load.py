"""Load: thousands of small jobs dropped at once. The queue drains, every job is done once, and
the daemon's memory stays flat (RSS sampled over time with psutil; the peak is reported)."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time

import pytest

from audit import audit
from daemon_helpers import Daemon, write_config
from workload import drop, synthetic

psutil = pytest.importorskip("psutil")
pytestmark = [pytest.mark.reliability, pytest.mark.slow]

MB = 1024 * 1024


def _pss(p) -> int:
    try:
        return p.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return p.memory_info().rss


class RssSampler(threading.Thread):
    """Samples (t, jobs finished, daemon RSS, daemon + job processes PSS) every ``period_s``.

    The total is PSS (proportional set size: pages a forked job shares copy-on-write with the
    daemon count once), RSS where PSS cannot be read."""

    def __init__(self, pid: int, root, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.root = root
        self.period_s = period_s
        self.samples: list[tuple[float, int, int, int]] = []
        self._halt = threading.Event()

    def finished(self) -> int:
        return sum(1 for sub in ("outbox", "failed") for p in os.scandir(self.root / sub) if not p.name.startswith((".", "_")))

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.is_set():
            try:
                rss = self.proc.memory_info().rss
                total = _pss(self.proc)
                for c in self.proc.children(recursive=True):
                    try:
                        total += _pss(c)
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.samples.append((time.monotonic() - t0, self.finished(), rss, total))
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def test_thousands_of_jobs_drain_once_with_flat_memory(tmp_path, scale, figures):
    n = scale.load_jobs
    cfg = write_config(tmp_path, settle_s=0.5, rescan_s=2.0, heartbeat_s=1.0,
                       params={"save_visualizations": False, "opt_steps": 2})
    sources = synthetic(8, seconds=1.0)
    names = [f"load {i:05d}" for i in range(n)]
    d = Daemon(cfg, tmp_path / "daemon.log")
    sampler = None
    try:
        d.wait_notify("READY=1")
        sampler = RssSampler(d.proc.pid, tmp_path)
        sampler.start()
        time.sleep(1.0)  # the idle baseline
        t_drop = time.monotonic()
        for i, name in enumerate(names):  # all at once: flat files and job folders
            drop(tmp_path / "inbox", name, sources[i % len(sources)], folder=i % 4 == 0)
        drop_s = time.monotonic() - t_drop
        deadline = time.monotonic() + (3600 if scale.full else 600)
        while time.monotonic() < deadline:
            if sampler.finished() >= n and not any(p.is_dir() for p in (tmp_path / "work").iterdir()):
                break
            assert d.proc.poll() is None, d.log_text()
            time.sleep(0.5)
        drain_s = time.monotonic() - t_drop
        time.sleep(0.5)
        sampler.stop()
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0
    finally:
        d.close()  # first: a daemon must never outlive its test
        if sampler is not None:
            sampler.stop()

    result = audit(tmp_path, names)
    samples = sampler.samples
    daemon_rss = [s[2] for s in samples]
    total_rss = [s[3] for s in samples]
    # Memory over the run: the daemon's RSS once a quarter of the jobs were done (warm: the
    # whole inbox scanned, every code path used) against its RSS over the last quarter.
    warm = [s[2] for s in samples if n * 0.2 <= s[1] <= n * 0.3]
    late = [s[2] for s in samples if s[1] >= n * 0.75]
    warm_mb, late_mb = statistics.median(warm) / MB, statistics.median(late) / MB
    peak_mb, peak_total_mb = max(daemon_rss) / MB, max(total_rss) / MB
    # The curve over time: the daemon's idle RSS, then its peak RSS (MB) in each tenth of the jobs.
    curve = [round(daemon_rss[0] / MB, 1)] + [
        round(max((s[2] for s in samples if n * (k - 1) / 10 < s[1] <= n * k / 10), default=0) / MB, 1) for k in range(1, 11)
    ]
    figures("load", **result.figures(), drop_s=round(drop_s, 2), drain_s=round(drain_s, 1),
            jobs_per_hour=round(n / drain_s * 3600), baseline_rss_mb=round(daemon_rss[0] / MB, 1),
            rss_at_25pct_mb=round(warm_mb, 1), rss_last_quarter_mb=round(late_mb, 1),
            peak_daemon_rss_mb=round(peak_mb, 1), peak_daemon_and_jobs_pss_mb=round(peak_total_mb, 1),
            rss_mb_by_tenth_done=curve, samples=len(samples))
    assert result.problems == [], "\n".join(result.problems[:40])
    assert not result.failed
    # Flat: what the daemon keeps per job (ledger cache, logs, probe cache) must not add up.
    assert late_mb - warm_mb < 15, f"daemon RSS grew from {warm_mb:.1f} MB to {late_mb:.1f} MB"
