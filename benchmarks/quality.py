#!/usr/bin/env python3
"""Separation quality on a benchmark split, through the public API only.

  python benchmarks/quality.py --cases ../shared/bench/dev --out /tmp/q-out \
      [--detector query] [--masker nmf] [--segments-from-gt] [--limit N] [--jobs 2] [--KEY VALUE ...]

Every case folder of CASES (mix.wav, query.wav, gt.wav, meta.json; listed in manifest.json) is
separated with ``sourcesep.Separator(model="none", ...)``; OUT/<case>/target.wav and the detected
spans (OUT/<case>/detected.txt, ``start end`` in s per line) are written, then the benchmark's own
scorer (CASES/../score.py) prints its table, and a caveats block the figures it hides. Any separation parameter
(``sourcesep.params.Params``) can be passed as ``--key value``.

``--segments-from-gt`` writes OUT/<case>/segments.txt from the ground truth's frame energy
(frames within 30 dB of the loudest gt frame, gaps < 0.1 s merged; --gt-floor-db, --gt-merge-gap) and runs the oracle detector on
it: the figure a perfect temporal detector would give.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _parse_value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def gt_frames(gt: np.ndarray, sr: int = 16000, nfft: int = 512, hop: int = 256,
              floor_db: float = -40.0) -> tuple[np.ndarray, np.ndarray]:
    """(frame times (T,) in s, active (T,) bool) of the ground truth's STFT frames: a frame is
    active when its energy is within ``floor_db`` of the loudest frame's (none when gt is silent)."""
    import torch

    from sourcesep import features

    e = features.stft(torch.as_tensor(gt, dtype=torch.float32), nfft, hop).abs().pow(2).sum(0).numpy()
    return features.frame_times(len(e), hop, sr), e > e.max() * 10 ** (floor_db / 10)


def gt_segments(gt: np.ndarray, sr: int = 16000, nfft: int = 512, hop: int = 256,
                floor_db: float = -40.0, merge_gap_s: float = 0.3) -> list[tuple[float, float]]:
    """Oracle segments (start, end) in s from the ground truth's STFT frame energy (:func:`gt_frames`)."""
    t, act = gt_frames(gt, sr, nfft, hop, floor_db)
    if not act.any():
        return []
    edges = np.diff(np.concatenate(([0], act.astype(np.int8), [0])))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    segs: list[list[float]] = []
    half = hop / sr / 2  # each frame covers its centre ± half a hop
    for a, b in zip(t[first] - half, t[last] + half):
        if segs and a - segs[-1][1] < merge_gap_s:
            segs[-1][1] = float(b)
        else:
            segs.append([max(0.0, float(a)), float(b)])
    return [(s, e_) for s, e_ in segs]


def _write_spans(path: Path, spans: list[tuple[float, float]]) -> None:
    """``start end`` lines (s) as :func:`sourcesep.detect.segments_from_file` reads them."""
    path.write_text("".join(f"{a:.4f} {b:.4f}\n" for a, b in spans) or "# none\n")


