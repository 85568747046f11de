"""benchmarks/experiments.py: its `shipped` variant is the product (same SI-SDRi as the public
Separator), bounds read the ground truth, variants and their parameters parse or fail clearly."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sourcesep import Separator
from sourcesep.maskers import FRAME_GAIN_POWER

from signals import SR, harmonic_tone, make_pair, noise

REPO = Path(__file__).resolve().parents[1]

# The benchmark's scorer formula (scale-invariant SDR), as a split's score.py provides it.
SCORER = '''
import numpy as np
def si_sdr(est, ref):
    est, ref = est - est.mean(), ref - ref.mean()
    s = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12) * ref
    return 10 * np.log10((np.dot(s, s) + 1e-12) / (np.dot(est - s, est - s) + 1e-12))
'''


@pytest.fixture(scope="module")
def experiments():
    # Imported by its own name, so the worker processes of its CLI can unpickle run_case.
    sys.path.insert(0, str(REPO / "benchmarks"))
    return importlib.import_module("experiments")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A two-case split: the synthetic tone pair (present) and a bed with no tone (absent)."""
    root = tmp_path_factory.mktemp("bench")
    (root / "score.py").write_text(SCORER)
    cases = root / "dev"
    mix, query, gt, _ = make_pair()
    bed = noise(10.0, seed=5)
    entries = []
    for name, m, g, present in (("000", mix, gt, True), ("001", bed, np.zeros_like(bed), False)):
        d = cases / name
        d.mkdir(parents=True)
        sf.write(d / "mix.wav", m, SR)
        sf.write(d / "query.wav", query if present else harmonic_tone(1.5, f0=2600.0, seed=3), SR)
        sf.write(d / "gt.wav", g, SR)
        meta = {"case": name, "kind": "event", "label": "tone", "query_mode": "same-class",
                "target_present": present, "tir_db": 0.0}
        (d / "meta.json").write_text(json.dumps(meta))
        entries.append(meta)
    (cases / "manifest.json").write_text(json.dumps({"cases": entries}))
    return cases


def test_shipped_variant_scores_what_the_separator_produces(experiments, split):
    torch.set_num_threads(1)
    case = split / "000"
    name, figure, silent = experiments.run_case((str(case), "shipped", False, FRAME_GAIN_POWER))
    mix, gt = sf.read(case / "mix.wav", dtype="float32")[0], sf.read(case / "gt.wav", dtype="float32")[0]
    res = Separator(model="none", threads=1).separate(str(case / "mix.wav"), str(case / "query.wav"))
    assert name == "000" and not silent
    si_sdr = importlib.import_module("quality").load_scorer(split.parent / "score.py").si_sdr
    est, mix, gt = (np.asarray(x, np.float64) for x in (res.target, mix, gt))
    assert figure == pytest.approx(si_sdr(est, gt) - si_sdr(mix, gt), abs=0.05)
    assert figure > 3.0  # the tone is extracted from its bed


def test_absent_case_reports_leakage_and_a_bound_reads_the_ground_truth(experiments, split):
    _, leak, silent = experiments.run_case((str(split / "001"), "shipped", False, FRAME_GAIN_POWER))
    assert leak < -20.0 and silent == (leak == -np.inf)  # another tone's query finds nothing in a bare bed
    _, shipped, _ = experiments.run_case((str(split / "000"), "shipped", True, FRAME_GAIN_POWER))
    _, refined, _ = experiments.run_case((str(split / "000"), "refine-gt", True, FRAME_GAIN_POWER))
    # With oracle segments the activity already is the target's frames: the refinement is a no-op.
    assert refined == pytest.approx(shipped, abs=0.2)


