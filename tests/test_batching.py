"""ForwardBatcher: concurrent callers share one forward, get exactly their own rows back; shapes
are never mixed; a forward's exception reaches every caller; a lone caller waits only wait_ms.
Then the same through a real (tiny) AST: AstModel.enable_batching and Separator(batch_wait_ms)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from signals import SR, harmonic_tone, noise
from sourcesep import Separator
from sourcesep.ast_model import AstModel
from sourcesep.batching import ForwardBatcher
from sourcesep.errors import ParamError


def _together(*calls):
    """Run the calls in threads released at the same moment; returns (results, exceptions)."""
    start = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list = [None] * len(calls)

    def worker(i, fn):
        start.wait()
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors[i] = e

    threads = [threading.Thread(target=worker, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a caller never returned"
    return results, errors


class Recorder:
    """A row-wise forward (x ↦ (2x, row sums)) that records the batch sizes it was called with."""

    def __init__(self, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.fail = fail

    def __call__(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.sizes.append(int(feats.shape[0]))
        if self.fail:
            raise RuntimeError("boom")
        return feats * 2, feats.sum(dim=(1, 2))


def test_two_callers_at_once_share_one_forward_and_get_their_own_rows():
    fwd = Recorder()
    # max_batch = both requests' rows: the batch runs as soon as the second arrives.
    batcher = ForwardBatcher(fwd, wait_ms=5000, max_batch=5)
    a, b = torch.randn(2, 7, 4), torch.randn(3, 7, 4)
    t0 = time.monotonic()
    (ra, rb), errors = _together(lambda: batcher.run(a), lambda: batcher.run(b))
    assert errors == [None, None]
    assert time.monotonic() - t0 < 4.0  # did not sit out the wait
    assert fwd.sizes == [5]
    for x, r in ((a, ra), (b, rb)):
        assert r[0].shape == x.shape and torch.equal(r[0], x * 2)
        assert torch.equal(r[1], x.sum(dim=(1, 2)))
    s = batcher.stats()
    assert (s.requests, s.forwards, s.rows, s.merged_forwards, s.merged_requests) == (2, 1, 5, 1, 2)


def test_different_shapes_are_not_merged():
    fwd = Recorder()
    batcher = ForwardBatcher(fwd, wait_ms=200, max_batch=64)
    a, b = torch.randn(2, 7, 4), torch.randn(3, 9, 4)
    (ra, rb), errors = _together(lambda: batcher.run(a), lambda: batcher.run(b))
    assert errors == [None, None]
    assert sorted(fwd.sizes) == [2, 3]
    assert torch.equal(ra[0], a * 2) and torch.equal(rb[0], b * 2)
    s = batcher.stats()
    assert (s.forwards, s.merged_forwards, s.merged_requests) == (2, 0, 0)


def test_max_batch_caps_a_batch_at_whole_requests():
    fwd = Recorder()
    batcher = ForwardBatcher(fwd, wait_ms=300, max_batch=4)
    xs = [torch.full((2, 3, 1), float(i)) for i in range(3)]
    results, errors = _together(*[lambda x=x: batcher.run(x) for x in xs])
    assert errors == [None] * 3
    assert sorted(fwd.sizes) == [2, 4]  # two requests together, the third alone
    for x, r in zip(xs, results):
        assert torch.equal(r[0], x * 2)
    assert batcher.stats().rows == 6


def test_an_exception_in_the_forward_reaches_every_caller_of_the_batch():
    fwd = Recorder(fail=True)
    batcher = ForwardBatcher(fwd, wait_ms=5000, max_batch=4)
    _, errors = _together(lambda: batcher.run(torch.zeros(2, 3, 1)), lambda: batcher.run(torch.zeros(2, 3, 1)))
    assert fwd.sizes == [4]
    assert all(isinstance(e, RuntimeError) and str(e) == "boom" for e in errors)
    # The batcher is still usable afterwards.
    fwd.fail = False
    out = ForwardBatcher(fwd, wait_ms=0, max_batch=4).run(torch.ones(1, 3, 1))
    assert torch.equal(out[0], torch.full((1, 3, 1), 2.0))


def test_a_lone_caller_returns_after_about_wait_ms_and_a_full_batch_at_once():
    batcher = ForwardBatcher(Recorder(), wait_ms=150, max_batch=8)
    t0 = time.monotonic()
    batcher.run(torch.ones(2, 3, 1))
    waited = time.monotonic() - t0
    assert 0.14 <= waited < 1.5
    assert batcher.stats().merged_forwards == 0
    full = ForwardBatcher(Recorder(), wait_ms=5000, max_batch=8)
    t0 = time.monotonic()
    full.run(torch.ones(8, 3, 1))  # max_batch rows already: no reason to wait the 5 s
    assert time.monotonic() - t0 < 2.5


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ForwardBatcher(Recorder(), wait_ms=-1, max_batch=4)
    with pytest.raises(ValueError):
        ForwardBatcher(Recorder(), wait_ms=1, max_batch=0)
    with pytest.raises(ValueError):
        ForwardBatcher(Recorder(), wait_ms=1, max_batch=4).run(torch.zeros(0, 3))


# ------------------------------------------------------------------------------- a real AST


@pytest.fixture(scope="module")
def ast(tiny_ast_dir):
    return AstModel.load(tiny_ast_dir, offline=True, device="cpu", threads=1)


def _clips(seed: int, n: int) -> np.ndarray:
    """(n, 1 s) clips: a tone at a different pitch over noise in each."""
    return np.stack([harmonic_tone(1.0, f0=300.0 + 150 * i) + noise(1.0, seed=seed + i) for i in range(n)])


def test_ast_windows_of_two_callers_run_as_one_forward_with_unbatched_results(ast):
    a, b = _clips(0, 3), _clips(10, 5)
    expect_a, expect_b = ast.logits_and_embeddings(a), ast.logits_and_embeddings(b)
    try:
        batcher = ast.enable_batching(wait_ms=2000, max_batch=8)  # 3 + 5 rows: runs at once
        (got_a, got_b), errors = _together(lambda: ast.logits_and_embeddings(a), lambda: ast.logits_and_embeddings(b))
    finally:
        ast.disable_batching()
    assert errors == [None, None]
    s = batcher.stats()
    assert (s.forwards, s.rows, s.merged_forwards) == (1, 8, 1)
    for got, expect in ((got_a, expect_a), (got_b, expect_b)):
        for g, e in zip(got, expect):
            assert g.shape == e.shape and g.dtype == np.float32
            np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)
    assert ast.batching_stats() is None  # off again: the plain path
    np.testing.assert_array_equal(ast.logits_and_embeddings(a)[0], expect_a[0])


def test_ast_query_and_windows_of_different_lengths_stay_apart(ast):
    query = harmonic_tone(1.5, f0=1000.0)
    mix = np.concatenate([noise(2.0, seed=3), harmonic_tone(2.0, f0=1000.0)])
    expect_q = ast.classify(query)
    try:
        batcher = ast.enable_batching(wait_ms=200, max_batch=64)
        cls = ast.classify(query)
        (q2, win), errors = _together(lambda: ast.classify(query), lambda: ast.score_windows(mix, cls, 1.0, 0.5))
    finally:
        ast.disable_batching()
    assert errors == [None, None]
    assert batcher.stats().merged_forwards == 0  # 1.5 s query frames ≠ 1 s window frames
    for c in (cls, q2):
        assert c.class_id == expect_q.class_id
        np.testing.assert_allclose(c.embedding, expect_q.embedding, atol=1e-5, rtol=0)
    assert win.probs.shape == (7,)


def test_separator_batch_wait_ms_merges_two_threads_separations(tiny_ast_dir, pair):
    mix, query, _, _ = pair
    mix, query = mix[: 4 * SR], query
    plain = Separator(model=tiny_ast_dir, device="cpu", threads=1, offline=True, precision="fp32")
    assert plain.batching_stats() is None and plain.batch_wait_ms is None
    expect = plain.separate(mix, query, detector="ast", save_visualizations=False)

    sep = Separator(model=tiny_ast_dir, device="cpu", threads=1, offline=True, precision="fp32",
                    batch_wait_ms=500)
    assert sep.batch_wait_ms == 500
    run = lambda: sep.separate(mix, query, detector="ast", save_visualizations=False)  # noqa: E731
    results, errors = _together(run, run)
    assert errors == [None, None]
    stats = sep.batching_stats()
    assert stats["merged_forwards"] >= 1 and stats["merged_requests"] >= 2, stats
    for r in results:
        got, want = r.detection.windows, expect.detection.windows
        np.testing.assert_allclose(r.classification.embedding, expect.classification.embedding, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.probs, want.probs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.embeddings, want.embeddings, atol=1e-5, rtol=0)
        assert [s.to_dict() for s in r.segments] == [s.to_dict() for s in expect.segments]

    sep.set_batching(None)
    assert sep.batching_stats() is None
    with pytest.raises(ParamError):
        sep.set_batching(-1)
    assert Separator(model="none", device="cpu", batch_wait_ms=5).batching_stats() is None
