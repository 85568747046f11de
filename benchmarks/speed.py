"""Speed benchmark: the seed-faithful pipeline against ours, per stage, on the same inputs.

    python benchmarks/speed.py                       # everything (~10-15 min on 2 cores)
    python benchmarks/speed.py --quick               # fewer runs, 2-minute long mix, 6 agreement cases
    python benchmarks/speed.py --sections stages,rss # only some sections

Runs from a fresh clone with no network. Inputs: the dev cases of ``../shared/bench/dev`` next to
the repository (``--cases DIR``), else the synthetic example pair (``sourcesep.example``).

The model is a base-size AST (``ASTConfig()`` defaults: 12 layers, hidden 768, 128 mel bins,
1024 frames) with 527 labels and random weights (seeded): the same compute as
MIT/ast-finetuned-audioset-10-10-0.4593, which cannot be downloaded here. It is built once and
saved with ``save_pretrained`` to a temporary folder, so our path is timed exactly as the CLI and
the daemon run it: ``Separator(model=DIR, offline=True)`` (which also measures model loading).

Sections:
  machine   CPU model, cores, threads, load average.
  matmul    measured fp32/bf16 matmul rate on AST-shaped products, FLOPs of the AST forwards,
            and the lower bound on AST time they imply.
  stages    per-stage medians (>= 5 runs after a warm-up) of (a) the seed-faithful path: every
            window padded to 1024 frames with the stock HF ASTFeatureExtractor and one HF forward
            per window (fp32), the seed masker, the Python-loop DGMO; (b1) our code running the
            seed's algorithm (detector ast, masker seed); (b) our default path (CLI-equivalent:
            paths in, every output file written). Ratio (a)/(b).
  rss       model load time and peak RSS of a fresh process doing one 10 s job (subprocess).
  long      a dev mixture looped to 10 minutes, chunked (default chunk_sec) and unchunked
            (chunk_sec=3600), each in its own subprocess: peak RSS, time, SI-SDR between them.
  precision fp32 vs bf16 vs int8 on the dev cases: top-1 class, query-embedding cosine,
            detected-segment IoU (random weights: this measures numerical agreement only).
  daemon    ``sourcesep-daemon once`` over the dev cases copied into a temporary inbox:
            pairs per hour.
  busy      one 10 s job repeated in a fresh process: on a quiet machine, beside one busy loop
            per core, and beside a second job like it; with idle OpenMP threads spinning as GNU
            OpenMP's default, as sourcesep's commands set it (sourcesep/openmp.py), and sleeping
            at once: what sharing the cores costs. Run it with --threads 2 and --threads 1
            (--busy-jobs N: N jobs beside it instead of one).

Nothing here asserts timings; it prints tables (markdown).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sourcesep.openmp import limit_spin_waits  # noqa: E402

limit_spin_waits()  # as the commands do, before torch starts: timed as the CLI and daemon run

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_CASES = REPO.parent / "shared/bench/dev"
SECTIONS = ("machine", "matmul", "stages", "rss", "long", "precision", "daemon", "busy")
SR = 16000


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def load_avg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident set size of this process image so far (MiB).

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own memory map.
    Not ru_maxrss: that survives exec, so a child started by a large parent (subprocess uses
    vfork) reports the parent's peak. Elsewhere: ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024.0)


def current_rss_mb() -> float:
    """Resident set size now (MiB; Linux /proc, else the peak)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if not np.isfinite(v):
                return "–"
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(headers), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells]
    return "\n".join(out)


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def find_cases(cases_dir: Path | None, scratch: Path) -> tuple[list[Path], str]:
    """Case folders (mix.wav, query.wav[, gt.wav]) and a description of where they came from."""
    if cases_dir is not None and cases_dir.is_dir():
        cases = sorted(p for p in cases_dir.iterdir() if (p / "mix.wav").is_file() and (p / "query.wav").is_file())
        if cases:
            return cases, f"{len(cases)} dev cases in {cases_dir}"
    from sourcesep.example import write_example

    folder = scratch / "example"
    write_example(folder)
    return [folder], "the synthetic example pair (sourcesep.example; no dev cases found)"


def pick_case(cases: list[Path], name: str | None) -> Path:
    """The case used for the per-stage timings: ``name``, else the first with a non-silent target."""
    import soundfile as sf

    if name:
        for c in cases:
            if c.name == name:
                return c
        raise SystemExit(f"case {name!r} not found")
    for c in cases:
        gt = c / "gt.wav"
        if gt.is_file() and float(np.abs(sf.read(gt, dtype="float32")[0]).max()) > 0:
            return c
    return cases[0]


