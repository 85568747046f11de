"""benchmarks/quality.py: the figures it prints under the scorer's table."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


SCORER = """
import numpy as np
def si_sdr(est, ref):
    est, ref = est - est.mean(), ref - ref.mean()
    s = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12) * ref
    return 10 * np.log10((np.dot(s, s) + 1e-12) / (np.dot(est - s, est - s) + 1e-12))
"""


def test_caveats_give_the_estimates_level_and_the_residuals_si_sdri(quality, tmp_path, capsys):
    """A present case whose estimate is half the target at -6.02 dB; a present case and an absent
    case with silent estimates, which the level and residual lines leave out."""
    sr, rng = 16000, np.random.default_rng(0)
    gt = (0.3 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)
    noise = (0.05 * rng.standard_normal(sr)).astype(np.float32)
    cases, out = tmp_path / "dev", tmp_path / "out"
    (tmp_path / "score.py").write_text(SCORER)
    rows = []
    for name, g, est, row in (("000", gt, 0.5 * gt, {"si_sdri": 5.0}), ("001", gt, 0 * gt, {"si_sdri": 2.0}),
                              ("002", 0 * gt, 0 * gt, {"leak_db": -150.0})):
        (cases / name).mkdir(parents=True)
        (out / name).mkdir(parents=True)
        sf.write(cases / name / "mix.wav", g + noise, sr, subtype="FLOAT")
        sf.write(cases / name / "gt.wav", g, sr, subtype="FLOAT")
        sf.write(out / name / "target.wav", est, sr, subtype="FLOAT")
        rows.append({"case": name, **row})
    (out / "score.json").write_text(json.dumps({"cases": rows}))
    quality.caveats(cases, out, tmp_path / "score.py")
    lines = {ln.split(":")[1].strip(): ln.rsplit(":", 1)[1].split() for ln in capsys.readouterr().out.splitlines()
             if ln.startswith("  audible cases, not silent")}
    level, residual = lines["estimate's level re the true target (dB)"], lines["residual SI-SDRi (vs mixture − gt)"]
    assert float(level[0]) == pytest.approx(-6.02, abs=0.01) and level[2] == "(n=1)"
    si_sdr = quality.load_scorer(tmp_path / "score.py").si_sdr
    mix, g64 = (gt + noise).astype(np.float64), gt.astype(np.float64)
    expected = si_sdr(mix - 0.5 * g64, mix - g64) - si_sdr(mix, mix - g64)
    assert float(residual[0]) == pytest.approx(expected, abs=0.01) and expected > 3.0 and residual[2] == "(n=1)"
    # No detected.txt (a run before it was written): no detection lines.
    assert "detected frames' precision" not in lines


def test_caveats_give_the_detected_frames_recall_and_precision(quality, tmp_path, capsys):
    """A target sounding for the first 2 s of 4, detected as 0-3 s: all of its frames found, two
    thirds of the detected frames holding it, detected for 1.5 times its duration."""
    sr = 16000
    t = np.arange(4 * sr) / sr
    gt = np.where(t < 2.0, 0.3 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    noise = (0.05 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    cases, out = tmp_path / "dev", tmp_path / "out"
    (cases / "000").mkdir(parents=True)
    (out / "000").mkdir(parents=True)
    (tmp_path / "score.py").write_text(SCORER)
    sf.write(cases / "000" / "mix.wav", gt + noise, sr, subtype="FLOAT")
    sf.write(cases / "000" / "gt.wav", gt, sr, subtype="FLOAT")
    sf.write(out / "000" / "target.wav", gt, sr, subtype="FLOAT")
    (out / "000" / "detected.txt").write_text("0.0000 3.0000\n")
    (out / "score.json").write_text(json.dumps({"cases": [{"case": "000", "si_sdri": 9.0}]}))
    quality.caveats(cases, out, tmp_path / "score.py")
    lines = {ln.split(":")[1].strip(): ln.rsplit(":", 1)[1].split() for ln in capsys.readouterr().out.splitlines()
             if ln.startswith("  audible cases, not silent")}
    assert float(lines["detected frames' recall of gt's (30 dB)"][0]) == pytest.approx(1.0)
    assert float(lines["detected frames' precision"][0]) == pytest.approx(2 / 3, abs=0.02)
    assert float(lines["detected time re the target's"][0]) == pytest.approx(1.5, abs=0.03)
