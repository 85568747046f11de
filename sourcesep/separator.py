"""The public API: a :class:`Separator` owns the loaded model and runs the pipeline.

    sep = Separator(model="MIT/ast-finetuned-audioset-10-10-0.4593")   # loads the AST once
    result = sep.separate("mix.wav", "query.wav", gt="gt.wav", min_dur_ms=300)
    result.write("out/")

Stages (each a pure function in its own module) are chosen by name from two small registries,
``DETECTORS`` and ``MASKERS``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from . import audio, detect, features, metrics, reconstruct
from .errors import InputError, ParamError
from .params import DEFAULT_MODEL, Params, check_weights_free, resolve, validate_runtime
from .reads import MASKER_READS, describe_unused, unused_params
from .types import Classification, Detection, MaskResult, Segment

AudioSource = str | Path | np.ndarray


@dataclass
class Context:
    """Everything a detector or masker may look at for one separation. Tensors live on ``device``."""

    mix: np.ndarray  # (n,) float32, 16 kHz
    query: np.ndarray  # (m,) float32, 16 kHz, trimmed
    mix_stft: torch.Tensor  # (F, T) complex
    query_stft: torch.Tensor  # (F, Tq) complex
    frame_times: np.ndarray  # (T,) s
    params: Params
    sources: dict[str, str]  # where each parameter came from ("default" when unset)
    device: torch.device
    classification: Classification
    ast: Any | None  # AstModel or None
    offset_s: float = 0.0  # where ``mix`` starts in the whole mixture (chunked processing)
    known_segments: tuple[Segment, ...] = ()  # the segments file's, whole-mixture seconds (oracle)
    detection: Detection | None = None


@dataclass(frozen=True)
class Plan:
    """What one ``separate()`` call decided before touching the mixture."""

    params: Params
    sources: dict[str, str]
    detector: str
    masker: str
    classification: Classification
    known_segments: tuple[Segment, ...] = ()  # read once from the segments file (oracle)


class Timer:
    """Accumulates wall time per stage (seconds)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# Detectors: Context -> Detection
# --------------------------------------------------------------------------------------------


def _detect_ast(ctx: Context) -> Detection:
    p = ctx.params
    windows = ctx.ast.score_windows(ctx.mix, ctx.classification, p.window_sec, p.hop_sec)
    return detect.detect_ast(
        windows,
        len(ctx.mix) / audio.SAMPLE_RATE,
        cls_threshold=p.cls_threshold,
        cls_percentile=p.cls_percentile,
        use_cosine_gate=p.use_cosine_gate,
        cosine_threshold=p.cosine_threshold,
        min_dur_ms=p.min_dur_ms,
        merge_gap_ms=p.merge_gap_ms,
        padding_ms=p.segment_padding_ms,
    )


def _explicit(ctx: Context, **names: str) -> dict[str, Any]:
    """``{argument: value}`` for the parameters the user set (``names`` maps argument → parameter).

    The balanced defaults were tuned for the AST windows and the seed masker; the weights-free
    stages have their own measured defaults (benchmarks/RESULTS.md), used unless overridden.
    """
    return {arg: getattr(ctx.params, key) for arg, key in names.items() if ctx.sources.get(key, "default") != "default"}


def _detect_query(ctx: Context) -> Detection:
    from .querydetect import detect_query

    p = ctx.params
    return detect_query(
        ctx.mix,
        ctx.query,
        audio.SAMPLE_RATE,
        nfft=p.nfft,
        hop=p.hop,
        mix_stft=ctx.mix_stft,
        query_stft=ctx.query_stft,
        **_explicit(ctx, min_dur_ms="min_dur_ms", merge_gap_ms="merge_gap_ms", padding_ms="segment_padding_ms"),
    )