def test_cli_prints_one_row_per_variant(experiments, split, capsys):
    assert experiments.main(["--cases", str(split), "--jobs", "1", "shipped", "eq-gt:bands=8,power=0.5"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert [r.split()[0] for r in rows] == ["shipped", "eq-gt:bands=8,power=0.5"]
    assert all(" 1: " in r and "leak (not silenced)" in r for r in rows)


def test_a_failing_case_is_named_and_a_folder_that_is_no_split_is_refused(experiments, split, tmp_path, capsys):
    with pytest.raises(RuntimeError, match="case 000, variant eq-gt:bands=0"):
        experiments.run_case((str(split / "000"), "eq-gt:bands=0", False, FRAME_GAIN_POWER))
    assert experiments.main(["--cases", str(split), "--jobs", "1", "eq-gt:bands=0"]) == 1
    assert "case 000, variant eq-gt:bands=0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        experiments.main(["--cases", str(tmp_path), "shipped"])
    assert "is not a benchmark split" in capsys.readouterr().err


def test_variant_specs_parse_or_fail_with_the_known_names(experiments):
    assert experiments.parse_variant("pieces:delta=0.4,floor=0.3,soft=0") == ("pieces", {"delta": 0.4, "floor": 0.3, "soft": 0})
    assert experiments.parse_variant("modulation:with-timbre=true") == ("modulation", {"with_timbre": True})
    with pytest.raises(SystemExit, match="unknown variant 'nope'.*shipped"):
        experiments.parse_variant("nope")
    with pytest.raises(SystemExit, match="not key=value"):
        experiments.parse_variant("eq-gt:bands")


def test_pitch_tracker_follows_a_harmonic_tone_and_calls_noise_unvoiced(experiments):
    from variants.pitch import pitch_track  # importable once the experiments fixture set the path

    from sourcesep import features

    tone = torch.from_numpy(harmonic_tone(1.0, f0=220.0))
    f0, voicing = pitch_track(features.magnitude(features.stft(tone, 2048, 256)).numpy(), 2048)
    mid = slice(8, -8)  # away from the fades
    # the tone's vibrato is ±1 % around 220 Hz
    assert np.all(np.abs(f0[mid] / 220.0 - 1) < 0.02) and np.all(voicing[mid] > 0.5)
    bed = torch.from_numpy(noise(1.0, seed=2))
    _, v_noise = pitch_track(features.magnitude(features.stft(bed, 2048, 256)).numpy(), 2048)
    assert np.median(v_noise) < 0.3


def test_waveform_variants_are_scored_as_estimates(experiments, split):
    torch.set_num_threads(1)
    case = str(split / "000")
    _, shipped, _ = experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER))
    _, same, _ = experiments.run_case((case, "misi:iters=0", False, FRAME_GAIN_POWER))  # no iteration: the shipped estimate
    assert same == pytest.approx(shipped, abs=1e-3)
    _, misi, _ = experiments.run_case((case, "misi:iters=3", False, FRAME_GAIN_POWER))
    _, comb, _ = experiments.run_case((case, "pitch-comb:mode=max,boost=0.5", False, FRAME_GAIN_POWER))
    assert np.isfinite(misi) and np.isfinite(comb) and misi > 0 and comb > 0


def test_trained_network_variant_is_seeded_and_scores(experiments, split):
    torch.set_num_threads(1)
    case = str(split / "000")
    spec = "ttt-eq:eq_db=12,gamma=0.25,loss=bce,steps=20"
    _, a, _ = experiments.run_case((case, spec, False, FRAME_GAIN_POWER))
    _, b, _ = experiments.run_case((case, spec, False, FRAME_GAIN_POWER))
    assert a == b and np.isfinite(a)  # seeded: the same figure twice