def _run_case(job: tuple[str, str, dict, tuple[float, float] | None]) -> tuple[str, float, bool, str | None]:
    case_dir, out_dir, params, oracle = job
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    from sourcesep import Separator, audio

    case, out = Path(case_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(params)
    if oracle:
        gt, _ = sf.read(case / "gt.wav", dtype="float32")
        segs = gt_segments(gt, floor_db=oracle[0], merge_gap_s=oracle[1])
        seg_file = out / "segments.txt"
        _write_spans(seg_file, segs)
        params.update(detector="oracle", segments=str(seg_file))
    try:
        sep = Separator(model="none", threads=1, **params)
        t0 = time.perf_counter()
        res = sep.separate(str(case / "mix.wav"), str(case / "query.wav"))
        dt = time.perf_counter() - t0
        audio.write(out / "target.wav", res.target, fmt="FLOAT")
        # The detected spans, for the caveats' frame recall and precision against gt.wav.
        _write_spans(out / "detected.txt", [(sg.start, sg.end) for sg in res.segments])
        return case.name, dt, bool(res.target_found), None
    except Exception as e:  # noqa: BLE001 - a failed case is scored as a failure, not fatal
        return case.name, float("nan"), False, f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True, help="benchmark split folder (with manifest.json)")
    ap.add_argument("--out", required=True, help="output folder: OUT/<case>/target.wav")
    ap.add_argument("--detector", default=None)
    ap.add_argument("--masker", default=None)
    ap.add_argument("--segments-from-gt", action="store_true", help="oracle segments from gt.wav energy")
    ap.add_argument("--gt-floor-db", type=float, default=-30.0,
                    help="oracle segments: frames within this many dB of the loudest gt frame")
    ap.add_argument("--gt-merge-gap", type=float, default=0.1, help="oracle segments: merge gaps below this (s)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N cases")
    ap.add_argument("--jobs", type=int, default=2, help="cases separated in parallel (1 thread each)")
    args, rest = ap.parse_known_args(argv)

    params: dict = {}
    if args.detector:
        params["detector"] = args.detector
    if args.masker:
        params["masker"] = args.masker
    it = iter(rest)
    for tok in it:
        if not tok.startswith("--"):
            ap.error(f"unexpected argument {tok!r}")
        key = tok[2:].replace("-", "_")
        if "=" in key:
            key, val = key.split("=", 1)
        else:
            val = next(it, None)
            if val is None:
                ap.error(f"{tok} needs a value")
        params[key] = _parse_value(val)

    cases_dir = Path(args.cases).resolve()
    manifest = json.loads((cases_dir / "manifest.json").read_text())
    names = [c["case"] for c in manifest["cases"]][: args.limit]
    out = Path(args.out).resolve()
    oracle = (args.gt_floor_db, args.gt_merge_gap) if args.segments_from_gt else None
    jobs = [(str(cases_dir / n), str(out / n), params, oracle) for n in names]

    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        results = list(ex.map(_run_case, jobs))
    wall = time.perf_counter() - t0
    errors = [(n, e) for n, _, _, e in results if e]
    for n, e in errors:
        print(f"{n}: {e}", file=sys.stderr)
    times = np.array([dt for _, dt, _, e in results if not e])
    not_found = [n for n, _, f, e in results if not e and not f]
    print(f"params: {json.dumps(params)}" + (f"  (oracle segments from gt: {oracle})" if oracle else ""))
    if times.size:
        print(f"separate() time per case: mean {times.mean():.2f} s, max {times.max():.2f} s "
              f"(1 thread, {args.jobs} jobs in parallel); total wall {wall:.1f} s")
    print(f"target not found in {len(not_found)} cases: {' '.join(not_found)}")

    scorer = cases_dir.parent / "score.py"
    score_cases = cases_dir
    if args.limit is not None:
        # Score only the cases run: a subset manifest beside links to their folders.
        score_cases = out / "_cases"
        score_cases.mkdir(parents=True, exist_ok=True)
        for n in names:
            link = score_cases / n
            if not link.exists():
                link.symlink_to(cases_dir / n, target_is_directory=True)
        sub = dict(manifest, cases=[c for c in manifest["cases"] if c["case"] in set(names)])
        (score_cases / "manifest.json").write_text(json.dumps(sub))
    cmd = [sys.executable, str(scorer), str(score_cases), str(out), "--json", str(out / "score.json")]
    rc = subprocess.call(cmd, env=dict(os.environ))
    if rc == 0:
        caveats(score_cases, out, scorer)
    return rc