def _detect_fused(ctx: Context) -> Detection:
    """Average the AST and query activity curves on the STFT frame grid; present if either is."""
    a = _detect_ast(ctx)
    q = _detect_query(ctx)
    t = ctx.frame_times
    act = 0.5 * (np.interp(t, a.times_s, a.activity) + np.interp(t, q.times_s, q.activity))
    p = ctx.params
    segs = detect.segments_from_mask(
        act >= 0.5,
        t,
        p.hop / audio.SAMPLE_RATE,
        act,
        min_dur_ms=p.min_dur_ms,
        merge_gap_ms=p.merge_gap_ms,
        padding_ms=p.segment_padding_ms,
        duration_s=len(ctx.mix) / audio.SAMPLE_RATE,
    )
    return Detection(
        name="fused",
        times_s=t,
        activity=act,
        segments=segs,
        found=bool(segs) and (a.found or q.found),
        threshold=0.5,
        windows=a.windows,
        evidence={"ast": a.evidence, "query": q.evidence},
    )


def _detect_oracle(ctx: Context) -> Detection:
    dur = len(ctx.mix) / audio.SAMPLE_RATE
    segs = [
        Segment(max(0.0, s.start - ctx.offset_s), min(dur, s.end - ctx.offset_s), s.score)
        for s in ctx.known_segments
        if s.end > ctx.offset_s and s.start < ctx.offset_s + dur
    ]
    return detect.detect_oracle(segs, dur, ctx.frame_times)


DETECTORS: dict[str, Callable[[Context], Detection]] = {
    "ast": _detect_ast,
    "query": _detect_query,
    "fused": _detect_fused,
    "oracle": _detect_oracle,
}


# --------------------------------------------------------------------------------------------
# Maskers: Context -> MaskResult
# --------------------------------------------------------------------------------------------


def _mask_seed(ctx: Context) -> MaskResult:
    """The original design: reference-mel stitching, initial mask, DGMO refinement."""
    from . import dgmo, mask, reference

    p, dev = ctx.params, ctx.device
    mix_mag = ctx.mix_stft.abs()
    fb = features.mel_filterbank(mix_mag.shape[0], p.n_mels, audio.SAMPLE_RATE).to(dev)
    query_mag = ctx.query_stft.abs()
    query_mel = reference.query_mel(query_mag, fb)
    det = ctx.detection
    ref_mel = reference.stitch_reference(query_mel, det.segments, ctx.frame_times)
    activity = reference.time_activity(det.segments, ctx.frame_times).to(dev)
    profile = reference.frequency_profile(query_mag)
    m0 = mask.initial_mask(
        mix_mag,
        ref_mel,
        fb,
        activity,
        profile,
        time_mask_sharpening=p.time_mask_sharpening,
        gamma_profile=p.gamma_profile,
        mask_floor=p.mask_floor,
        soft_masking=p.soft_masking,
    )
    info: dict[str, Any] = {}
    if p.use_embedding_masking and det.windows is not None and det.windows.embeddings is not None:
        centres = det.windows.starts_s + det.windows.window_sec / 2
        sim = np.interp(ctx.frame_times, centres, det.windows.cosine)
        kind = mask.class_kind(ctx.classification.class_name)
        m0 = mask.semantic_blend(
            m0,
            torch.as_tensor(sim, dtype=m0.dtype, device=dev),
            semantic_blending=p.semantic_blending,
            similarity_smoothing=p.similarity_smoothing,
            kind=kind,
            floor=p.mask_floor,
        )
        info["semantic_kind"] = kind
    if p.use_spectrogram_features and ctx.ast is not None and ctx.classification.embedding is not None:
        sim2d = ctx.ast.patch_similarity(ctx.mix, ctx.classification.embedding)
        fmask = mask.spectrogram_feature_mask(torch.as_tensor(sim2d, device=dev), *m0.shape)
        m0 = torch.clamp(m0 * fmask, min=p.mask_floor, max=1.0)
    m, history = dgmo.optimise_mask(
        m0,
        mix_mag,
        ref_mel,
        fb,
        steps=p.opt_steps,
        lr=p.lr,
        lambda_tv=p.lambda_tv,
        lambda_sat=p.lambda_sat,
        floor=p.mask_floor,
    )
    return MaskResult(mask=m.detach().cpu().numpy(), loss_history=history,
                      reference_mel=ref_mel.detach().cpu().numpy(), info=info)


