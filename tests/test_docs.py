"""The README stays true: every option is documented and the opening commands are the ones CI uses."""

from pathlib import Path

from sourcesep.params import Params, RuntimeOptions

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_option_is_documented():
    for name in [*RuntimeOptions.model_fields, *Params.model_fields]:
        assert f"`--{name}" in README, name


def test_options_table_is_the_one_the_cli_prints():
    from sourcesep.cli import _params_markdown

    assert _params_markdown() in README


def test_readme_opens_with_install_run_and_test_commands():
    head = README[:1500]
    assert "pip install torch==2.13.0 && pip install -e '.[dev]'" in head
    assert "sourcesep separate --model none" in head
    assert "python -m pytest -q" in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q torch==2.13.0" in ci and "-e '.[dev]'" in ci and "python -m pytest -q" in ci


def test_readme_main_job_command_runs_as_written(tmp_path):
    """The second command of the README, exactly as written, in an empty folder (the CLI's console
    script from this environment): it must succeed and write the target."""
    import os
    import shutil
    import subprocess
    import sys

    line = next(ln for ln in README[:1500].splitlines() if ln.startswith("sourcesep example"))
    bindir = str(Path(sys.executable).parent)
    assert shutil.which("sourcesep", path=bindir), "the sourcesep console script is not installed"
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "target.wav").stat().st_size > 1000
    assert (tmp_path / "out" / "event.json").exists()