def build_model_dir(folder: Path, seed: int) -> Path:
    """A random base-size AST (527 labels) saved with save_pretrained (+ the feature extractor)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(seed)
    labels = {i: f"class_{i:03d}" for i in range(527)}
    cfg = ASTConfig(id2label=labels, label2id={v: k for k, v in labels.items()})
    net = ASTForAudioClassification(cfg).eval()
    with quiet_hf():
        net.save_pretrained(folder)
        ASTFeatureExtractor().save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------
# Machine and matmul rate
# ----------------------------------------------------------------------------------------------


def ast_flops(n_clips: int, n_frames: int, hidden: int = 768, layers: int = 12, inter: int = 3072) -> dict[str, float]:
    """FLOPs (multiply-adds x 2) of one AST forward over ``n_clips`` clips of ``n_frames`` fbank frames.

    Patch embedding (16x16 conv, stride 10) + per layer: QKV and output projections (4 H^2 per
    token), the MLP (2 H I per token) and attention (QK^T and AV: 4 L^2 H per clip). LayerNorms,
    softmax and the classifier head are negligible.
    """
    t_patches = (n_frames - 16) // 10 + 1
    patches = 12 * t_patches
    tokens = 2 + patches
    embed = 2.0 * n_clips * patches * 256 * hidden
    linear = 2.0 * n_clips * tokens * (4 * hidden * hidden + 2 * hidden * inter) * layers
    attn = 4.0 * n_clips * tokens * tokens * hidden * layers
    return {"tokens": tokens, "linear": linear, "attention": attn, "embed": embed, "total": embed + linear + attn}


def matmul_rate(dtype: torch.dtype, tokens: int, reps: int = 5) -> dict[str, float]:
    """GFLOP/s of ``F.linear`` on the AST's three product shapes (tokens x 768 @ 768 x {768, 3072},
    tokens x 3072 @ 3072 x 768), and their FLOP-weighted mean as one layer mixes them."""
    shapes = {"768->768": (768, 768), "768->3072": (768, 3072), "3072->768": (3072, 768)}
    out: dict[str, float] = {}
    total_flops, total_t = 0.0, 0.0
    weights = {"768->768": 4, "768->3072": 1, "3072->768": 1}  # per layer: 4 projections, 2 MLP
    for name, (k, n) in shapes.items():
        x = torch.randn(tokens, k).to(dtype)
        w = torch.randn(n, k).to(dtype)
        with torch.inference_mode():
            for _ in range(2):
                torch.nn.functional.linear(x, w)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.nn.functional.linear(x, w)
                ts.append(time.perf_counter() - t0)
        t = median(ts)
        flops = 2.0 * tokens * k * n
        out[name] = flops / t / 1e9
        total_flops += weights[name] * flops
        total_t += weights[name] * t
    out["layer mix"] = total_flops / total_t / 1e9
    return out


def section_machine(args: argparse.Namespace, res: dict[str, Any]) -> None:
    from sourcesep.ast_model import cpu_has_native_bf16

    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "load_avg_start": load_avg(),
    }
    res["machine"] = info
    log("## Machine\n")
    log(table(["", "value"], [[k, v] for k, v in info.items()]))


def section_matmul(args: argparse.Namespace, res: dict[str, Any]) -> None:
    win = ast_flops(19, 98)  # 19 one-second windows (98 frames) of a 10 s mixture
    qry = ast_flops(1, 298)  # a 3 s query
    seed = ast_flops(20, 1024)  # the seed: 19 windows + the query, each padded to 1024 frames
    rates = {"fp32": matmul_rate(torch.float32, 19 * win["tokens"]), "bf16": matmul_rate(torch.bfloat16, 19 * win["tokens"])}
    res["matmul"] = {"rates_gflops": rates, "flops": {"windows": win, "query": qry, "seed_padded": seed}}
    log(f"\n## Matmul rate and AST FLOPs ({args.threads} threads)\n")
    names = list(rates["fp32"])
    log(table(["GFLOP/s", *names], [[dt, *[rates[dt][n] for n in names]] for dt in rates]))
    rows = []
    for label, f in (("19 windows x 1 s (110 tokens each)", win), ("query 3 s (350 tokens)", qry),
                     ("seed: 20 x 1024 frames (1214 tokens each)", seed)):
        rows.append([label, f["total"] / 1e9, 1e3 * f["total"] / (rates["fp32"]["layer mix"] * 1e9),
                     1e3 * f["total"] / (rates["bf16"]["layer mix"] * 1e9)])
    log("")
    log(table(["AST forward", "GFLOP", "lower bound fp32 (ms)", "lower bound bf16 (ms)"], rows))


# ----------------------------------------------------------------------------------------------
# Stage timing
# ----------------------------------------------------------------------------------------------


class StageClock:
    """Accumulates wall time of wrapped library functions (seconds per stage).

    The library's own Timer reports coarse stages (load, classify, stft, detect, mask,
    reconstruct); wrapping the feature, forward and DGMO functions splits them further without
    touching library code. Wrappers are removed on exit.
    """

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def add(self, stage: str, dt: float) -> None:
        self.t[stage] = self.t.get(stage, 0.0) + dt

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def wrap(self, owner: Any, attr: str, stage: str) -> None:
        orig = getattr(owner, attr)

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                self.add(stage, time.perf_counter() - t0)

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, orig))

    def close(self) -> None:
        while self._undo:
            self._undo.pop()()


STAGES = ("load", "features", "AST", "detection", "masking", "DGMO", "iSTFT", "write", "other")


def ours_once(sep: Any, case: Path, out_dir: Path, clock: StageClock, **overrides: Any) -> dict[str, float]:
    """One CLI-equivalent run through the public API; returns seconds per stage + end to end."""
    clock.t = {}
    t0 = time.perf_counter()
    result = sep.separate(str(case / "mix.wav"), str(case / "query.wav"), **overrides)
    t1 = time.perf_counter()
    result.write(out_dir)
    t2 = time.perf_counter()
    lib = result.timings
    fb, fw, dg = clock.t.get("fbank", 0.0), clock.t.get("forward", 0.0), clock.t.get("dgmo", 0.0)
    st = {
        "load": lib.get("load", 0.0),
        "features": lib.get("stft", 0.0) + fb,
        "AST": fw,
        "detection": lib.get("classify", 0.0) + lib.get("detect", 0.0) - fb - fw,
        "masking": lib.get("mask", 0.0) - dg,
        "DGMO": dg,
        "iSTFT": lib.get("reconstruct", 0.0),
        "write": t2 - t1,
        "query NMF detector": clock.t.get("querydetect", 0.0),
        "end to end": t2 - t0,
    }
    st["other"] = st["end to end"] - sum(st[k] for k in STAGES if k != "other")
    return st


def instrument_ours(clock: StageClock) -> None:
    import sourcesep.ast_model as am
    import sourcesep.dgmo as dgmo
    import sourcesep.maskers as maskers
    import sourcesep.querydetect as qd

    clock.wrap(am, "ast_fbank", "fbank")
    clock.wrap(am.AstModel, "_forward", "forward")
    clock.wrap(dgmo, "optimise_mask", "dgmo")
    clock.wrap(maskers, "refine_tv", "dgmo")
    clock.wrap(qd, "detect_query", "querydetect")


class SeedPath:
    """The seed's pipeline, faithfully slow: every 1 s window (and the query) padded to 1024
    frames by the stock ``ASTFeatureExtractor`` and run through the stock HF model one at a time
    in float32; reference stitching + initial mask; DGMO with the Python loop over frames; the
    outputs written with tight_layout'ed 100-dpi figures with colour bars, as the seed drew them."""

    def __init__(self, model_dir: Path):
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        from sourcesep.params import Params

        with quiet_hf():
            self.net = ASTForAudioClassification.from_pretrained(str(model_dir)).eval()
            self.fe = ASTFeatureExtractor.from_pretrained(str(model_dir))
        self.p = Params()

    @torch.inference_mode()
    def _embed(self, feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        base = self.net.audio_spectrogram_transformer(input_values=feats)
        logits = self.net.classifier(base.pooler_output)
        return logits[0].numpy(), base.pooler_output[0].numpy()

    def run(self, case: Path, out_dir: Path) -> dict[str, float]:
        from sourcesep import audio, detect, dgmo, features, mask, reconstruct, reference
        from sourcesep.types import WindowScores

        p, clock = self.p, StageClock()
        t_start = time.perf_counter()
        with clock.stage("load"):
            mix, _ = audio.load(str(case / "mix.wav"))
            query, _ = audio.load(str(case / "query.wav"))
            query, _ = audio.trim_most_energetic(query, SR, p.max_query_sec)
        with clock.stage("features"):
            win, hop = int(p.window_sec * SR), int(p.hop_sec * SR)
            starts = np.arange(0, max(1, 1 + int(np.ceil((len(mix) - win) / hop)))) * hop
            padded = np.pad(mix, (0, max(0, int(starts[-1]) + win - len(mix))))
            feats = [self.fe(padded[s:s + win], sampling_rate=SR, return_tensors="pt")["input_values"] for s in starts]
            qfeat = self.fe(query, sampling_rate=SR, return_tensors="pt")["input_values"]
            X = features.stft(torch.from_numpy(mix), p.nfft, p.hop)
            Q = features.stft(torch.from_numpy(query), p.nfft, p.hop)
            frame_times = features.frame_times(X.shape[-1], p.hop, SR)
        with clock.stage("AST"):
            q_logits, q_emb = self._embed(qfeat)
            outs = [self._embed(f) for f in feats]
        with clock.stage("detection"):
            cid = int(np.argmax(q_logits))
            logits = np.stack([o[0] for o in outs])
            emb = np.stack([o[1] for o in outs])
            cos = emb @ q_emb / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q_emb) + 1e-12)
            ws = WindowScores(starts / SR, p.window_sec, 1 / (1 + np.exp(-logits[:, cid])), cos.astype(np.float32), emb)
            det = detect.detect_ast(ws, len(mix) / SR, cls_threshold=p.cls_threshold, cls_percentile=p.cls_percentile,
                                    use_cosine_gate=p.use_cosine_gate, cosine_threshold=p.cosine_threshold,
                                    min_dur_ms=p.min_dur_ms, merge_gap_ms=p.merge_gap_ms, padding_ms=p.segment_padding_ms)
        with clock.stage("masking"):
            mix_mag, query_mag = X.abs(), Q.abs()
            fb = features.mel_filterbank(mix_mag.shape[0], p.n_mels, SR)
            ref_mel = reference.stitch_reference(reference.query_mel(query_mag, fb), det.segments, frame_times)
            act = reference.time_activity(det.segments, frame_times)
            m0 = mask.initial_mask(mix_mag, ref_mel, fb, act, reference.frequency_profile(query_mag),
                                   time_mask_sharpening=p.time_mask_sharpening, gamma_profile=p.gamma_profile,
                                   mask_floor=p.mask_floor, soft_masking=p.soft_masking)
        with clock.stage("DGMO"):
            m, _ = dgmo.optimise_mask_loop(m0, mix_mag, ref_mel, fb, steps=p.opt_steps, lr=p.lr,
                                           lambda_tv=p.lambda_tv, lambda_sat=p.lambda_sat, floor=p.mask_floor)
        with clock.stage("iSTFT"):
            target = reconstruct.apply_mask(X, m.detach(), p.nfft, p.hop, len(mix))
            target, residual = reconstruct.split(mix, target)
        with clock.stage("write"):
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, x in (("target", target), ("residual", residual), ("query", query)):
                audio.write(out_dir / f"{name}.wav", audio.peak_safe(x))
            seed_style_plots(out_dir, mix, target, residual, ref_mel.numpy(), m.detach().numpy(), det)
            (out_dir / "event.json").write_text(json.dumps({"segments": [s.to_dict() for s in det.segments]}))
        st = dict(clock.t)
        st["end to end"] = time.perf_counter() - t_start
        st["other"] = st["end to end"] - sum(st.get(k, 0.0) for k in STAGES if k != "other")
        return st


