"""The CLI as users run it: a real subprocess on real files."""

import json
import subprocess
import sys

import jsonschema
import soundfile as sf

from sourcesep.event import load_schema
from sourcesep.maskers import FRAME_GAIN_FLOOR, FRAME_GAIN_POWER


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "sourcesep.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_separate_writes_every_output(pair_files, tmp_path, tiny_ast_dir):
    out = tmp_path / "out"
    p = run("separate", "--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav",
            "--gt_wav", pair_files / "gt.wav", "--out_dir", out, "--model", tiny_ast_dir, "--offline",
            "--threads", "1", "--save_trimmed_query", "--opt_steps", "4")
    assert p.returncode == 0, p.stderr
    ev = json.loads((out / "event.json").read_text())
    jsonschema.validate(ev, load_schema())
    assert ev["param_sources"]["opt_steps"] == "cli" and ev["params"]["opt_steps"] == 4
    assert ev["metrics"]["quality"] in {"excellent", "good", "fair", "poor"}
    for name in ev["outputs"].values():
        path = out / name
        assert path.exists(), name
        if path.suffix == ".wav":
            x, sr = sf.read(path)
            assert sr == 16000 and len(x) > 0
    cls = ev["classification"]["class_name"]
    assert cls and any(n.endswith("_timeline.png") for n in ev["outputs"].values())
    assert "SI-SDR" in p.stdout


def test_config_file_and_flag_precedence(pair_files, tmp_path):
    cfg = tmp_path / "sep.yaml"
    cfg.write_text("model: none\nopt_steps: 7\nlr: 0.1\noutput_format: FLAC\nsave_visualizations: false\n")
    out = tmp_path / "out"
    p = run("separate", "--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav",
            "--out_dir", out, "--config", cfg, "--lr", "0.2")
    assert p.returncode == 0, p.stderr
    ev = json.loads((out / "event.json").read_text())
    assert ev["params"]["opt_steps"] == 7 and ev["param_sources"]["opt_steps"] == f"config:{cfg}"
    assert ev["params"]["lr"] == 0.2 and ev["param_sources"]["lr"] == "cli"
    assert (out / "target.flac").exists() and not list(out.glob("*.png"))


def test_errors_are_one_line_without_traceback(pair_files, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("this is not audio")
    data = (pair_files / "mix.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # an interrupted copy: the header promises more
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    x, sr = sf.read(pair_files / "gt.wav", dtype="float32")
    short_gt = tmp_path / "short-gt.wav"
    sf.write(short_gt, x[: sr // 2], sr)
    seed_config = tmp_path / "seed.yaml"
    seed_config.write_text("preset: seed\n")
    cases = [
        (["--mix_wav", cut, "--query_wav", pair_files / "query.wav"], 2, "cut.wav: is truncated"),
        (["--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav", "--gt_wav", short_gt], 2,
         "short-gt.wav: the ground truth is 0.500 s long"),
        (["--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav", "--out_dir", a_file], 2,
         "a-file: exists and is not a folder"),
        (["--mix_wav", tmp_path / "missing.wav", "--query_wav", pair_files / "query.wav"], 2, "missing.wav"),
        (["--mix_wav", bad, "--query_wav", pair_files / "query.wav"], 2, "bad.wav"),
        # a flag's problem names the flag; a config file's names the file and key
        (["--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav", "--mask_floor", "3"], 2,
         "sourcesep: error: --mask_floor: must be ≥ 0.0 and < 1.0 (got 3.0)"),
        (["--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav", "--preset", "seed"], 2,
         "sourcesep: error: --preset: 'seed' needs an AST model (it sets detector: ast); without one (model none)"),
        (["--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav", "--config", seed_config], 2,
         f"sourcesep: error: {seed_config}: preset: 'seed' needs an AST model (it sets detector: ast)"),
        (["--mix_wav", pair_files / "mix.wav", "--query_wav", pair_files / "query.wav", "--model", tmp_path / "nomodel"], 3, "--model none"),
    ]
    for args, code, needle in cases:
        args = ["--model", "none", *args] if "--model" not in args else args
        args = [*args, "--out_dir", tmp_path / "o"] if "--out_dir" not in args else args
        p = run("separate", *args, "--offline")
        assert p.returncode == code, (args, p.stderr)
        assert needle in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "o").exists()  # nothing half-written for a refused run
    p = run("example", a_file)
    assert p.returncode == 2 and p.stderr.strip() == f"sourcesep: error: {a_file}: exists and is not a folder"


def test_usage_errors_are_one_line_naming_the_command(pair_files):
    for args, needle in [
        (["separate", "--mix_wav", "m.wav", "--query_wav", "q.wav", "--opt_steps", "abc"], "argument --opt_steps: invalid int value: 'abc'"),
        (["separate", "--mix_wav", "m.wav"], "the following arguments are required: --query_wav"),
        (["separate", "--mix_wav", "m.wav", "--query_wav", "q.wav", "--bogus", "3"], "unrecognized arguments: --bogus 3"),
    ]:
        p = run(*args)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert p.stderr.startswith("sourcesep separate: error: ") and needle in p.stderr
        assert "(see 'sourcesep separate --help')" in p.stderr
    p = run("--bogus")
    assert p.returncode == 2 and p.stderr.strip() == "sourcesep: error: unrecognized arguments: --bogus (see 'sourcesep --help')"


def test_help_explains_every_option():
    p = run("separate", "--help")
    assert p.returncode == 0
    for flag in ("--cls_percentile", "--lambda_tv", "--use_embedding_masking", "--detector", "--masker",
                 "--precision", "--device", "--threads", "--model", "--config", "--segments"):
        assert flag in p.stdout, flag
    assert "(default: 92.0)" in p.stdout and "(default: 0.28)" in p.stdout


def test_example_then_separate(tmp_path):
    p = run("example", tmp_path / "ex")
    assert p.returncode == 0, p.stderr
    p = run("separate", "--model", "none", "--mix_wav", tmp_path / "ex/mix.wav", "--query_wav", tmp_path / "ex/query.wav",
            "--gt_wav", tmp_path / "ex/gt.wav", "--out_dir", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    ev = json.loads((tmp_path / "out/event.json").read_text())
    assert ev["target_found"] and ev["metrics"]["si_sdri"] > 3
    info = ev["masker"]["info"]
    assert info["mask_power"] in (0.25, 0.5) and FRAME_GAIN_FLOOR ** FRAME_GAIN_POWER <= info["frame_gain_mean"] <= 1.0
    x, sr = sf.read(tmp_path / "ex/gt.wav")
    sf.write(tmp_path / "silent-gt.wav", 0 * x, sr)  # a ground truth for an absent target
    p = run("separate", "--model", "none", "--mix_wav", tmp_path / "ex/mix.wav", "--query_wav", tmp_path / "ex/query.wav",
            "--gt_wav", tmp_path / "silent-gt.wav", "--out_dir", tmp_path / "out2", "--no-save_visualizations")
    leak = json.loads((tmp_path / "out2/event.json").read_text())["metrics"]["leakage_db"]
    assert p.returncode == 0 and f"leakage {leak:.2f} dB re the mixture (the ground truth is silent)" in p.stdout