def test_frame_gate_variants_and_the_gain_free_baseline(experiments, split, capsys):
    torch.set_num_threads(1)
    case = str(split / "000")
    _, shipped, _ = experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER))
    _, before, _ = experiments.run_case((case, "shipped", False, 0.0))  # the shipped mask before round 9
    assert np.isfinite(before) and shipped != before
    _, bound, _ = experiments.run_case((case, "share-gt", True, 0.0))
    _, nmf_gate, _ = experiments.run_case((case, "nmf-gate", False, 0.0))
    spec = "ttt-gate:steps=20"
    _, a, _ = experiments.run_case((case, spec, False, 0.0))
    _, b, _ = experiments.run_case((case, spec, False, 0.0))
    assert a == b and all(np.isfinite(v) and v > 0 for v in (bound, nmf_gate, a))
    assert experiments.main(["--cases", str(split), "--jobs", "1", "--frame-gain-power", "0", "shipped"]) == 0
    assert f"{before:5.2f} /" in capsys.readouterr().out


def test_detector_params_reach_the_query_detector(experiments, split, capsys):
    """--detector-params sets the query detector's keyword arguments (the earlier rounds' settings
    reproduce their rows); a key the detector does not take is an error naming the case."""
    torch.set_num_threads(1)
    case = str(split / "000")
    earlier = {"threshold_frac": 0.5, "activity_mode": "soft"}
    _, shipped, _ = experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER))
    _, same, _ = experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER, {}))
    _, before, _ = experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER, earlier))
    assert same == shipped and np.isfinite(before) and before != shipped
    argv = ["--cases", str(split), "--jobs", "1", "--detector-params", "threshold_frac=0.5,activity_mode=soft", "shipped"]
    assert experiments.main(argv) == 0
    assert f"{before:5.2f} /" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="case 000, variant shipped: TypeError"):
        experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER, {"no_such_setting": 1}))


def test_share_variants_reduce_to_the_shipped_mask_at_their_neutral_setting(experiments, split):
    torch.set_num_threads(1)
    case = str(split / "000")
    _, shipped, _ = experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER))
    _, no_second_pass, _ = experiments.run_case((case, "two-pass:thr=0", False, FRAME_GAIN_POWER))
    _, masker_share_only, _ = experiments.run_case((case, "share-mix:weight=0", False, FRAME_GAIN_POWER))
    _, same_decomposition, _ = experiments.run_case((case, "share-from", False, FRAME_GAIN_POWER))
    assert same_decomposition == pytest.approx(shipped, abs=1e-3)
    assert no_second_pass == pytest.approx(shipped, abs=1e-3)
    assert masker_share_only == pytest.approx(shipped, abs=1e-3)
    _, second, _ = experiments.run_case((case, "two-pass:thr=0.5", False, FRAME_GAIN_POWER))
    _, blended, _ = experiments.run_case((case, "share-mix", False, FRAME_GAIN_POWER))
    assert np.isfinite(second) and np.isfinite(blended) and second > 0 and blended > 0


def test_matched_gain_leaves_a_query_that_does_not_match_as_shipped(experiments, split):
    """The synthetic tone's query is another take at another level (timbre match about 0.81, below
    the shipped 0.9): the variant changes nothing for it, whatever its exponent."""
    torch.set_num_threads(1)
    case = str(split / "000")
    _, shipped, _ = experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER))
    for spec in (f"matched-gain:p1={FRAME_GAIN_POWER}", "matched-gain:p1=1,rel=90"):
        _, figure, _ = experiments.run_case((case, spec, False, FRAME_GAIN_POWER))
        assert figure == pytest.approx(shipped, abs=1e-3)


