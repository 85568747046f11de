"""benchmarks/quality.py: the bootstrap interval printed under the scorer's table."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    sys.path.insert(0, str(REPO / "benchmarks"))
    return importlib.import_module("quality")


def test_bootstrap_interval_brackets_the_statistic_and_narrows_with_more_cases(quality):
    rng = np.random.default_rng(1)
    few, many = rng.normal(2.0, 3.0, 20), rng.normal(2.0, 3.0, 2000)
    lo, hi = quality.bootstrap_interval(few, np.median)
    assert lo < np.median(few) < hi
    lo2, hi2 = quality.bootstrap_interval(many, np.median)
    assert lo2 < 2.0 < hi2 and (hi2 - lo2) < (hi - lo) / 5
    # Deterministic for a seed; a mean interval of a constant collapses to the constant.
    assert quality.bootstrap_interval(few, np.mean) == quality.bootstrap_interval(few, np.mean)
    assert quality.bootstrap_interval([3.0] * 10, np.mean) == (3.0, 3.0)
    with pytest.raises(ValueError, match="no values"):
        quality.bootstrap_interval([])
