"""The one parameter schema: CLI flags, config files and per-job sidecars all validate through it.

Defaults are the original design's "balanced" preset. Two groups:

* :class:`Params` — separation parameters. Any of them can be overridden per call
  (``Separator.separate(**overrides)``) or per job (a daemon sidecar).
* :class:`RuntimeOptions` — how the model runs (model id, device, threads, precision). They are
  fixed when a :class:`~sourcesep.Separator` is built, so a sidecar cannot change them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ParamError

DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Params(_Schema):
    """Separation parameters (defaults: the original design's "balanced" preset)."""

    # --- pipeline choice -------------------------------------------------------------------
    detector: Literal["auto", "ast", "query", "fused", "oracle"] = Field(
        "auto",
        description="Temporal detector: 'ast' (AST class probability + cosine gate), 'query' "
        "(weights-free query similarity), 'fused' (both), 'oracle' (segments from --segments). "
        "'auto' = fused with an AST model, query with --model none.",
    )
    masker: Literal["auto", "seed", "nmf", "wiener"] = Field(
        "auto",
        description="Mask estimator: 'seed' (reference stitching + initial mask + DGMO, as the "
        "original design), 'nmf' (query/background NMF dictionaries), 'wiener' (NMF + DGMO "
        "refinement). 'auto' picks the best measured one.",
    )
    segments: str | None = Field(
        None,
        description="File of known segments ('start end' seconds per line, or a JSON list of "
        "[start, end]); used by --detector oracle and implies it.",
    )

    # --- query ---------------------------------------------------------------------------
    max_query_sec: float = Field(
        3.0, gt=0.2, le=30.0, description="A longer query is trimmed to its most energetic part (s)."
    )
    min_query_sec: float = Field(
        0.1, ge=0.02, le=5.0, description="A shorter query is refused as too short (s)."
    )

    # --- temporal detection ----------------------------------------------------------------
    window_sec: float = Field(1.0, gt=0.1, le=10.0, description="Detection window length (s).")
    hop_sec: float = Field(0.5, gt=0.01, le=10.0, description="Detection window hop (s).")
    cls_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Absolute threshold on the window score; when unset, --cls_percentile is used.",
    )
    cls_percentile: float = Field(
        92.0, ge=0.0, le=100.0, description="Percentile of window scores used as threshold."
    )
    use_cosine_gate: bool = Field(
        False, description="Also require window-to-query embedding cosine ≥ --cosine_threshold."
    )
    cosine_threshold: float = Field(
        0.45, ge=-1.0, le=1.0, description="Cosine similarity gate for --use_cosine_gate."
    )
    min_dur_ms: float = Field(500.0, ge=0.0, le=60000.0, description="Drop segments shorter than this (ms).")
    merge_gap_ms: float = Field(200.0, ge=0.0, le=60000.0, description="Merge segments closer than this (ms).")
    segment_padding_ms: float = Field(50.0, ge=0.0, le=5000.0, description="Pad each segment by this (ms).")

    # --- reference and initial mask ---------------------------------------------------------
    n_mels: int = Field(64, ge=8, le=256, description="Mel bands of the reference and DGMO loss.")
    nfft: int = Field(512, ge=64, le=8192, description="STFT size (samples).")
    hop: int = Field(256, ge=16, le=4096, description="STFT hop (samples).")
    time_mask_sharpening: float = Field(
        1.2, gt=0.0, le=10.0, description="Exponent sharpening the time-activity mask."
    )
    gamma_profile: float = Field(
        0.25, ge=0.0, le=1.0, description="Weight of the query's frequency profile in the initial mask."
    )
    mask_floor: float = Field(0.08, ge=0.0, lt=1.0, description="Lowest mask value.")
    soft_masking: bool = Field(True, description="Soft (ratio) mask; off = binary mask at 0.5.")
    unit_peak_mask: bool = Field(
        True,
        description="Scale the nmf/wiener mask, by one factor per mixture, so its largest value is 1: the target "
        "comes out near its level instead of about 14 dB below it (SI-SDR is the same either way).",
    )
    use_embedding_masking: bool = Field(
        False, description="Blend in semantic (AST embedding) similarity per frame (needs an AST)."
    )
    semantic_blending: float = Field(
        0.7, ge=0.0, le=1.0, description="Weight of the semantic similarity when blending."
    )
    similarity_smoothing: float = Field(
        1.0, ge=0.0, le=20.0, description="Gaussian smoothing (frames) of the similarity curve."
    )
    use_spectrogram_features: bool = Field(
        False,
        description="Use AST patch-embedding similarity to the query as a 2-D time-frequency mask.",
    )

    # --- DGMO ----------------------------------------------------------------------------
    opt_steps: int = Field(18, ge=0, le=1000, description="Adam steps of the DGMO mask optimisation.")
    lr: float = Field(0.28, gt=0.0, le=10.0, description="DGMO learning rate.")
    lambda_tv: float = Field(0.008, ge=0.0, le=10.0, description="Weight of the total-variation term.")
    lambda_sat: float = Field(0.001, ge=0.0, le=10.0, description="Weight of the saturation term.")

    # --- long inputs -----------------------------------------------------------------------
    chunk_sec: float = Field(
        60.0, ge=5.0, le=3600.0, description="Mixtures longer than this are separated in overlapping chunks (s)."
    )

    # --- outputs ---------------------------------------------------------------------------
    output_format: Literal["PCM_16", "FLOAT", "FLAC"] = Field(
        "PCM_16", description="Audio format of written files (WAV PCM_16, WAV FLOAT, or FLAC)."
    )
    save_trimmed_query: bool = Field(False, description="Write the trimmed query (query_trimmed.wav).")
    save_renamed_query: bool = Field(True, description="Write the query as {class_name}.wav.")
    save_visualizations: bool = Field(
        True, description="Write {class_name}_comparison.png and {class_name}_timeline.png."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Params":
        if self.hop > self.nfft:
            raise ValueError(f"hop ({self.hop}) must not exceed nfft ({self.nfft})")
        if self.hop_sec > self.window_sec:
            raise ValueError(f"hop_sec ({self.hop_sec}) must not exceed window_sec ({self.window_sec})")
        if self.min_query_sec >= self.max_query_sec:
            raise ValueError("min_query_sec must be below max_query_sec")
        return self


class RuntimeOptions(_Schema):
    """How the model runs. Fixed for the lifetime of a Separator."""

    model: str = Field(
        DEFAULT_MODEL,
        description="AST model: a Hugging Face id, a local directory saved with save_pretrained, "
        "or 'none' to run without trained weights (query detector only).",
    )
    offline: bool = Field(
        False, description="Never touch the network; the model must be in the local cache or a directory."
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto (CUDA when present), cpu, cuda[:N].")
    threads: int = Field(2, ge=1, le=256, description="Torch CPU threads (several jobs at once on the same "
                         "cores: 1 each is fastest).")
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="AST precision: fp32, bf16 (autocast), int8 (dynamic quantisation); "
        "auto = bf16 where the CPU/GPU supports it natively, else fp32.",
    )


PRESETS: dict[str, dict[str, Any]] = {
    # The original design: AST detection, stitching + DGMO masker, balanced parameters.
    "seed": {"detector": "ast", "masker": "seed"},
    "balanced": {},
}

# Detectors that need a trained AST; with model none only the others run.
NEEDS_AST = frozenset({"ast", "fused"})

PARAM_KEYS = frozenset(Params.model_fields)
RUNTIME_KEYS = frozenset(RuntimeOptions.model_fields)


def _describe_range(model: type[BaseModel], key: str) -> str:
    field = model.model_fields[key]
    bounds = []
    for meta in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            val = getattr(meta, attr, None)
            if val is not None:
                bounds.append(f"{sym} {val}")
    return " and ".join(bounds)


def _problems(err: ValidationError, model: type[BaseModel]) -> list[tuple[str | None, str]]:
    """(key, problem) per error: what is wrong and what is allowed, in words."""
    out: list[tuple[str | None, str]] = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or None  # None: a check across keys names them
        if e["type"] == "extra_forbidden":
            out.append((key, "unknown key"))
            continue
        msg = e["msg"].removeprefix("Value error, ").split(", unable to ")[0].replace("Input should be", "must be")
        if key in model.model_fields:
            rng = _describe_range(model, key)
            if rng and ("greater" in msg or "less" in msg):
                msg = f"must be {rng}"
        got = e.get("input")
        got_txt = f" (got {got!r})" if key and got is not None and not isinstance(got, dict) else ""
        out.append((key, f"{msg}{got_txt}"))
    return out


def layer_name(source: str) -> str:
    """What an error calls a layer: the file of "config:FILE" / "sidecar:FILE", else the label."""
    kind, sep, rest = source.partition(":")
    return rest if sep and kind in ("config", "sidecar", "daemon config") else source


def _preset_source(source: str, preset: str) -> str:
    return f"{source} (preset {preset})"


def source_layer(source: str) -> tuple[str, str | None]:
    """Split a :func:`resolve` source into (layer, preset): ``"sidecar:a.yaml (preset seed)"`` →
    ``("sidecar:a.yaml", "seed")``, ``"cli"`` → ``("cli", None)``."""
    m = re.fullmatch(r"(.*) \(preset (\w+)\)", source)
    return (m[1], m[2]) if m else (source, None)


def check_weights_free(params: Params, sources: Mapping[str, str]) -> None:
    """Raise :class:`ParamError` when ``params`` need a trained AST (detector ast or fused), naming
    the layer and the key that asked for it: the preset when a preset set the detector."""
    if params.detector not in NEEDS_AST:
        return
    layer, preset = source_layer(sources.get("detector", "default"))
    key, what = ("preset", f"'{preset}' needs an AST model (it sets detector: {params.detector})") if preset \
        else ("detector", f"'{params.detector}' needs an AST model")
    raise ParamError.of(layer_name(layer), [(key, f"{what}; without one (model none) use the query detector, "
                                                  "or oracle with a segments file")])


def validate_params(values: Mapping[str, Any], source: str = "parameters") -> Params:
    """Build :class:`Params` from a mapping, raising :class:`ParamError` naming bad keys."""
    try:
        return Params(**dict(values))
    except ValidationError as err:
        raise ParamError.of(layer_name(source), _problems(err, Params)) from None


def validate_runtime(values: Mapping[str, Any], source: str = "options") -> RuntimeOptions:
    try:
        return RuntimeOptions(**dict(values))
    except ValidationError as err:
        raise ParamError.of(layer_name(source), _problems(err, RuntimeOptions)) from None


def resolve(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[Params, dict[str, str]]:
    """Merge parameter layers, later ones winning, and record where each value came from.

    ``layers`` is e.g. ``[("config:sep.yaml", {...}), ("cli", {...}), ("sidecar:a.yaml", {...})]``.
    A ``preset`` key in a layer expands to the preset's values at that layer's precedence.
    Returns the validated parameters and ``{key: source}`` for every key (``"default"`` when unset).
    """
    merged: dict[str, Any] = {}
    sources = {k: "default" for k in PARAM_KEYS}
    for source, values in layers:
        values = dict(values)
        preset = values.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise ParamError.of(layer_name(source), [("preset", f"must be one of {sorted(PRESETS)} (got {preset!r})")])
            for k, v in PRESETS[preset].items():
                merged[k], sources[k] = v, _preset_source(source, preset)
        # Validate each layer on its own so an error names the file it came from.
        unknown = sorted(set(values) - PARAM_KEYS)
        if unknown:
            raise ParamError.of(layer_name(source), [
                (k, "a runtime option: set it where the model is loaded (the Separator, the command "
                 "line or the daemon config), not per separation" if k in RUNTIME_KEYS else "unknown key")
                for k in unknown
            ])
        for k, v in values.items():
            merged[k], sources[k] = v, source
        validate_params(merged, source)
    return validate_params(merged, "parameters"), sources


MAX_PARAM_FILE_BYTES = 1_000_000


def _read_text(path: Path, what: str) -> str:
    """The file as text; a ParamError in plain words (no exception class or errno) when it cannot
    be read. Reads at most one byte past the limit, and never opens what is not a regular file (a
    FIFO would block)."""
    why = None
    if not path.exists():
        why = "no such file"
    elif path.is_dir():
        why = "is a folder, not a file"
    elif not path.is_file():
        why = "not a regular file"
    else:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_PARAM_FILE_BYTES + 1)
        except OSError as e:
            why = (e.strerror or str(e)).lower()
    if why:
        raise ParamError(f"{path}: cannot read {what}: {why}")
    if len(data) > MAX_PARAM_FILE_BYTES:
        raise ParamError(f"{path}: {what} is larger than 1 MB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamError(f"{path}: cannot read {what}: not UTF-8 text (byte {e.object[e.start]:#04x} "
                         f"at offset {e.start})") from None


def load_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping safely; an unreadable file, a YAML error, a non-mapping or an alias
    bomb is a ParamError."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as e:
        raise ParamError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamError(f"{path}: {what} must be a mapping of key: value, not {type(data).__name__}")
    for k, v in data.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ParamError.of(str(path), [(str(k), "must be a finite number")])
    return data


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases: parameter files never need them, and they allow
    "billion laughs" expansion bombs."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in parameter files", event.start_mark
            )
        return super().compose_node(parent, index)


def split_config(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a config mapping into (separation params, runtime options); unknown keys are errors."""
    params, runtime = {}, {}
    for k, v in data.items():
        if k in PARAM_KEYS or k == "preset":
            params[k] = v
        elif k in RUNTIME_KEYS:
            runtime[k] = v
        else:
            raise ParamError.of(layer_name(source), [(str(k), "unknown key")])
    return params, runtime