def test_seeds_average_the_rows_and_the_silent_estimates_are_counted(experiments, split, capsys):
    """--seeds K runs every case with the NMF seeds 0..K-1 and gives the mean of each figure; the
    row also counts the present cases given a silent estimate and scores them as 0 beside."""
    torch.set_num_threads(1)
    case = str(split / "000")
    figures = [experiments.run_case((case, "shipped", False, FRAME_GAIN_POWER, {}, seed))[1] for seed in (0, 1)]
    assert figures[0] != figures[1]  # the seed reaches the decomposition
    assert experiments.main(["--cases", str(split), "--jobs", "1", "--seeds", "2", "shipped"]) == 0
    row = capsys.readouterr().out
    mean = f"{np.mean(figures):5.2f}"
    low, high = sorted(figures)
    assert f"1: {mean} / {mean}" in row and f"seeds 0-1: medians {low:.2f}-{high:.2f}, {low:.2f}-{high:.2f}" in row
    assert f"silence as 0: {mean} / {mean} (0 silent)" in row
    # A detector that finds nothing in the present case: a silent estimate, scored as 0 beside.
    assert experiments.main(["--cases", str(split), "--jobs", "1", "--detector-params", "min_query_share=1.01",
                             "shipped"]) == 0
    assert "silence as 0:  0.00 /  0.00 (1 silent)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        experiments.main(["--cases", str(split), "--seeds", "0", "shipped"])


def test_second_pass_share_and_the_round_11_variants(experiments, split):
    """--second-pass-share 0 gives the one-decomposition mask of rounds 1-10, which the two-pass
    variant turns back into the shipped one; the round-11 variants run, and those with a neutral
    setting reduce to the shipped mask."""
    torch.set_num_threads(1)
    case = str(split / "000")
    run = lambda spec, share=None: experiments.run_case((case, spec, False, FRAME_GAIN_POWER, {}, 0, share))[1]  # noqa: E731
    shipped, one_pass = run("shipped"), run("shipped", 0.0)
    assert shipped != one_pass
    assert run("two-pass:thr=0.5,width=5", 0.0) == pytest.approx(shipped, abs=1e-3)
    assert run("band-gain:bands=1") == pytest.approx(shipped, abs=1e-3)
    assert run("prune-atoms:thr=2", 0.0) == pytest.approx(one_pass, abs=1e-3)  # no atom is that alike
    for spec in ("seed-ensemble:n=2", "prune-atoms", "band-gain", "exemplar-init", "ratio-score:harmonic_only=true"):
        figure = run(spec)
        assert np.isfinite(figure) and figure > 0, spec


def test_round_12_variants_and_the_raw_scale(experiments, split):
    """The round-12 variants reduce to the shipped mask at their neutral settings and change it
    otherwise; leaving each mask at its own scale changes no SI-SDRi, only the leakage."""
    torch.set_num_threads(1)
    case = str(split / "000")
    run = lambda spec, share=None, peak=True: experiments.run_case(  # noqa: E731
        (case, spec, False, FRAME_GAIN_POWER, {}, 0, share, peak))[1]
    shipped = run("shipped")
    for neutral in ("shipped:n_iter=40", "iters", "adapt-q:lam=0", "share-floor:lam=0"):
        assert run(neutral) == pytest.approx(shipped, abs=1e-3), neutral
    assert run("two-pass:thr=0.5,width=5,skip_above=0", 0.0) == pytest.approx(run("shipped", 0.0), abs=1e-3)
    assert run("shipped", peak=False) == pytest.approx(shipped, abs=1e-3)
    for spec in ("shipped:n_iter=5", "iters:fit_iter=5", "adapt-q:lam=0.6", "eq-fit:two_pass=true"):
        figure = run(spec)
        assert np.isfinite(figure) and figure != pytest.approx(shipped, abs=1e-3), spec
    # The absent case, with the presence threshold off so the bare bed is not silenced: its
    # leakage is higher at the Separator's scale than at the mask's own.
    bed = str(split / "001")
    scaled = experiments.run_case((bed, "shipped", False, FRAME_GAIN_POWER, {"min_query_share": 0.0}, 0, None, True))
    raw = experiments.run_case((bed, "shipped", False, FRAME_GAIN_POWER, {"min_query_share": 0.0}, 0, None, False))
    assert not scaled[2] and scaled[1] > raw[1]