def seed_style_plots(out_dir: Path, mix, target, residual, ref_mel, m, det) -> None:
    """The seed's figures: 5 stacked 10-inch panels with colour bars, tight_layout, 100 dpi, and a
    timeline; matplotlib draws and colour-maps everything."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sourcesep import features

    x = torch.from_numpy(np.stack([mix, target, residual]).astype(np.float32))
    power = features.stft(x, 512, 256).abs() ** 2
    db = (10 * torch.log10(1e-10 + features.mel_filterbank(257, 64, SR) @ power)).numpy()
    fig = Figure(figsize=(10, 10.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1)
    for ax, img, name in zip(axes, [*db, 20 * np.log10(np.maximum(ref_mel, 1e-10)), m],
                             ("mixture", "target", "residual", "reference", "mask")):
        im = ax.imshow(img, origin="lower", aspect="auto", cmap="viridis" if name == "mask" else "magma")
        ax.set_title(name)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_dir / "comparison.png", dpi=100)
    fig = Figure(figsize=(10, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(det.times_s, det.activity, label="activity")
    for s in det.segments:
        ax.axvspan(s.start, s.end, alpha=0.2, color="g")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "timeline.png", dpi=100)


class QuietGate:
    """Keeps only runs during which other processes left this machine (nearly) alone.

    On a shared machine a timing is meaningless when another process takes a core: with 2 torch
    threads on 2 cores each parallel region then waits for the descheduled thread, and a run
    takes 2-10x longer. Before each run the gate waits (up to ``wait_s`` in all) until other
    processes use less than ``max_other`` cores; after it, the run is kept only if they used
    less than ``max_other`` cores on average during it (from /proc/stat minus this process's own
    CPU time). A run that is not kept is repeated, up to ``max_attempts`` times per run asked
    for; what could not be had quietly is reported. Without /proc/stat every run is kept.
    """

    def __init__(self, max_other: float = 0.15, wait_s: float = 300.0, max_attempts: int = 4):
        self.max_other, self.wait_left, self.max_attempts = max_other, wait_s, max_attempts
        self.kept = self.dropped = 0
        self.measurable = _busy_cpu_s() is not None
        self.enabled = max_other < 100 and self.measurable  # else runs are measured, never dropped

    def _other(self, busy0: float, self0: float, wall: float) -> float:
        busy1, self1 = _busy_cpu_s(), _self_cpu_s()
        return max(0.0, (busy1 - busy0) - (self1 - self0)) / max(wall, 1e-3)

    def wait_quiet(self) -> None:
        while self.enabled and self.wait_left > 0:
            b0, s0, t0 = _busy_cpu_s(), _self_cpu_s(), time.perf_counter()
            time.sleep(0.5)
            wall = time.perf_counter() - t0
            if self._other(b0, s0, wall) < self.max_other:
                return
            self.wait_left -= wall

    def run(self, fn: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float]:
        """One kept run of ``fn`` (or the last try): (result, other processes' mean load)."""
        for attempt in range(self.max_attempts):
            self.wait_quiet()
            b0, s0, t0 = _busy_cpu_s(), _self_cpu_s(), time.perf_counter()
            out = fn()
            other = self._other(b0, s0, time.perf_counter() - t0) if self.measurable else float("nan")
            if not self.enabled or other < self.max_other or attempt == self.max_attempts - 1:
                self.kept += other < self.max_other
                return out, other
            self.dropped += 1
        raise AssertionError("unreachable")


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes have used since boot (/proc/stat), or None where unavailable."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def timed_runs(fn: Callable[[], dict[str, float]], runs: int, warmup: int, gate: QuietGate | None = None) -> dict[str, list[float]]:
    """``warmup`` untimed runs, then ``runs`` timed ones (through ``gate`` when given). Returns
    {stage: [seconds per run]}, plus "_other_load" (other processes' mean cores during each run)."""
    for _ in range(warmup):
        fn()
    acc: dict[str, list[float]] = {}
    for _ in range(runs):
        out, other = gate.run(fn) if gate is not None else (fn(), float("nan"))
        for k, v in {**out, "_other_load": other}.items():
            acc.setdefault(k, []).append(v)
    return acc


def section_stages(args: argparse.Namespace, res: dict[str, Any], model_dir: Path, case: Path, scratch: Path) -> None:
    from sourcesep import Separator

    log(f"\n## Per-stage time, one 10 s pair (case {case.name}), {args.threads} threads\n")
    log(f"load average before: {load_avg()}")
    t0 = time.perf_counter()
    sep = Separator(model=str(model_dir), offline=True, device=args.device, threads=args.threads,
                    precision=args.precision)
    load_s = time.perf_counter() - t0
    precision = sep.ast.precision
    clock = StageClock()
    instrument_ours(clock)
    gate = QuietGate(args.max_other_load, args.quiet_wait)
    try:
        ours = timed_runs(lambda: ours_once(sep, case, scratch / "out_default", clock), args.runs, args.warmup, gate)
        seed_algo = timed_runs(lambda: ours_once(sep, case, scratch / "out_seedalgo", clock, detector="ast", masker="seed"),
                               args.runs, args.warmup, gate)
    finally:
        clock.close()
    seed_runs: dict[str, list[float]] = {}
    if args.seed_runs > 0:
        log(f"ours done (load average {load_avg()}); seed-faithful path: {args.seed_runs} run(s) after {args.warmup} warm-up …")
        seed = SeedPath(model_dir)
        # 20 s runs are rarely undisturbed on a shared machine: fewer retries (interference only
        # inflates the seed's time, i.e. the ratio; it is reported).
        seed_gate = QuietGate(args.max_other_load, args.quiet_wait, max_attempts=2)
        seed_runs = timed_runs(lambda: seed.run(case, scratch / "out_seed"), args.seed_runs, args.warmup, seed_gate)
        del seed

    rows = []
    order = [*STAGES, "end to end"]
    for k in order:
        a, b1, b = median(seed_runs.get(k, [])), median(seed_algo.get(k, [])), median(ours.get(k, []))
        rows.append([k, a, b1, b, a / b if b > 1e-4 else float("nan")])
    rows.append(["(other processes' load, cores)", median(seed_runs.get("_other_load", [])),
                 median(seed_algo.get("_other_load", [])), median(ours.get("_other_load", [])), ""])
    qd = median(ours.get("query NMF detector", []))
    res["stages"] = {
        "case": case.name, "threads": args.threads, "precision": precision, "in_process_load_s": load_s,
        "runs": {"seed": args.seed_runs, "ours": args.runs}, "load_avg_end": load_avg(),
        "median_s": {k: {"seed_faithful": r[1], "ours_seed_algorithm": r[2], "ours_default": r[3]} for k, r in zip(order, rows)},
        "ours_default_runs_e2e": ours["end to end"], "query_nmf_detector_s": qd,
        "quiet_gate": {"max_other_load": args.max_other_load, "kept": gate.kept, "dropped": gate.dropped},
    }
    log(f"\nmedian seconds; (a) {args.seed_runs} run(s), (b1)/(b) {args.runs} runs, each after {args.warmup} warm-up; "
        f"AST precision of (b1)/(b): {precision}; load average after: {load_avg()}\n")
    log(table(["stage", "(a) seed-faithful", "(b1) ours, seed algorithm", "(b) ours, default", "ratio (a)/(b)"], rows))
    log(f"\n(b) default = detector {sep.params.detector} → {sep._choose(sep.params)[0]}, masker "
        f"{sep.params.masker} → {sep._choose(sep.params)[1]}; its 'detection' includes the weights-free "
        f"query detector (NMF): {qd:.3f} s. 'DGMO' is the masker's refinement (DGMO / TV-Adam).")
    e2e = ours["end to end"]
    log(f"(b) end to end over {len(e2e)} runs: min {min(e2e):.3f}, median {median(e2e):.3f}, max {max(e2e):.3f} s; "
        f"model load in this process {load_s:.2f} s")
    if gate.enabled:
        log(f"quiet gate (b1, b): {gate.kept} runs kept with other processes below {args.max_other_load} cores, "
            f"{gate.dropped} dropped and repeated; runs that never got a quiet slot are kept and show in the "
            "load row above.")


# ----------------------------------------------------------------------------------------------
# Subprocess children: a fresh process per measurement isolates peak RSS
# ----------------------------------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> None:
    """``--child job|long``: run in a fresh process and print one JSON line of measurements."""
    t0 = time.perf_counter()
    from sourcesep import Separator, audio

    t_import = time.perf_counter() - t0
    sep = Separator(model=args.model_dir, offline=True, device=args.device, threads=args.threads, precision=args.precision)
    t_load = time.perf_counter() - t0 - t_import
    out: dict[str, Any] = {"import_s": t_import, "load_s": t_load, "peak_rss_load_mb": peak_rss_mb(),
                           "rss_after_load_mb": current_rss_mb()}
    case = Path(args.child_case)
    t1 = time.perf_counter()
    if args.child == "job":
        sep.separate(str(case / "mix.wav"), str(case / "query.wav")).write(Path(args.child_out))
    elif args.child == "repeat":  # one warm-up, then --runs timed jobs
        times = []
        for _ in range(args.runs + 1):
            t = time.perf_counter()
            sep.separate(str(case / "mix.wav"), str(case / "query.wav")).write(Path(args.child_out))
            times.append(time.perf_counter() - t)
        out["runs_s"] = times[1:]
    else:
        mix, _ = audio.load(str(case / "mix.wav"))
        n = int(args.long_minutes * 60 * SR)
        long_mix = np.resize(mix, n)  # the mixture looped to n samples
        query, _ = audio.load(str(case / "query.wav"))
        r = sep.separate(long_mix, query, chunk_sec=args.child_chunk_sec)
        np.save(args.child_out, r.target)
        out["found"] = bool(r.target_found)
    out["job_s"] = time.perf_counter() - t1
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_end_mb"] = current_rss_mb()
    print("CHILD " + json.dumps(out), flush=True)


def run_child(args: argparse.Namespace, kind: str, model_dir: Path | str, case: Path, out: Path, chunk_sec: float = 60.0,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--model-dir", str(model_dir),
           "--child-case", str(case), "--child-out", str(out), "--child-chunk-sec", str(chunk_sec),
           "--threads", str(args.threads), "--device", args.device, "--precision", args.precision,
           "--long-minutes", str(args.long_minutes), "--runs", str(args.runs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD "):
            d = json.loads(line[6:])
            d["process_wall_s"] = wall
            return d
    raise RuntimeError(f"child {kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def section_rss(args: argparse.Namespace, res: dict[str, Any], model_dir: Path, case: Path, scratch: Path) -> None:
    log(f"\n## Model load and peak RSS of one 10 s job (fresh process each, {args.threads} threads)\n")
    runs = [run_child(args, "job", model_dir, case, scratch / f"rss_out{i}") for i in range(args.load_runs)]
    keys = ["import_s", "load_s", "job_s", "process_wall_s", "peak_rss_load_mb", "rss_after_load_mb", "peak_rss_mb",
            "rss_end_mb"]
    res["rss"] = {k: [r[k] for r in runs] for k in keys}
    log(table(["measure", "median", "min", "max"],
              [[k, median([r[k] for r in runs]), min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys]))
    log("\nimport_s: `from sourcesep import Separator` (torch, transformers); load_s: Separator(model=DIR) = AST from "
        "save_pretrained safetensors; job_s: first job in the process (no warm-up: includes one-off "
        "initialisation such as importing matplotlib); process_wall_s: python start to exit. RSS in MiB: "
        "peak_* = VmHWM (high-water mark), rss_* = resident at that moment (the steady state a daemon keeps).")


def section_long(args: argparse.Namespace, res: dict[str, Any], model_dir: Path, case: Path, scratch: Path) -> None:
    from sourcesep import metrics

    log(f"\n## {args.long_minutes:g}-minute mixture (case {case.name} looped), fresh process each\n")
    chunked = run_child(args, "long", model_dir, case, scratch / "long_chunked.npy", chunk_sec=60.0)
    whole = run_child(args, "long", model_dir, case, scratch / "long_whole.npy", chunk_sec=3600.0)
    a, b = np.load(scratch / "long_chunked.npy"), np.load(scratch / "long_whole.npy")
    sisdr = metrics.si_sdr(a, b)
    res["long"] = {"minutes": args.long_minutes, "chunked": chunked, "unchunked": whole, "si_sdr_chunked_vs_unchunked_db": sisdr}
    log(table(["run", "job (s)", "peak RSS (MiB)", "found"],
              [["chunked (chunk_sec 60)", chunked["job_s"], chunked["peak_rss_mb"], chunked.get("found")],
               ["unchunked (chunk_sec 3600)", whole["job_s"], whole["peak_rss_mb"], whole.get("found")]]))
    log(f"\nSI-SDR of the chunked target against the unchunked one: {sisdr:.1f} dB")


# How idle OpenMP threads wait: GNU OpenMP's default (spin 300,000 iterations), what the commands
# set (sourcesep/openmp.py), and sleeping at once.
WAIT_SETTINGS = {
    "spin 300,000 (GNU OpenMP default)": {},
    "spin 10,000 (sourcesep's commands)": {"GOMP_SPINCOUNT": "10000"},
    "sleep at once (OMP_WAIT_POLICY=PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
}


@contextlib.contextmanager
def competitors(cmds: list[list[str]], env: dict[str, str] | None = None) -> Iterator[None]:
    """Run ``cmds`` (each a process that works until killed) while the block runs."""
    procs = [subprocess.Popen(c, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in cmds]
    try:
        time.sleep(3.0 if cmds else 0.0)  # past their start-up
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def section_busy(args: argparse.Namespace, res: dict[str, Any], model_dir: Path, case: Path, scratch: Path) -> None:
    cores = os.cpu_count() or 1
    log(f"\n## One 10 s job beside other work ({args.threads} threads, case {case.name}, fresh process per row, "
        f"{args.runs} timed runs after one warm-up)\n")
    log(f"load average before: {load_avg()}")
    rows, out = [], []
    for model, label in ((str(model_dir), "default (AST + query)"), ("none", "--model none")):
        twin = [sys.executable, str(Path(__file__).resolve()), "--child", "repeat", "--model-dir", model, "--child-case",
                str(case), "--child-out", str(scratch / "busy_twin"), "--threads", str(args.threads), "--device",
                args.device, "--precision", args.precision, "--runs", "100000"]
        others = {"quiet": [], f"{cores} busy loops": [[sys.executable, "-c", "while True: pass"]] * cores,
                  ("a second job like it" if args.busy_jobs == 1 else f"{args.busy_jobs} more jobs like it"):
                  [twin] * args.busy_jobs}
        for other, cmds in others.items():
            for policy, setting in WAIT_SETTINGS.items():
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                env.update(setting)
                with competitors(cmds, env):  # the second job runs with the same setting
                    d = run_child(args, "repeat", model, case, scratch / "busy_out", env=env)
                r = d["runs_s"]
                rows.append([label, other, policy, median(r), min(r), max(r)])
                out.append({"model": label, "beside": other, "openmp": policy, "runs_s": r})
    res["busy"] = {"threads": args.threads, "cores": cores, "rows": out}
    log(table(["path", "beside", "OpenMP idle threads", "median (s)", "min", "max"], rows))
    log("\nAn OpenMP thread that runs out of work spins before it sleeps. Processes that run "
        "multi-threaded torch on the same cores can spend their time in each other's spins: a short spin "
        "costs nothing alone, and what it saves beside other jobs varies from run to run "
        "(sourcesep/openmp.py). Several 1-thread jobs use shared cores best.")


# ----------------------------------------------------------------------------------------------
# Precision agreement
# ----------------------------------------------------------------------------------------------


def segment_iou(a: list, b: list, duration: float, step: float = 0.001) -> float:
    """Time IoU of two segment lists (1.0 when both are empty)."""
    t = np.arange(0.0, duration, step)

    def cover(segs: list) -> np.ndarray:
        m = np.zeros(t.size, bool)
        for s in segs:
            m |= (t >= s.start) & (t < s.end)
        return m

    ma, mb = cover(a), cover(b)
    union = (ma | mb).sum()
    return 1.0 if union == 0 else float((ma & mb).sum() / union)


def section_precision(args: argparse.Namespace, res: dict[str, Any], model_dir: Path, cases: list[Path]) -> None:
    from transformers import ASTForAudioClassification

    from sourcesep import audio, detect
    from sourcesep.ast_model import AstModel
    from sourcesep.params import Params

    n = len(cases) if args.agreement_cases <= 0 else min(args.agreement_cases, len(cases))
    log(f"\n## Precision agreement with fp32 on {n} case(s) (random weights!)\n")
    with quiet_hf():
        net = ASTForAudioClassification.from_pretrained(str(model_dir))
    models = {p: AstModel.wrap(copy.deepcopy(net), precision=p, device="cpu") for p in ("fp32", "bf16", "int8")}
    del net
    p = Params()
    acc: dict[str, dict[str, list[float]]] = {k: {"top1": [], "cos": [], "iou": [], "prob_diff": [], "s": []} for k in models}
    for case in cases[:n]:
        mix, _ = audio.load(str(case / "mix.wav"))
        query, _ = audio.load(str(case / "query.wav"))
        query, _ = audio.trim_most_energetic(query, SR, p.max_query_sec)
        out = {}
        for name, m in models.items():
            t0 = time.perf_counter()
            c = m.classify(query)
            w = m.score_windows(mix, c, p.window_sec, p.hop_sec)
            d = detect.detect_ast(w, len(mix) / SR, cls_threshold=p.cls_threshold, cls_percentile=p.cls_percentile,
                                  use_cosine_gate=p.use_cosine_gate, cosine_threshold=p.cosine_threshold,
                                  min_dur_ms=p.min_dur_ms, merge_gap_ms=p.merge_gap_ms, padding_ms=p.segment_padding_ms)
            out[name] = (c, w, d, time.perf_counter() - t0)
        c0, w0, d0, _ = out["fp32"]
        for name, (c, w, d, s) in out.items():
            e0, e = c0.embedding.astype(np.float64), c.embedding.astype(np.float64)
            acc[name]["top1"].append(float(c.class_id == c0.class_id))
            acc[name]["cos"].append(float(e0 @ e / (np.linalg.norm(e0) * np.linalg.norm(e) + 1e-30)))
            acc[name]["iou"].append(segment_iou(d0.segments, d.segments, len(mix) / SR))
            w_same = w0 if c.class_id == c0.class_id else None
            acc[name]["prob_diff"].append(float(np.abs(w.probs - w_same.probs).max()) if w_same is not None else float("nan"))
            acc[name]["s"].append(s)
    rows = []
    for name, a in acc.items():
        rows.append([name, float(np.mean(a["top1"])), float(np.mean(a["cos"])), float(np.min(a["cos"])),
                     float(np.mean(a["iou"])), float(np.min(a["iou"])), float(np.nanmax(a["prob_diff"] or [np.nan])),
                     median(a["s"])])
    res["precision"] = {"cases": n, "table": rows}
    log(table(["precision", "top-1 = fp32", "cos(emb) mean", "cos(emb) min", "segment IoU mean",
               "segment IoU min", "max |Δ window prob|", "AST s/case"], rows))
    log("\nWith random weights the 527 logits are nearly tied, so top-1 and percentile-thresholded "
        "segments are far more fragile than with the trained checkpoint: these figures measure "
        "numerical agreement only, not accuracy.")


# ----------------------------------------------------------------------------------------------
# Daemon throughput
# ----------------------------------------------------------------------------------------------


def section_daemon(args: argparse.Namespace, res: dict[str, Any], model_dir: Path, cases: list[Path], scratch: Path,
                   precision: str) -> None:
    import yaml

    if args.daemon_workers:
        sizing = {"workers": args.daemon_workers, "threads": max(1, args.threads // args.daemon_workers)}
        how = f"{sizing['workers']} worker(s) x {sizing['threads']} thread(s)"
    else:
        sizing, how = {}, "the daemon's default workers and threads"
    log(f"\n## Daemon throughput ({len(cases)} case(s), `sourcesep-daemon once`, {how})\n")
    try:
        from daemon import cli as dcli
    except ImportError:
        dcli = None
    if dcli is None or "once" not in getattr(dcli, "COMMANDS", ()):
        log("TODO: `sourcesep-daemon once --config` is not available in this checkout; daemon throughput not measured.")
        res["daemon"] = None
        return
    root = scratch / "daemon"
    folders = {k: root / k for k in ("inbox", "outbox", "work", "failed")}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    for c in cases:  # job folders: mix.wav + query.wav (gt.wav too: the daemon then reports metrics)
        staging = root / f"staging-{c.name}"
        shutil.copytree(c, staging)
        (staging / "meta.json").unlink(missing_ok=True)
        staging.rename(folders["inbox"] / c.name)
    cfg: dict[str, Any] = {**{k: str(v) for k, v in folders.items()}, "model": str(model_dir), "offline": True,
                           "device": args.device, "precision": precision, **sizing,
                           "settle_s": 0.2, "report_time": None, "log_format": "json", "allow_root": True}
    cfg_path = root / "daemon.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runner = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main())"]
    t0 = time.perf_counter()
    proc = subprocess.run([*runner, "once", "--config", str(cfg_path), "--allow-root"], capture_output=True,
                          text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        log(f"daemon once exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}")
    st = subprocess.run([*runner, "status", "--config", str(cfg_path), "--json"], capture_output=True, text=True,
                        cwd=REPO, env=env)
    try:
        st_json = json.loads(st.stdout)
    except ValueError:
        st_json = {}
    thr = st_json.get("last_24h", {})
    res["daemon"] = {"wall_s": wall, "cases": len(cases), "throughput": thr, "exit": proc.returncode}
    rows = [["workers x torch threads each", f"{st_json.get('daemon', {}).get('workers')} x {sizing.get('threads', 1)}"],
            ["process wall (start, model load, all jobs, exit)", f"{wall:.1f} s"],
            ["jobs done / failed", f"{thr.get('done')} / {thr.get('failed')}"],
            ["pairs per hour (first job start → last job end)", thr.get("jobs_per_hour")],
            ["pairs per hour incl. start-up", f"{3600 * len(cases) / wall:.0f}"],
            ["mean time per job in the daemon (s)", thr.get("mean_run_s")],
            ["  of which in the core (event.json timings.total)", thr.get("mean_core_s")],
            ["  daemon overhead per job (s)", thr.get("mean_overhead_s")]]
    log(table(["daemon", "value"], rows))


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="folder of case folders (default: ../shared/bench/dev)")
    ap.add_argument("--case", help="case used for the per-stage table (default: first with a present target)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    ap.add_argument("--precision", default="auto", help="AST precision of our path (default auto)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs of our paths (default 7; --quick 3)")
    ap.add_argument("--seed-runs", type=int, default=None,
                    help="timed runs of the seed-faithful path (default 5; --quick 1; 0 skips it)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs (default 1)")
    ap.add_argument("--load-runs", type=int, default=3, help="fresh processes for load time / RSS (default 3)")
    ap.add_argument("--max-other-load", type=float, default=0.15,
                    help="keep a timed run only if other processes used fewer cores than this during it "
                    "(default 0.15; 100 keeps every run)")
    ap.add_argument("--quiet-wait", type=float, default=600.0,
                    help="seconds in all to wait for a quiet machine before timed runs (default 600)")
    ap.add_argument("--long-minutes", type=float, default=10.0, help="length of the long mixture (default 10)")
    ap.add_argument("--agreement-cases", type=int, default=0, help="cases for the precision table (0 = all)")
    ap.add_argument("--daemon-cases", type=int, default=0, help="cases for the daemon run (0 = all)")
    ap.add_argument("--daemon-workers", type=int, default=None,
                    help="daemon workers (jobs at once), each with --threads / workers torch threads "
                    "(default: the daemon's own defaults, workers auto with 1 thread each)")
    ap.add_argument("--model-dir", help="reuse this saved random base AST instead of building one")
    ap.add_argument("--seed", type=int, default=0, help="random-weight seed (default 0)")
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--quick", action="store_true", help="runs 3, seed runs 1, 2-minute long mix, 6 agreement cases, 12 daemon cases")
    ap.add_argument("--daemon", action="store_true", help="only the daemon section (same as --sections daemon)")
    ap.add_argument("--busy-jobs", type=int, default=1, help="jobs like it running beside the timed one in the busy section (default 1)")
    ap.add_argument("--child", choices=["job", "long", "repeat"], help=argparse.SUPPRESS)
    ap.add_argument("--child-case", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--child-chunk-sec", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # --quick shortens what was not set explicitly.
    args.runs = args.runs if args.runs is not None else (3 if args.quick else 7)
    args.seed_runs = args.seed_runs if args.seed_runs is not None else (1 if args.quick else 5)
    if args.quick:
        args.long_minutes = 2.0
        args.agreement_cases = args.agreement_cases or 6
        args.daemon_cases = args.daemon_cases or 12
        args.load_runs = 1
    if args.daemon:
        args.sections = "daemon"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        child_main(args)
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    res: dict[str, Any] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sourcesep-speed-") as tmp:
        scratch = Path(tmp)
        cases, where = find_cases(args.cases, scratch)
        log(f"# sourcesep speed benchmark\n\ninputs: {where}")
        case = pick_case(cases, args.case)
        if "machine" in sections:
            section_machine(args, res)
        if "matmul" in sections:
            section_matmul(args, res)
        needs_model = set(sections) & {"stages", "rss", "long", "precision", "daemon", "busy"}
        model_dir = Path(args.model_dir) if args.model_dir else scratch / "ast-base-random"
        if needs_model and not args.model_dir:
            t0 = time.perf_counter()
            build_model_dir(model_dir, args.seed)
            log(f"\n(random base-size AST built and saved in {time.perf_counter() - t0:.1f} s)")
        if "stages" in sections:
            section_stages(args, res, model_dir, case, scratch)
        if "rss" in sections:
            section_rss(args, res, model_dir, case, scratch)
        if "long" in sections:
            section_long(args, res, model_dir, case, scratch)
        if "precision" in sections:
            section_precision(args, res, model_dir, cases)
        if "daemon" in sections:
            from sourcesep.ast_model import resolve_precision

            prec = resolve_precision(args.precision, torch.device(args.device if args.device != "auto" else "cpu"))
            dcases = cases if args.daemon_cases <= 0 else cases[: args.daemon_cases]
            section_daemon(args, res, model_dir, dcases, scratch, prec)
        if "busy" in sections:
            section_busy(args, res, model_dir, case, scratch)
    res["total_s"] = time.perf_counter() - t_all
    res["load_avg_end"] = load_avg()
    log(f"\n(benchmark took {res['total_s']:.0f} s; load average at the end {res['load_avg_end']})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
