"""Shared fixtures: a tiny AST saved to disk (loaded through the real loading code) and
synthetic signals with known content. Nothing here touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from signals import SR, make_pair  # noqa: E402

def pytest_addoption(parser: pytest.Parser) -> None:
    # Here rather than in tests/reliability/conftest.py so `--full` works whatever paths are given.
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="reliability suite: the large configuration (500 chaos jobs with kills, 200 jobs on two "
        "daemons, 2000 jobs of load) instead of the small CI one",
    )


TINY_LABELS = ["Speech", "Music", "Dog", "Siren", "Chainsaw", "Sine wave"]


def build_tiny_ast(path, seed: int = 0):
    """A 2-layer, hidden-32 AST with AudioSet-style labels, saved with save_pretrained.

    Uses the checkpoint's default geometry (128 mel bins, max_length 1024, 16x16 patches, stride
    10) so the position-embedding surgery runs on the same shapes as the real model.
    """
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(seed)
    cfg = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label={i: n for i, n in enumerate(TINY_LABELS)},
        label2id={n: i for i, n in enumerate(TINY_LABELS)},
    )
    model = ASTForAudioClassification(cfg).eval()
    model.save_pretrained(path)
    ASTFeatureExtractor().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_ast_dir(tmp_path_factory):
    return str(build_tiny_ast(tmp_path_factory.mktemp("tiny-ast")))


@pytest.fixture(scope="session")
def pair():
    """(mix, query, gt, segments): a 10 s mixture with a chirpy tone target at known times."""
    return make_pair()


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory, pair):
    import soundfile as sf

    d = tmp_path_factory.mktemp("pair")
    mix, query, gt, _ = pair
    sf.write(d / "mix.wav", mix, SR)
    sf.write(d / "query.wav", query, SR)
    sf.write(d / "gt.wav", gt, SR)
    return d


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