def test_round_13_variants(experiments, split):
    """Compressed-magnitude decompositions reduce to the shipped mask at alpha 1 and KL; frame-
    stacked atoms give a different, finite estimate."""
    torch.set_num_threads(1)
    case = str(split / "000")
    run = lambda spec: experiments.run_case((case, spec, False, FRAME_GAIN_POWER, {}, 0, None, True))[1]  # noqa: E731
    shipped = run("shipped")
    assert run("domain:alpha=1,beta=1") == pytest.approx(shipped, abs=1e-3)
    for spec in ("domain:alpha=0.5", "context", "context:r=2,step=2,average=false"):
        figure = run(spec)
        assert np.isfinite(figure) and figure != pytest.approx(shipped, abs=1e-3), spec


def test_a_matching_query_decomposes_compressed_magnitudes_unless_told_not_to(experiments, tmp_path):
    """A query from the target's own take (timbre match): the shipped masker decomposes |X|^0.5,
    which round 13's `domain:alpha_matched=0.5` reproduces; the job's matched compression 1 gives
    round 13's base (`domain`), as do the variants built on the shipped decomposition."""
    torch.set_num_threads(1)
    mix, query, gt, _ = make_pair()
    case = tmp_path / "bench" / "dev" / "000"
    case.mkdir(parents=True)
    (tmp_path / "bench" / "score.py").write_text(SCORER)
    take = query + noise(len(query) / SR, seed=11, level=0.01)  # another take over a quieter bed
    for name, x in (("mix", mix), ("query", take), ("gt", gt)):
        sf.write(case / f"{name}.wav", x, SR)
    (case / "meta.json").write_text(json.dumps({"case": "000", "target_present": True}))
    run = lambda spec, compression=None: experiments.run_case(  # noqa: E731
        (str(case), spec, True, FRAME_GAIN_POWER, {}, 0, None, True, compression))[1]
    shipped, base = run("shipped"), run("shipped", 1.0)
    assert np.isfinite(shipped) and shipped != pytest.approx(base, abs=1e-3)
    assert run("domain:alpha_matched=0.5") == pytest.approx(shipped, abs=1e-3)
    assert run("domain") == pytest.approx(base, abs=1e-3)
    assert run("iters") == pytest.approx(shipped, abs=1e-3)
    assert run("iters", 1.0) == pytest.approx(base, abs=1e-3)
    # A matching query is the one `if-matched` and `exemplars` change, and `if-unmatched` does not.
    assert run("if-matched:n_query_atoms=8") != pytest.approx(shipped, abs=1e-3)
    assert run("if-unmatched:n_query_atoms=8") == pytest.approx(shipped, abs=1e-3)
    assert np.isfinite(run("exemplars")) and run("exemplars") != pytest.approx(shipped, abs=1e-3)


def test_blur_if_matched_and_bootstrap_variants(experiments, split):
    """`if-matched` changes nothing for an unmatched query; `blur` and `bootstrap` reduce to the
    shipped mask at their neutral settings and change it otherwise."""
    torch.set_num_threads(1)
    case = str(split / "000")
    run = lambda spec: experiments.run_case((case, spec, False, FRAME_GAIN_POWER, {}, 0, None, True))[1]  # noqa: E731
    shipped = run("shipped")
    assert run("if-matched:n_free_atoms=0") == pytest.approx(shipped, abs=1e-3)  # the tone's query is not matched here
    assert run("if-unmatched:n_query_atoms=8") != pytest.approx(shipped, abs=1e-3)
    assert run("blur:bins=1") == pytest.approx(shipped, abs=1e-3)
    assert run("bootstrap:k=0") == pytest.approx(shipped, abs=1e-3)
    assert run("ratio-score:matched_only=true") == pytest.approx(shipped, abs=1e-3)
    assert run("det-compress:a=1") == pytest.approx(shipped, abs=1e-3)
    assert np.isfinite(run("det-compress:a=0.5"))
    assert run("exemplars") == pytest.approx(shipped, abs=1e-3)  # only a matching query's atoms change
    assert np.isfinite(run("exemplars:matched_only=false"))
    assert np.isfinite(run("bootstrap:k=8")) and run("bootstrap:k=8") != pytest.approx(shipped, abs=1e-3)
    blurred = run("blur:bins=9")
    assert np.isfinite(blurred) and blurred != pytest.approx(shipped, abs=1e-3)


