#!/usr/bin/env python3
"""Masker and detector experiments on a benchmark split: one table row per variant.

  python benchmarks/experiments.py --cases ../shared/bench/dev shipped eq-gt:bands=16,power=0.5 \
      [--segments-from-gt] [--per-case] [--jobs 2] [--seeds K]

Each VARIANT is ``NAME`` or ``NAME:key=value,...`` (see ``--list``). Every variant runs the
shipped query detector (or oracle segments from gt.wav with ``--segments-from-gt``, as in
quality.py), builds its mask and applies it to the mixture STFT (or returns the target waveform
itself, as the phase-reconstruction variant does), and scores the estimate with the
benchmark's own SI-SDR (imported from CASES/../score.py). The row gives the scorer's mean / median
over the present cases, the same over the cases with an audible target and with silent estimates
counted as 0 (the scorer rewards silence), group means over the audible cases (event same-class,
event same-source, music, speech), and the leakage of the absent cases that were not silenced;
with ``--seeds K``, each figure's mean over NMF seeds 0..K-1 and the range of the medians.
``shipped`` equals ``quality.py --detector query --masker nmf``.

The variants live in ``benchmarks/variants/``, one module per kind of change. Variants named
``*-gt`` read gt.wav: they are bounds (what a perfect estimate of one quantity would give), not
methods. The round-6 to round-15 logs in benchmarks/RESULTS.md were measured with
this script.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from variants import VARIANTS  # noqa: E402  (after the path set-up above)
from variants.common import HOP, NFFT, SR  # noqa: E402

INAUDIBLE_PEAK = 1e-3  # gt.wav peaks below this: the target is inaudible (quality.py's caveats)


# --------------------------------------------------------------------------- running and scoring

def parse_variant(spec: str) -> tuple[str, dict]:
    """``NAME`` or ``NAME:key=value,...`` → (name, kwargs) with numbers and booleans parsed."""
    from quality import _parse_value

    name, _, rest = spec.partition(":")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    kw = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise SystemExit(f"variant {spec!r}: {item!r} is not key=value")
        kw[key.replace("-", "_")] = _parse_value(val)
    return name, kw


def run_case(job: tuple) -> tuple[str, float, bool]:
    """Score one case (folder, variant spec, oracle segments?, the shipped mask's frame-gain
    exponent[, keyword arguments of the query detector[, NMF seed[, the shipped masker's
    second-pass share (None: as shipped)[, whether a mask is scaled to a largest value of 1, as the
    Separator scales the NMF maskers' (default True)[, the magnitude compression of a matching
    query's decompositions (None: as shipped)]]]]]): (case, figure, silent), the figure SI-SDRi (dB) when
    the target is present, else leakage (dB re mixture; ``-inf`` for an exactly silent estimate),
    ``silent`` whether the estimate is all zeros. The seed (default 0) seeds the query detector
    (unless the detector keywords name one) and the shipped masker's decomposition. Any failure is
    raised as a RuntimeError that names the case and the variant."""
    case_dir, spec, oracle, gain_power, *rest = job
    detector_kw = rest[0] if rest else {}
    seed = int(rest[1]) if len(rest) > 1 else 0
    masker_kw = {"frame_gain_power": gain_power, "second_pass_share": rest[2] if len(rest) > 2 else None, "seed": seed}
    peak_scale = bool(rest[3]) if len(rest) > 3 else True
    from sourcesep.maskers import MATCHED_COMPRESSION

    masker_kw["matched_compression"] = rest[4] if len(rest) > 4 and rest[4] is not None else MATCHED_COMPRESSION
    try:
        return _score_case(Path(case_dir), spec, oracle, {"seed": seed, **detector_kw}, masker_kw, peak_scale)
    except Exception as e:  # noqa: BLE001 - re-raised with the case's name
        raise RuntimeError(f"case {Path(case_dir).name}, variant {spec}: {type(e).__name__}: {e}") from e


def _score_case(d: Path, spec: str, oracle: bool, detector_kw: dict, masker_kw: dict,
                peak_scale: bool = True) -> tuple[str, float, bool]:
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    from quality import gt_segments

    from sourcesep import detect, features, reconstruct
    from sourcesep.querydetect import detect_query
    from sourcesep.types import Segment

    mix = sf.read(d / "mix.wav", dtype="float32")[0]
    query = sf.read(d / "query.wav", dtype="float32")[0]
    gt = sf.read(d / "gt.wav", dtype="float32")[0]
    meta = json.loads((d / "meta.json").read_text())
    X = features.stft(torch.from_numpy(mix), NFFT, HOP)
    Q = features.stft(torch.from_numpy(query), NFFT, HOP)
    times = features.frame_times(X.shape[1], HOP, SR)
    if oracle:
        segs = [Segment(a, b, 1.0) for a, b in gt_segments(gt, floor_db=-30.0, merge_gap_s=0.1)]
        det = detect.detect_oracle(segs, len(mix) / SR, times)
    else:
        det = detect_query(mix, query, mix_stft=X, query_stft=Q, **detector_kw)
    if det.found:
        name, kw = parse_variant(spec)
        ctx = dict(X=X, Q=Q, V=features.magnitude(X), Vq=features.magnitude(Q), times=times, det=det,
                   G=features.magnitude(features.stft(torch.from_numpy(gt), NFFT, HOP)),
                   x=torch.from_numpy(mix), q=torch.from_numpy(query), g=torch.from_numpy(gt),
                   **masker_kw)
        out = np.asarray(VARIANTS[name](ctx, **kw))
        if out.ndim == 1:  # a waveform estimate (n,), e.g. from a phase reconstruction
            est = out.astype(np.float64)
        else:  # a mask (F, T) on the mixture's STFT
            if peak_scale and out.max() > 0:  # as the Separator scales the NMF maskers' masks
                out = np.minimum(out / out.max(), 1.0)
            est = np.asarray(reconstruct.apply_mask(X, torch.as_tensor(out), NFFT, HOP, len(mix)), dtype=np.float64)
    else:
        est = np.zeros(len(mix))
    from quality import load_scorer

    scorer = load_scorer(d.parent.parent / "score.py")
    mix64, gt64 = mix.astype(np.float64), gt.astype(np.float64)
    silent = not bool(np.any(est))
    if meta["target_present"]:
        return d.name, float(scorer.si_sdr(est, gt64) - scorer.si_sdr(mix64, gt64)), silent
    e = float(est @ est)
    return d.name, (10 * np.log10(e / float(mix64 @ mix64)) if e > 0 else -np.inf), silent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", help="NAME or NAME:key=value,... (see --list)")
    ap.add_argument("--cases", help="benchmark split folder (with manifest.json)")
    ap.add_argument("--segments-from-gt", action="store_true", help="oracle segments instead of the query detector")
    ap.add_argument("--per-case", action="store_true", help="also print every case's figure per variant")
    ap.add_argument("--jobs", type=int, default=2, help="cases in parallel (1 thread each)")
    ap.add_argument("--frame-gain-power", type=float, default=None, metavar="P",
                    help="the shipped mask's frame-gain exponent (default: the shipped "
                         "maskers.FRAME_GAIN_POWER; 0 turns it off: rounds 6-8 were measured without it, "
                         "and rounds 6-9 with --detector-params threshold_frac=0.5,activity_mode=soft)")
    ap.add_argument("--second-pass-share", type=float, default=None, metavar="S",
                    help="the shipped masker's second-pass share (default: as shipped, "
                         "maskers.second_pass_for; 0: one decomposition, as rounds 1-10 were measured)")
    ap.add_argument("--matched-compression", type=float, default=None, metavar="A",
                    help="the magnitude compression of a matching query's decompositions in the shipped "
                         "masker and the variants built on its decomposition (default: as shipped, "
                         "maskers.MATCHED_COMPRESSION; 1: none, as rounds 1-13 were measured)")
    ap.add_argument("--detector-params", default="", metavar="KEY=VALUE,...",
                    help="keyword arguments of the query detector (sourcesep.querydetect.detect_query), "
                         "e.g. threshold_frac=0.4,activity_mode=segments")
    ap.add_argument("--seeds", type=int, default=1, metavar="K",
                    help="run every variant with the NMF seeds 0..K-1 (query detector and shipped masker) "
                         "and give the mean of each figure over them: one seed's median moves by a few "
                         "tenths of a dB (benchmarks/RESULTS.md, round 11)")
    ap.add_argument("--raw-scale", action="store_true",
                    help="leave each mask at its own scale instead of scaling it to a largest value of 1 "
                         "(as the Separator does since round 12); only the leakage changes: rounds 1-11 "
                         "were measured so")
    ap.add_argument("--list", action="store_true", help="list the variants and their parameters")
    args = ap.parse_args(argv)
    if args.list:
        for name, fn in VARIANTS.items():
            params = [p for p in list(inspect.signature(fn).parameters.values())[1:]
                      if p.kind != p.VAR_KEYWORD]
            if hasattr(fn, "passes_to"):
                params += list(inspect.signature(fn.passes_to).parameters.values())[2:]
            defaults = ",".join(f"{p.name}={p.default}" for p in params)
            print(f"{name}{':' + defaults if defaults else ''}\n    {' '.join((fn.__doc__ or '').split())}")
        return 0
    if not args.cases or not args.variants:
        ap.error("--cases and at least one variant are needed (or --list)")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    for spec in args.variants:
        parse_variant(spec)
    detector_kw = parse_variant("shipped:" + args.detector_params)[1]
    cases = Path(args.cases).resolve()
    if not (cases / "manifest.json").is_file() or not (cases.parent / "score.py").is_file():
        ap.error(f"{cases} is not a benchmark split (it needs manifest.json, and score.py beside it)")
    manifest = json.loads((cases / "manifest.json").read_text())
    metas = {c["case"]: c for c in manifest["cases"]}
    inaudible = {n for n, c in metas.items() if c["target_present"]
                 and np.abs(_read(cases / n / "gt.wav")).max() < INAUDIBLE_PEAK}
    from sourcesep import maskers

    gain_power = maskers.FRAME_GAIN_POWER if args.frame_gain_power is None else args.frame_gain_power
    table: dict[str, dict[str, float]] = {}  # per variant, each case's figure (mean over seeds)
    det_name = "oracle" if args.segments_from_gt else "query"
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        for spec in args.variants:
            runs = []
            for seed in range(args.seeds):
                jobs = [(str(cases / n), spec, args.segments_from_gt, gain_power, detector_kw, seed,
                         args.second_pass_share, not args.raw_scale, args.matched_compression) for n in metas]
                try:
                    runs.append({n: (v, silent) for n, v, silent in ex.map(run_case, jobs)})
                except RuntimeError as e:
                    print(f"experiments.py: {e}", file=sys.stderr)
                    return 1
            table[spec] = {n: float(np.mean([r[n][0] for r in runs])) for n in metas}
            print(_row(spec, det_name, runs, metas, inaudible), flush=True)
    if args.per_case:
        print("case  " + " ".join(f"{s[:12]:>12s}" for s in args.variants) + "  label")
        for n, c in metas.items():
            print(f"{n:5s} " + " ".join(f"{table[s][n]:12.2f}" for s in args.variants) + f"  {c['label']}")
    return 0


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    return sf.read(path, dtype="float32")[0]


def _stats(res: dict[str, tuple[float, bool]], metas: dict, inaudible: set[str]) -> dict[str, float]:
    """One run's figures: mean / median over the present cases, the same over the audible ones
    and with silent estimates counted as 0 (no improvement), the number of present cases given a
    silent estimate, group means over the audible cases and the leakage of the absent cases that
    were not silenced (NaN when all were)."""
    present = [n for n, c in metas.items() if c["target_present"]]
    audible = [n for n in present if n not in inaudible]
    a, a49 = np.array([res[n][0] for n in present]), np.array([res[n][0] for n in audible])
    honest = np.array([0.0 if res[n][1] else res[n][0] for n in present])
    out = {"mean": a.mean(), "median": np.median(a), "mean49": a49.mean(), "median49": np.median(a49),
           "honest_mean": honest.mean(), "honest_median": np.median(honest),
           "silent": float(sum(res[n][1] for n in present))}
    groups: dict[str, list[float]] = {}
    for n in audible:
        c = metas[n]
        groups.setdefault(f"group:{c['kind'][:2]}-{c['query_mode'][5:9]}", []).append(res[n][0])
    out.update({k: float(np.mean(v)) for k, v in groups.items()})
    leaks = [res[n][0] for n, c in metas.items() if not c["target_present"] and np.isfinite(res[n][0])]
    out["leak"] = float(np.mean(leaks)) if leaks else float("nan")
    return out


def _row(spec: str, det_name: str, runs: list[dict[str, tuple[float, bool]]], metas: dict,
         inaudible: set[str]) -> str:
    """A variant's table row: :func:`_stats` of each run (one per seed), averaged over the runs."""
    stats = [_stats(r, metas, inaudible) for r in runs]
    f = {k: float(np.nanmean([s[k] for s in stats])) if any(np.isfinite(s[k]) for s in stats) else float("nan")
         for k in stats[0]}
    n_present = sum(c["target_present"] for c in metas.values())
    g = " ".join(f"{k[6:]} {f[k]:5.2f}" for k in sorted(k for k in f if k.startswith("group:")))
    leak = f"{f['leak']:6.2f}" if np.isfinite(f["leak"]) else "   -  "
    seeds = ""
    if len(runs) > 1:  # how far one seed's medians stray
        span = lambda k: f"{min(x[k] for x in stats):.2f}-{max(x[k] for x in stats):.2f}"  # noqa: E731
        seeds = f" | seeds 0-{len(runs) - 1}: medians {span('median')}, {span('median49')}"
    return (f"{spec:32s} {det_name:6s} {n_present}: {f['mean']:5.2f} / {f['median']:5.2f}  "
            f"{n_present - len(inaudible)}: {f['mean49']:5.2f} / {f['median49']:5.2f}  "
            f"silence as 0: {f['honest_mean']:5.2f} / {f['honest_median']:5.2f} ({f['silent']:.0f} silent) | {g} | "
            f"leak (not silenced) {leak}{seeds}")


if __name__ == "__main__":
    sys.exit(main())
