"""The README stays true: every option is documented and the opening commands are the ones CI uses."""

from pathlib import Path

from sourcesep.params import Params, RuntimeOptions

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_option_is_documented():
    for name in [*RuntimeOptions.model_fields, *Params.model_fields]:
        assert f"`--{name}" in README, name


def test_readme_opens_with_install_run_and_test_commands():
    head = README[:1500]
    assert "pip install torch==2.13.0 && pip install -e '.[dev]'" in head
    assert "sourcesep separate --model none" in head
    assert "python -m pytest -q" in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q torch==2.13.0" in ci and "-e '.[dev]'" in ci and "python -m pytest -q" in ci
