"""The daemon torture suite (issue 5): ``--full`` switches every test to its large configuration.

    python -m pytest -q tests/reliability -m reliability           # small: CI, a few minutes
    python -m pytest -q tests/reliability --full -m reliability    # large: the figures in the README

Each test appends its figures (jobs, kills, lost, duplicated, peak RSS, …) to the file named by
``SOURCESEP_RELIABILITY_FIGURES`` (default: ``reliability-figures.jsonl`` in pytest's cache
folder, or pytest's base temporary folder), so a full run leaves a record next to its pass/fail summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # torture helpers next to the tests


@dataclass(frozen=True)
class Scale:
    """Sizes of one configuration of the suite."""

    full: bool
    chaos_jobs: int  # jobs pushed through a daemon that is SIGKILLed and restarted
    chaos_kills: int  # kills while jobs remain (the last daemon then drains the rest)
    chaos_gap_s: tuple[float, float]  # a kill comes this long (uniform) after the daemon is ready
    two_daemon_jobs: int
    load_jobs: int


SMALL = Scale(full=False, chaos_jobs=30, chaos_kills=5, chaos_gap_s=(0.3, 2.5), two_daemon_jobs=20, load_jobs=150)
FULL = Scale(full=True, chaos_jobs=500, chaos_kills=10_000, chaos_gap_s=(0.5, 5.0), two_daemon_jobs=200, load_jobs=2000)


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    # default=False: this conftest is not an "initial" one when pytest runs the whole tests/ tree.
    return FULL if request.config.getoption("--full", default=False) else SMALL


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``figures(test, **values)`` records a test's measured figures (one JSON line each)."""
    cache = getattr(request.config, "cache", None)
    default = cache.mkdir("reliability") / "figures.jsonl" if cache else tmp_path_factory.getbasetemp() / "figures.jsonl"
    path = Path(os.environ.get("SOURCESEP_RELIABILITY_FIGURES", default))

    def record(test: str, **values) -> None:
        full = request.config.getoption("--full", default=False)
        line = {"test": test, "full": full, "at": time.strftime("%Y-%m-%d %H:%M:%S"), **values}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")
        print(f"\nFIGURES {json.dumps(line, default=str)}")

    return record
