"""Detection post-processing on synthetic score curves with known segments, the AST and oracle
detectors, and segment files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sourcesep.detect import detect_ast, detect_oracle, segments_from_file, segments_from_mask, threshold
from sourcesep.errors import InputError
from sourcesep.types import Segment, WindowScores

POST = dict(min_dur_ms=0.0, merge_gap_ms=0.0, padding_ms=0.0, duration_s=10.0)


def frames_active(*spans: tuple[int, int], n: int = 100) -> np.ndarray:
    """(n,) bool with frames [a, b) active for each span; frames are 0.1 s long."""
    a = np.zeros(n, bool)
    for s, e in spans:
        a[s:e] = True
    return a


T = np.arange(100) * 0.1


def spans(segs: list[Segment]) -> list[tuple[float, float]]:
    return [(round(s.start, 6), round(s.end, 6)) for s in segs]


def test_runs_become_segments_with_mean_score():
    active = frames_active((10, 20), (40, 45))
    scores = np.where(active, 0.5, 0.0)
    scores[10:20] = np.linspace(0.6, 0.8, 10)
    segs = segments_from_mask(active, T, 0.1, scores, **POST)
    assert spans(segs) == [(1.0, 2.0), (4.0, 4.5)]
    assert segs[0].score == pytest.approx(0.7)
    assert segs[1].score == pytest.approx(0.5)


def test_nothing_active_gives_no_segments():
    assert segments_from_mask(np.zeros(100, bool), T, 0.1, np.zeros(100), **POST) == []


def test_merge_gap():
    active = frames_active((10, 20), (22, 30))  # gap of 0.2 s between 2.0 and 2.2
    scores = active.astype(float)
    merged = segments_from_mask(active, T, 0.1, scores, **{**POST, "merge_gap_ms": 250})
    assert spans(merged) == [(1.0, 3.0)]
    assert merged[0].score == pytest.approx(1.0)  # mean over active frames only
    apart = segments_from_mask(active, T, 0.1, scores, **{**POST, "merge_gap_ms": 150})
    assert spans(apart) == [(1.0, 2.0), (2.2, 3.0)]


def test_min_duration_drops_short_spans_after_merging():
    active = frames_active((10, 12), (13, 15), (50, 52))  # 0.2 s pieces; the first two merge to 0.5 s
    scores = active.astype(float)
    segs = segments_from_mask(active, T, 0.1, scores, **{**POST, "merge_gap_ms": 150, "min_dur_ms": 400})
    assert spans(segs) == [(1.0, 1.5)]


def test_padding_and_clipping_at_edges():
    active = frames_active((0, 5), (50, 60), (95, 100))
    segs = segments_from_mask(active, T, 0.1, active.astype(float), **{**POST, "padding_ms": 100})
    assert spans(segs) == [(0.0, 0.6), (4.9, 6.1), (9.4, 10.0)]


def test_padding_that_makes_segments_overlap_merges_them():
    active = frames_active((10, 20), (21, 30))  # 0.1 s apart; padding 100 ms each side overlaps
    segs = segments_from_mask(active, T, 0.1, active.astype(float), **{**POST, "padding_ms": 100})
    assert spans(segs) == [(0.9, 3.1)]


def test_overlapping_windows_merge_into_one_span():
    starts = np.arange(19) * 0.5  # 1 s windows every 0.5 s
    active = np.zeros(19, bool)
    active[[4, 6]] = True  # [2, 3] and [3, 4]: touching, not consecutive
    segs = segments_from_mask(active, starts, 1.0, active.astype(float), **{**POST, "merge_gap_ms": 1})
    assert spans(segs) == [(2.0, 4.0)]


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        segments_from_mask(np.ones(3, bool), np.arange(4), 0.1, np.ones(3), **POST)


def test_threshold_absolute_vs_percentile():
    s = np.linspace(0.0, 1.0, 101)
    assert threshold(s, 0.3, 92.0) == 0.3
    assert threshold(s, None, 92.0) == pytest.approx(0.92)
    assert threshold(s, None, 50.0) == pytest.approx(np.percentile(s, 50))
    assert math.isinf(threshold(np.array([]), None, 92.0))


def window_scores(probs: np.ndarray, cosine: np.ndarray | None = None) -> WindowScores:
    n = probs.size
    return WindowScores(
        starts_s=np.arange(n) * 0.5,
        window_sec=1.0,
        probs=probs.astype(np.float32),
        cosine=(np.ones(n) if cosine is None else cosine).astype(np.float32),
    )


# Known content at [2, 4] and [6.5, 8] s: the windows starting 2.0-3.0 and 6.5-7.0 score high.
PROBS = np.full(19, 0.1)
PROBS[[4, 5, 6]] = [0.8, 0.9, 0.85]
PROBS[[13, 14]] = [0.7, 0.75]
AST_KW = dict(
    cls_threshold=None, cls_percentile=92.0, use_cosine_gate=False, cosine_threshold=0.45,
    min_dur_ms=500.0, merge_gap_ms=200.0, padding_ms=50.0,
)


def test_detect_ast_absolute_threshold_finds_known_segments():
    det = detect_ast(window_scores(PROBS), 10.0, **{**AST_KW, "cls_threshold": 0.5})
    assert det.name == "ast" and det.found and det.threshold == 0.5
    assert spans(det.segments) == [(1.95, 4.05), (6.45, 8.05)]
    assert det.segments[0].score == pytest.approx(np.mean([0.8, 0.9, 0.85]), abs=1e-6)
    np.testing.assert_allclose(det.times_s, np.arange(19) * 0.5 + 0.5)
    np.testing.assert_allclose(det.activity, PROBS, atol=1e-6)
    assert det.windows is not None and det.evidence["active_windows"] == 5


def test_detect_ast_percentile_threshold_keeps_top_windows():
    det = detect_ast(window_scores(PROBS), 10.0, **AST_KW)
    assert det.threshold == pytest.approx(np.percentile(PROBS, 92))
    # Only the two best windows (starts 2.5 and 3.0) clear the 92nd percentile.
    assert spans(det.segments) == [(2.45, 4.05)]
    assert det.evidence["threshold_source"] == "percentile 92"


def test_detect_ast_cosine_gate():
    cos = np.full(19, 0.9)
    cos[[13, 14]] = 0.2  # the second span scores high but does not resemble the query
    kw = {**AST_KW, "cls_threshold": 0.5}
    gated = detect_ast(window_scores(PROBS, cos), 10.0, **{**kw, "use_cosine_gate": True})
    assert spans(gated.segments) == [(1.95, 4.05)]
    ungated = detect_ast(window_scores(PROBS, cos), 10.0, **kw)
    assert len(ungated.segments) == 2


def test_detect_ast_nothing_above_threshold_is_not_found():
    det = detect_ast(window_scores(PROBS), 10.0, **{**AST_KW, "cls_threshold": 0.99})
    assert not det.found and det.segments == []


def test_detect_ast_end_to_end_on_tiny_model(tiny_ast_dir, pair):
    from sourcesep.ast_model import AstModel

    mix, query, _, _ = pair
    ast = AstModel.load(tiny_ast_dir, offline=True)
    ws = ast.score_windows(mix, ast.classify(query), 1.0, 0.5)
    det = detect_ast(ws, mix.size / 16000, **AST_KW)
    assert det.activity.shape == det.times_s.shape == (19,)
    assert np.all((det.activity >= 0) & (det.activity <= 1))
    assert det.found == bool(det.segments) and det.found  # a percentile always keeps the top windows
    ends = [0.0]
    for s in det.segments:
        assert 0.0 <= s.start < s.end <= 10.0 and s.start >= ends[-1]
        assert s.duration >= 0.5
        ends.append(s.end)


def test_detect_oracle():
    t = np.arange(100) * 0.1 + 0.05
    det = detect_oracle([Segment(6.5, 8.0), Segment(2.0, 4.0), Segment(9.5, 12.0)], 10.0, t)
    assert det.name == "oracle" and det.found
    assert spans(det.segments) == [(2.0, 4.0), (6.5, 8.0), (9.5, 10.0)]
    expected = ((t >= 2) & (t <= 4)) | ((t >= 6.5) & (t <= 8)) | (t >= 9.5)
    np.testing.assert_array_equal(det.activity, expected.astype(np.float32))
    empty = detect_oracle([], 10.0, t)
    assert not empty.found and not empty.activity.any()


def test_segments_from_text_file(tmp_path):
    f = tmp_path / "segs.txt"
    f.write_text("# known target spans\n6.5 8.0\n\n2.0\t4.0\tdog bark  # Audacity label\n1,1.5\n")
    assert spans(segments_from_file(f)) == [(1.0, 1.5), (2.0, 4.0), (6.5, 8.0)]
    (tmp_path / "empty.txt").write_text("# nothing here\n")
    assert segments_from_file(tmp_path / "empty.txt") == []


def test_segments_from_json_file(tmp_path):
    f = tmp_path / "segs.json"
    f.write_text(json.dumps([[6.5, 8], [2, 4, 0.9]]))
    segs = segments_from_file(f)
    assert spans(segs) == [(2.0, 4.0), (6.5, 8.0)] and segs[0].score == pytest.approx(0.9)
    f.write_text(json.dumps([{"start": 2, "end": 4}, {"start": 6.5, "end": 8.0, "score": 0.5}]))
    assert spans(segments_from_file(f)) == [(2.0, 4.0), (6.5, 8.0)]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("2.0 4.0\nabc def\n", "line 2"),
        ("2.0\n", "line 1"),
        ("4.0 2.0\n", "not after start"),
        ("-1 2\n", "negative"),
        ("nan 2\n", "finite"),
        ("[[2, 4], [3]]", "item 1"),
        ('[{"start": 1}]', "item 0"),
        ('{"start": 1, "end": 2}', "must be a list"),
        ("[[2, 4],", "invalid JSON"),
        ('[["a", "b"]]', "item 0"),
    ],
)
def test_bad_segment_files_name_the_file_and_problem(tmp_path, content, problem):
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(InputError) as err:
        segments_from_file(f)
    assert str(f) in str(err.value) and problem in str(err.value)


def test_missing_or_binary_segment_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        segments_from_file(tmp_path / "nope.txt")
    b = tmp_path / "bin.txt"
    b.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="cannot read"):
        segments_from_file(b)


def test_frames_inside_marks_frames_within_any_segment_ends_included():
    from sourcesep.detect import frames_inside

    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    segs = [Segment(0.5, 1.0, 1.0), Segment(2.4, 3.0, 1.0)]
    assert frames_inside(segs, t).tolist() == [False, True, True, False, False, True, True]
    assert not frames_inside([], t).any() and frames_inside([], t).shape == t.shape