def _mask_nmf(ctx: Context) -> MaskResult:
    from .maskers import mask_nmf

    return mask_nmf(ctx.mix_stft, ctx.query_stft, ctx.detection, frame_times_s=ctx.frame_times,
                    **_explicit(ctx, floor="mask_floor"))


def _mask_wiener(ctx: Context) -> MaskResult:
    from .maskers import mask_wiener

    return mask_wiener(ctx.mix_stft, ctx.query_stft, ctx.detection, frame_times_s=ctx.frame_times,
                       **_explicit(ctx, floor="mask_floor", steps="opt_steps", lr="lr", lambda_tv="lambda_tv"))


MASKERS: dict[str, Callable[[Context], MaskResult]] = {
    "seed": _mask_seed,
    "nmf": _mask_nmf,
    "wiener": _mask_wiener,
}

# What "auto" means, measured on the benchmark (see benchmarks/RESULTS.md).
AUTO_MASKER = "nmf"


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One separation. Audio arrays are float32 at 16 kHz; ``mask`` is (F, T) on the STFT grid."""

    target: np.ndarray
    residual: np.ndarray
    mix: np.ndarray
    query: np.ndarray
    classification: Classification
    detection: Detection
    mask_result: MaskResult
    metrics: dict[str, Any] | None
    timings: dict[str, float]
    params: Params
    param_sources: dict[str, str]
    inputs: dict[str, Any]
    query_trim: dict[str, Any]
    versions: dict[str, Any]
    masker: str
    # parameters set but not read by this pipeline (key → why), and what the caller should know
    unused_params: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def segments(self) -> list[Segment]:
        return self.detection.segments

    @property
    def mask(self) -> np.ndarray:
        return self.mask_result.mask

    @property
    def target_found(self) -> bool:
        return self.detection.found

    @property
    def scores(self):
        """Per-window AST scores (None for weights-free detectors) and the soft activity curve."""
        return {"windows": self.detection.windows, "activity": self.detection.activity}

    @property
    def class_name(self) -> str:
        """Filesystem-safe name for output files: the query's class, or 'target' without one."""
        from .event import safe_name

        c = self.classification
        return safe_name(c.class_name) if c.available and c.class_name else "target"

    @property
    def event(self) -> dict[str, Any]:
        from .event import build_event

        return build_event(self)

    def write(self, out_dir: str | Path, extra_event: dict[str, Any] | None = None) -> dict[str, Path]:
        """Write target, residual, renamed/trimmed query, plots and event.json into ``out_dir``.

        Returns ``{role: path}`` of the files written. ``extra_event`` is merged into event.json
        (the daemon adds its job fields this way).
        """
        from .event import write_outputs

        return write_outputs(self, Path(out_dir), extra_event or {})


# --------------------------------------------------------------------------------------------
# Separator
# --------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParamError(f"device '{device}' requested but CUDA is not available")
    return torch.device(device)


