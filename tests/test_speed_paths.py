"""benchmarks/speed.py: the seed-faithful path and our instrumented path run end to end (on the
tiny AST, so this stays fast), stage times add up, instrumentation is undone, helpers are right."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from sourcesep import Separator
from sourcesep.ast_model import AstModel
from sourcesep.types import Segment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small arrays: OpenMP threads only add spinning on a busy machine (see test_dgmo)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed_bench", REPO / "benchmarks" / "speed.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["speed_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_ast_flops_geometry(speed):
    one_s = speed.ast_flops(1, 98)  # 1 s window: 9 patch columns x 12 rows + 2 prefix tokens
    assert one_s["tokens"] == 110
    assert speed.ast_flops(1, 1024)["tokens"] == 1214  # the checkpoint's full input
    # Linear layers dominate: 24 H^2 per token per layer.
    assert one_s["linear"] == pytest.approx(2 * 110 * (4 * 768**2 + 2 * 768 * 3072) * 12)
    assert speed.ast_flops(19, 98)["total"] == pytest.approx(19 * one_s["total"])


def test_segment_iou(speed):
    a = [Segment(1.0, 3.0)]
    assert speed.segment_iou(a, a, 10.0) == pytest.approx(1.0)
    assert speed.segment_iou(a, [Segment(2.0, 4.0)], 10.0) == pytest.approx(1 / 3, abs=1e-3)
    assert speed.segment_iou([], [], 10.0) == 1.0
    assert speed.segment_iou(a, [], 10.0) == 0.0


@pytest.fixture
def short_case(pair, tmp_path):
    """The first 3 s of the synthetic pair as a case folder (the seed's loop DGMO is slow)."""
    from sourcesep import audio

    mix, query, _, _ = pair
    case = tmp_path / "case"
    case.mkdir()
    audio.write(case / "mix.wav", mix[: 3 * 16000])
    audio.write(case / "query.wav", query)
    return case


def test_seed_path_runs_and_writes(speed, tiny_ast_dir, short_case, tmp_path):
    st = speed.SeedPath(Path(tiny_ast_dir)).run(short_case, tmp_path / "seed")
    for stage in ("load", "features", "AST", "detection", "masking", "DGMO", "iSTFT", "write"):
        assert st[stage] > 0.0
    assert abs(st["other"]) < 0.05 * st["end to end"] + 1e-3
    assert {"target.wav", "residual.wav", "comparison.png", "timeline.png", "event.json"} <= {
        p.name for p in (tmp_path / "seed").iterdir()
    }
    json.loads((tmp_path / "seed" / "event.json").read_text())


def test_ours_instrumented_stages_add_up_and_wrappers_are_removed(speed, tiny_ast_dir, short_case, tmp_path):
    original_forward = AstModel._forward
    sep = Separator(model=tiny_ast_dir, offline=True, device="cpu", threads=1)
    clock = speed.StageClock()
    speed.instrument_ours(clock)
    try:
        st = speed.ours_once(sep, short_case, tmp_path / "ours", clock, detector="ast", masker="seed")
    finally:
        clock.close()
    assert AstModel._forward is original_forward
    assert st["AST"] > 0 and st["features"] > 0 and st["DGMO"] > 0 and st["write"] > 0
    parts = sum(st[k] for k in speed.STAGES)
    assert parts == pytest.approx(st["end to end"])
    assert min(st[k] for k in speed.STAGES if k != "other") >= 0.0
    assert (tmp_path / "ours" / "event.json").exists()


def test_matmul_rate_is_positive(speed):
    rates = speed.matmul_rate(torch.float32, tokens=64, reps=1)
    assert set(rates) == {"768->768", "768->3072", "3072->768", "layer mix"}
    assert all(v > 0 for v in rates.values())


def test_busy_section_pieces_time_a_job_in_a_child_and_stop_what_they_start(speed, short_case, tmp_path):
    import os
    import subprocess

    args = speed.parse_args(["--runs", "2", "--threads", "1"])
    env = {**os.environ, "GOMP_SPINCOUNT": "10000"}
    with speed.competitors([[sys.executable, "-c", "import time; time.sleep(600)"]], env):
        pids = subprocess.run(["pgrep", "-f", "time.sleep\\(600\\)"], capture_output=True, text=True).stdout.split()
        d = speed.run_child(args, "repeat", "none", short_case, tmp_path / "out", env=env)
    assert len(d["runs_s"]) == 2 and all(t > 0 for t in d["runs_s"])  # the warm-up is not counted
    assert (tmp_path / "out" / "target.wav").exists()
    assert pids and all(not Path(f"/proc/{p}").exists() for p in pids)


def test_quick_shortens_only_what_was_not_set(speed):
    quick = speed.parse_args(["--quick"])
    assert (quick.runs, quick.seed_runs, quick.long_minutes) == (3, 1, 2.0)
    assert speed.parse_args(["--quick", "--seed-runs", "0", "--runs", "5"]).seed_runs == 0
    assert speed.parse_args(["--quick", "--runs", "5"]).runs == 5
    full = speed.parse_args([])
    assert (full.runs, full.seed_runs) == (7, 5)