def test_round_14_variants(experiments, split):
    """The round-14 variants reduce to the shipped mask at their neutral settings and change it
    otherwise (a vote over detector seeds only where they disagree)."""
    torch.set_num_threads(1)
    case = str(split / "000")
    run = lambda spec: experiments.run_case((case, spec, False, FRAME_GAIN_POWER, {}, 0, None, True))[1]  # noqa: E731
    shipped = run("shipped")
    for neutral in ("smooth-h:lam=0", "relax:gamma=1", "pass-blend:w=0", "dead-zone:tau=1e-9",
                    "domain:alpha_matched=0.5,beta_matched=1", "det-ensemble:n=1", "level-gain:d=1000,gamma=0",
                    "fine-gate:db=1000"):
        assert run(neutral) == pytest.approx(shipped, abs=1e-3), neutral
    for spec in ("smooth-h:lam=1", "smooth-h:lam=1,target_only=true", "relax:gamma=0.5", "pass-blend:w=0.5",
                 "dead-zone:tau=0.1", "domain:beta=1.5,alpha_matched=0.5", "redetect:thr=0.6",
                 "level-gain:d=10,gamma=1"):
        figure = run(spec)
        assert np.isfinite(figure) and figure != pytest.approx(shipped, abs=1e-3), spec
    # The refinement bound, split into its gate and its decompositions: both read gt.wav and run.
    for spec in ("refine-gt:part=gate", "refine-gt:part=atoms", "fine-gate", "fine-gate:score=parts"):
        assert np.isfinite(run(spec)), spec
    with pytest.raises(RuntimeError, match="part must be"):
        run("refine-gt:part=edges")
    # Three detector seeds agree on a clean tone: the vote keeps the shipped activity's figure.
    assert run("det-ensemble") == pytest.approx(shipped, abs=0.05)


def test_round_15_variants(experiments, split):
    """The dictionary bound and its two estimates run on a real pair, refuse unknown settings, and
    the coupled target dictionary stays near the shipped mask when the query's frames dominate and
    moves as their weight falls."""
    torch.set_num_threads(1)
    case = str(split / "000")
    run = lambda spec: experiments.run_case((case, spec, False, FRAME_GAIN_POWER, {}, 0, None, True))[1]  # noqa: E731
    shipped = run("shipped")
    for spec in ("atoms-gt", "atoms-gt:side=q", "atoms-gt:side=b,power=1,gain=0", "resid-bg", "resid-bg:mode=add",
                 "coupled-q:lam=0.1"):
        figure = run(spec)
        assert np.isfinite(figure) and figure != pytest.approx(shipped, abs=1e-3), spec
    assert run("coupled-q:lam=1e6") == pytest.approx(shipped, abs=0.5)
    # The query's weight steers the atoms: past a large weight nothing changes; a small one moves them.
    assert run("coupled-q:lam=1e8") == pytest.approx(run("coupled-q:lam=1e6"), abs=1e-3)
    assert abs(run("coupled-q:lam=0.1") - run("coupled-q:lam=1e6")) > 0.1
    # Target atoms from the mixture's own frames: picked by the share, or by gt.wav (a bound).
    for spec in ("bootstrap:raw=true", "bootstrap:raw=true,select=gt,min_share=0.8,top=1,only=true"):
        assert np.isfinite(run(spec)), spec
    assert run("bootstrap:matched_only=true") == pytest.approx(shipped, abs=1e-3)  # the tone's query is not matched
    with pytest.raises(RuntimeError, match="select must be"):
        run("bootstrap:select=level")
    with pytest.raises(RuntimeError, match="side must be"):
        run("atoms-gt:side=target")
    with pytest.raises(RuntimeError, match="mode must be"):
        run("resid-bg:mode=both")