class Separator:
    """Loads the model once and separates any number of (mixture, query) pairs.

    Parameters
    ----------
    model: Hugging Face id, local directory (``save_pretrained``), or ``"none"`` to run without
        trained weights (the weights-free ``query`` detector; no classification).
    device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
    threads: torch CPU threads (process-wide).
    precision: AST precision, ``auto`` (bf16 where supported natively), ``fp32``, ``bf16`` or ``int8``.
    offline: never touch the network.
    batch_wait_ms: merge the AST window and query forwards of threads that share this separator
        into one batched forward: a forward waits up to this many milliseconds for the others
        (see :meth:`sourcesep.ast_model.AstModel.enable_batching`). For several jobs on one GPU;
        ``None`` or 0 (default): off, each call runs its own forwards. Ignored with ``model="none"``.
    params_source: where ``params`` came from, recorded in event.json (e.g. ``config:sep.yaml``).
    **params: separation parameters (see :class:`sourcesep.params.Params`), the defaults for
        every call; ``separate(**overrides)`` overrides them per call.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str = "auto",
        threads: int = 2,
        precision: str = "auto",
        offline: bool = False,
        batch_wait_ms: float | None = None,
        params_source: str = "separator",
        **params: Any,
    ) -> None:
        self.runtime = validate_runtime(
            {"model": str(model), "device": device, "threads": threads, "precision": precision,
             "offline": offline}
        )
        self._layers: list[tuple[str, dict[str, Any]]] = [(params_source, dict(params))]
        self.params, self.param_sources = resolve(self._layers)
        self.device = resolve_device(self.runtime.device)
        torch.set_num_threads(self.runtime.threads)
        self.ast = None
        if self.runtime.model.lower() != "none":
            from .ast_model import AstModel

            self.ast = AstModel.load(
                self.runtime.model,
                offline=self.runtime.offline,
                device=str(self.device),
                precision=self.runtime.precision,
                threads=self.runtime.threads,
            )
        self.set_batching(batch_wait_ms)

    @property
    def model_id(self) -> str:
        return self.runtime.model

    @property
    def batch_wait_ms(self) -> float | None:
        """The forward batching wait in milliseconds, or None when batching is off."""
        batcher = self.ast.batcher if self.ast is not None else None
        return None if batcher is None else batcher.wait_ms

    def set_batching(self, batch_wait_ms: float | None) -> None:
        """Turn forward batching across threads on (``batch_wait_ms`` > 0) or off (None or 0).

        Safe while other threads separate: calls in flight finish with the setting they started
        with. Raises ParamError for a negative or non-finite wait.
        """
        if batch_wait_ms is not None and not 0 <= batch_wait_ms < float("inf"):
            raise ParamError(f"batch_wait_ms must be a finite number ≥ 0 (got {batch_wait_ms!r})")
        if self.ast is None:
            return
        if batch_wait_ms:
            self.ast.enable_batching(float(batch_wait_ms))
        else:
            self.ast.disable_batching()

    def batching_stats(self) -> dict[str, int] | None:
        """Counters of the forward batcher, or None when batching is off.

        ``requests`` (forwards asked for by callers), ``forwards`` (forwards run), ``rows``
        (windows and queries forwarded), ``merged_forwards`` (forwards that served several
        requests), ``merged_requests`` (requests served by those), since batching was turned on.
        """
        stats = self.ast.batching_stats() if self.ast is not None else None
        return None if stats is None else stats.as_dict()

    def resolve_params(self, overrides: dict[str, Any], source: str = "call") -> tuple[Params, dict[str, str]]:
        """Validate ``overrides`` on top of this separator's defaults (raises ParamError)."""
        layers = self._layers + ([(source, dict(overrides))] if overrides else [])
        params, sources = resolve(layers)
        if self.ast is None:  # only weights-free detectors can run
            check_weights_free(params, sources)
        return params, sources

    def unused_params(self, overrides: dict[str, Any], source: str = "call") -> dict[str, str]:
        """``{key: why}`` for the parameters in ``overrides`` (on top of this separator's defaults)
        that the pipeline they choose does not read, as a separation would report them in
        ``Result.unused_params``. Raises ParamError as :meth:`resolve_params` does."""
        params, sources = self.resolve_params(overrides, source)
        detector, masker = self._choose(params)
        return unused_params(params, sources, detector, masker, self.ast is not None)

    def _choose(self, params: Params) -> tuple[str, str]:
        det = params.detector
        if params.segments and det == "auto":
            det = "oracle"
        elif det == "auto":
            det = "fused" if self.ast is not None else "query"
        if det == "oracle" and not params.segments:
            raise ParamError("detector 'oracle' needs --segments FILE")
        masker = AUTO_MASKER if params.masker == "auto" else params.masker
        return det, masker

    def separate(
        self,
        mix: AudioSource,
        query: AudioSource,
        gt: AudioSource | None = None,
        *,
        sr: int | None = None,
        source: str = "call",
        **overrides: Any,
    ) -> Result:
        """Separate the query's sound from ``mix``.

        ``mix``, ``query`` and ``gt`` are paths (any format libsndfile reads) or arrays
        (``sr`` gives their rate, default 16 kHz). ``overrides`` are separation parameters for this
        call only; ``source`` names where they came from in ``event.json``.
        """
        params, sources = self.resolve_params(overrides, source)
        detector_name, masker_name = self._choose(params)
        timer = Timer()
        sr_in = sr or audio.SAMPLE_RATE

        with timer("load"):
            mix_x, mix_info = audio.load(mix, sr_in=sr_in)
            query_x, query_info = audio.load(query, sr_in=sr_in)
            gt_x, gt_info = audio.load(gt, sr_in=sr_in) if gt is not None else (None, None)
        mix_name = mix_info.path or "mix"
        query_name = query_info.path or "query"
        if audio.is_silent(mix_x):
            raise InputError(mix_name, "the mixture is silent")
        if len(query_x) < params.min_query_sec * audio.SAMPLE_RATE:
            raise InputError(
                query_name,
                f"query is {len(query_x) / audio.SAMPLE_RATE:.3f} s long; at least "
                f"{params.min_query_sec} s is needed",
            )
        if audio.is_silent(query_x):
            raise InputError(query_name, "the query is silent")
        if len(mix_x) < params.nfft:
            raise InputError(mix_name, "the mixture is too short to analyse")
        full_query = query_x
        query_x, trim_start = audio.trim_most_energetic(query_x, audio.SAMPLE_RATE, params.max_query_sec)
        query_trim = {
            "trimmed": len(query_x) < len(full_query),
            "start_s": round(float(trim_start), 4),
            "duration_s": round(len(query_x) / audio.SAMPLE_RATE, 4),
        }
        if gt_x is not None:
            gt_x = _match_gt_length(gt_x, len(mix_x), gt_info.path or "gt")
        known: tuple[Segment, ...] = ()
        if detector_name == "oracle":
            known = _read_known_segments(params.segments, len(mix_x) / audio.SAMPLE_RATE)

        with timer("classify"):
            if self.ast is not None:
                classification = self.ast.classify(query_x)
            else:
                classification = Classification(available=False)

        plan = Plan(params, sources, detector_name, masker_name, classification, known)
        if len(mix_x) > params.chunk_sec * audio.SAMPLE_RATE:
            detection, mres, target, peak = self._separate_chunked(mix_x, query_x, plan, timer)
        else:
            detection, mres, target = self._separate_array(mix_x, query_x, plan, timer)
            peak = float(mres.mask.max())
        with timer("reconstruct"):
            if params.unit_peak_mask and "unit_peak_mask" in MASKER_READS[masker_name]:
                target, mres = _scale_to_unit_peak(target, mres, peak)
            # Bit-exact split: target + residual == mixture in float32 (see reconstruct.split).
            target, residual = reconstruct.split(mix_x, target)

        result_metrics = None
        if gt_x is not None:
            with timer("evaluate"):
                result_metrics = metrics.evaluate(target, gt_x, mix_x)

        unused = unused_params(params, sources, detector_name, masker_name, self.ast is not None)
        notes = describe_unused(unused)
        if len(mix_x) < len(full_query):  # most often the two files were given the wrong way round
            notes.append(f"the mixture ({len(mix_x) / audio.SAMPLE_RATE:.2f} s) is shorter than the query "
                         f"({len(full_query) / audio.SAMPLE_RATE:.2f} s): are {mix_name} and {query_name} swapped?")
        inputs = {"mix": mix_info.to_dict(), "query": query_info.to_dict(), "gt": gt_info.to_dict() if gt_info else None}
        return Result(
            target=target,
            residual=residual,
            mix=mix_x,
            query=query_x,
            classification=classification,
            detection=detection,
            mask_result=mres,
            metrics=result_metrics,
            timings=timer.times,
            params=params,
            param_sources=sources,
            inputs=inputs,
            query_trim=query_trim,
            versions=self.versions(),
            masker=masker_name,
            unused_params=unused,
            notes=notes,
        )

    def _separate_array(
        self,
        mix_x: np.ndarray,
        query_x: np.ndarray,
        plan: Plan,
        timer: Timer,
        offset_s: float = 0.0,
    ) -> tuple[Detection, MaskResult, np.ndarray]:
        """STFT → detection → mask → masked iSTFT for one (mixture, query) array pair.

        Returns the detection, the mask and the target waveform (n,) float32.
        """
        params = plan.params
        with timer("stft"):
            dev = self.device
            X = features.stft(torch.as_tensor(mix_x, device=dev), params.nfft, params.hop)
            Q = features.stft(torch.as_tensor(query_x, device=dev), params.nfft, params.hop)
            frame_times = features.frame_times(X.shape[-1], params.hop, audio.SAMPLE_RATE)

        ctx = Context(mix_x, query_x, X, Q, frame_times, params, plan.sources, dev, plan.classification, self.ast,
                      offset_s, plan.known_segments)
        with timer("detect"):
            ctx.detection = DETECTORS[plan.detector](ctx)

        with timer("mask"):
            if ctx.detection.found:
                mres = MASKERS[plan.masker](ctx)
            else:
                # Nothing of the query in the mixture: a silent target, everything in the residual.
                mres = MaskResult(mask=np.zeros(tuple(X.shape), np.float32), info={"reason": "target not found"})

        with timer("reconstruct"):
            target = reconstruct.apply_mask(X, torch.as_tensor(mres.mask, device=dev), params.nfft, params.hop, len(mix_x))
        return ctx.detection, mres, target

    def _separate_chunked(
        self,
        mix_x: np.ndarray,
        query_x: np.ndarray,
        plan: Plan,
        timer: Timer,
    ) -> tuple[Detection, MaskResult, np.ndarray, float]:
        """Separate a long mixture in chunks of ``chunk_sec`` with context on both sides.

        Each chunk is processed with ``overlap`` seconds of context either side, and neighbouring
        targets are cross-faded with complementary raised-cosine ramps over that overlap, so memory
        stays bounded by the chunk size and there are no seams. Detections and masks are kept from
        each chunk's own span and put back on the global grid. Also returns the largest mask value
        of any chunk, context included (what :func:`_scale_to_unit_peak` scales by).
        """
        params = plan.params
        sr, hop, n = audio.SAMPLE_RATE, params.hop, len(mix_x)
        # Chunk starts and context are whole STFT hops, so chunk frames align with global frames.
        own = int(params.chunk_sec * sr) // hop * hop
        ov = int(min(5.0, params.chunk_sec / 4) * sr) // hop * hop
        starts = list(range(0, n, own))
        if len(starts) > 1 and n - starts[-1] < own // 2:
            starts.pop()  # fold a short tail into the previous chunk
        bounds = list(zip(starts, starts[1:] + [n]))

        n_frames = n // hop + 1
        frame_times = features.frame_times(n_frames, hop, sr)
        target = np.zeros(n, np.float32)
        mask = np.zeros((params.nfft // 2 + 1, n_frames), np.float32)
        activity = np.zeros(n_frames, np.float32)
        segments: list[Segment] = []
        found, first, peak = False, None, 0.0
        for s, e in bounds:
            a, b = max(0, s - ov), min(n, e + ov)
            det, mres, t = self._separate_array(mix_x[a:b], query_x, plan, timer, a / sr)
            first = first or (det, mres)
            peak = max(peak, float(mres.mask.max()))
            found |= det.found
            w = np.ones(b - a, np.float32)
            ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(2 * ov) + 0.5) / (2 * ov))).astype(np.float32)
            if a > 0:
                w[: 2 * ov] = ramp
            if b < n:
                w[-2 * ov:] = ramp[::-1]
            target[a:b] += w * t
            f0, f1 = s // hop, min(n_frames, e // hop + (1 if e == n else 0))
            off = (s - a) // hop
            mask[:, f0:f1] = mres.mask[:, off: off + f1 - f0]
            activity[f0:f1] = np.interp(frame_times[f0:f1] - a / sr, det.times_s, det.activity)
            for seg in det.segments:
                lo, hi = max(seg.start + a / sr, s / sr), min(seg.end + a / sr, e / sr)
                if hi > lo:
                    segments.append(Segment(lo, hi, seg.score))
        merged: list[Segment] = []
        for seg in segments:  # re-join spans that a chunk boundary cut in two
            if merged and seg.start - merged[-1].end < 1e-6:
                prev = merged.pop()
                seg = Segment(prev.start, seg.end, max(prev.score, seg.score))
            merged.append(seg)
        det0, mres0 = first
        detection = Detection(name=det0.name, times_s=frame_times, activity=activity, segments=merged, found=found,
                              threshold=det0.threshold, evidence={"chunks": len(bounds), "first_chunk": det0.evidence})
        mres = MaskResult(mask=mask, loss_history=mres0.loss_history,
                          info={"chunks": len(bounds), "chunk_sec": params.chunk_sec, "overlap_sec": ov / sr})
        return detection, mres, target, peak

    def versions(self) -> dict[str, Any]:
        import platform

        import transformers

        from . import __version__

        return {
            "sourcesep": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "model_id": self.runtime.model,
            "model_revision": getattr(self.ast, "revision", None),
            "precision": getattr(self.ast, "precision", None),
            "device": str(self.device),
        }