def bootstrap_interval(values, stat=np.median, level: float = 0.95, draws: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over cases.

    ``values``: per-case figures, shape (n,). Resamples the n cases with replacement ``draws``
    times and returns the (1 - level)/2 and (1 + level)/2 quantiles of ``stat`` over the draws:
    how far a figure on n cases could move on another set of cases drawn the same way.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to resample")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(draws, v.size))
    s = stat(v[idx], axis=1)
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def caveats(cases_dir: Path, out: Path, scorer: Path) -> None:
    """Figures that the scorer's table hides (see benchmarks/RESULTS.md, "Reading the numbers").

    * score.py gives an all-zero estimate SI-SDR 0 dB, so a silent output on a present case
      scores SI-SDRi = -SI-SDR(mix), which is positive whenever the mixture's SI-SDR is negative.
    * Some cases' gt.wav is at quantisation level (the target is inaudible in the mixture): they
      behave as absent cases and a silent output gains 30-100 dB there.
    * SI-SDR ignores the estimate's level, and leakage is lowered by any quieter output: the level
      of the estimate against the true target (the SI-SDR projection's scale) shows both.
    * The residual (mixture − estimate) is an output too: its SI-SDRi against mixture − gt.
    * The detected spans against the gt's frames (within 30 dB of its loudest): what share of the
      target's frames they hold (recall), what share of theirs hold the target (precision), and
      how long they last against the target.
    """
    import soundfile as sf

    si_sdr = load_scorer(scorer).si_sdr
    rows = json.loads((out / "score.json").read_text())["cases"]
    present = [r for r in rows if r.get("si_sdri") is not None]
    silent, inaudible = set(), set()
    level_db, residual_sdri, recall, precision, duration = [], [], [], [], []
    for r in rows:
        est_path = out / r["case"] / "target.wav"
        est = sf.read(est_path, dtype="float64")[0] if est_path.exists() else None
        if est is not None and not np.any(est):
            silent.add(r["case"])
        if r.get("si_sdri") is not None:
            gt, _ = sf.read(cases_dir / r["case"] / "gt.wav", dtype="float64")
            if np.abs(gt).max() < 1e-3:
                inaudible.add(r["case"])
            elif est is not None and r["case"] not in silent and est.size == gt.size:
                mix, _ = sf.read(cases_dir / r["case"] / "mix.wav", dtype="float64")
                level_db.append(20 * np.log10(max(float(est @ gt) / float(gt @ gt), 1e-6)))
                residual_sdri.append(si_sdr(mix - est, mix - gt) - si_sdr(mix, mix - gt))
                if (spans := _detected_frames(out / r["case"] / "detected.txt", gt)) is not None:
                    detected, target = spans
                    recall.append(float((detected & target).sum() / max(target.sum(), 1)))
                    precision.append(float((detected & target).sum() / max(detected.sum(), 1)))
                    duration.append(float(detected.sum() / max(target.sum(), 1)))
    absent = [r for r in rows if r.get("leak_db") is not None]

    def stat(v):
        v = np.asarray(v, dtype=np.float64)
        return f"{v.mean():6.2f} {np.median(v):6.2f} (n={v.size})" if v.size else "   -"

    print("\ncaveats (not part of score.py):")
    print(f"  present cases with a silent estimate: {len(silent & {r['case'] for r in present})} "
          f"({' '.join(sorted(silent & {r['case'] for r in present}))})")
    print(f"  SI-SDRi, silent estimates counted as 0:   {stat([0.0 if r['case'] in silent else r['si_sdri'] for r in present])}")
    print(f"  inaudible-target cases (gt peak < 1e-3): {' '.join(sorted(inaudible)) or '-'}")
    print(f"  SI-SDRi without them:                     {stat([r['si_sdri'] for r in present if r['case'] not in inaudible])}")
    for name, vals in (("all present", [r["si_sdri"] for r in present]),
                       ("audible", [r["si_sdri"] for r in present if r["case"] not in inaudible])):
        if vals:
            (m0, m1), (d0, d1) = bootstrap_interval(vals, np.mean), bootstrap_interval(vals, np.median)
            print(f"  95 % bootstrap interval over cases, {name} (n={len(vals)}): "
                  f"mean {m0:.2f} to {m1:.2f}, median {d0:.2f} to {d1:.2f}")
    print(f"  absent cases output silent: {len(silent & {r['case'] for r in absent})} of {len(absent)}; "
          f"leakage of the others (dB): {stat([r['leak_db'] for r in absent if r['case'] not in silent])}")
    lines = [("estimate's level re the true target (dB)", level_db),
             ("residual SI-SDRi (vs mixture − gt)", residual_sdri)]
    if recall:
        lines += [("detected frames' recall of gt's (30 dB)", recall),
                  ("detected frames' precision", precision),
                  ("detected time re the target's", duration)]
    for label, vals in lines:
        print(f"  audible cases, not silent: {label + ':':<42}{stat(vals)}")


def _detected_frames(path: Path, gt: np.ndarray, sr: int = 16000, hop: int = 256,
                     floor_db: float = -30.0) -> tuple[np.ndarray, np.ndarray] | None:
    """(detected, target) (T,) bool on gt's STFT frames: frame centres inside a span of ``path``
    (``start end`` lines, s), and frames whose gt energy is within ``floor_db`` of its loudest.
    None when ``path`` does not exist (an older run)."""
    from sourcesep.detect import frames_inside, segments_from_file

    if not path.exists():
        return None
    t, target = gt_frames(gt, sr, hop=hop, floor_db=floor_db)
    return frames_inside(segments_from_file(path), t), target


def load_scorer(path: Path):
    """The benchmark's own ``score.py`` (at ``path``) as a module, for its ``si_sdr``."""
    spec = importlib.util.spec_from_file_location("bench_score", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    sys.exit(main())