def _scale_to_unit_peak(target: np.ndarray, mres: MaskResult, peak: float) -> tuple[np.ndarray, MaskResult]:
    """The target (n,) and the mask (F, T) scaled by 1 / ``peak`` (the mask's largest value,
    over every chunk), so the most confident time-frequency bin passes the mixture unchanged; the
    factor is reported as ``info["mask_scale"]``. A zero mask (target not found) is left as is.
    The masked iSTFT is linear in the mask, so scaling the target equals scaling the mask.

    Why: the NMF maskers multiply soft factors (the ratio's exponent 0.25, the frame gain, the
    activity), so their mask peaks near 0.5, the target came out about 14 dB below its true level
    and the residual kept most of it. One factor per mixture leaves SI-SDR unchanged
    (benchmarks/RESULTS.md, round 12)."""
    if peak <= 0.0:
        return target, mres
    scale = 1.0 / peak
    mres.mask = np.minimum(mres.mask * np.float32(scale), np.float32(1.0))
    mres.info["mask_scale"] = round(scale, 4)
    return (target * np.float32(scale)).astype(np.float32), mres


def _read_known_segments(path: str, duration_s: float) -> tuple[Segment, ...]:
    """The segments file's segments, sorted. A segment that starts after the mixture ends is
    refused: the file was written for another recording (or in other units), and dropping it would
    quietly change the target."""
    segments = tuple(detect.segments_from_file(path))
    late = [s for s in segments if s.start >= duration_s]
    if late:
        raise InputError(
            path,
            f"segment {late[0].start:g}-{late[0].end:g} s starts after the end of the mixture "
            f"({duration_s:.3f} s)" + (f", and {len(late) - 1} more" if len(late) > 1 else ""),
        )
    return segments


GT_LENGTH_TOLERANCE_S = 0.01  # resampling a same-length file from another rate can add a sample or two


def _match_gt_length(gt: np.ndarray, n: int, name: str) -> np.ndarray:
    """``gt`` (n_samples,) padded with zeros or cut to the mixture's ``n`` samples.

    Only a few samples of difference are evened out: a ground truth of another length is not the
    target as it sits in this mixture, and its metrics would be meaningless.
    """
    if abs(len(gt) - n) > GT_LENGTH_TOLERANCE_S * audio.SAMPLE_RATE:
        raise InputError(
            name,
            f"the ground truth is {len(gt) / audio.SAMPLE_RATE:.3f} s long but the mixture is "
            f"{n / audio.SAMPLE_RATE:.3f} s; they must have the same length",
        )
    if len(gt) >= n:
        return gt[:n]
    return np.pad(gt, (0, n - len(gt)))
