"""``event.json`` (the machine-readable report) and writing a result's files."""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

from . import audio
from .errors import InputError

if TYPE_CHECKING:
    from .separator import Result

SCHEMA_VERSION = "1.1"
SCHEMA_PATH = Path(__file__).with_name("event.schema.json")
_EXT = {"PCM_16": ".wav", "FLOAT": ".wav", "FLAC": ".flac"}


def safe_name(name: str, max_len: int = 80) -> str:
    """A filesystem-safe, readable file stem from an AudioSet class name.

    ``"Male speech, man speaking"`` → ``"Male_speech_man_speaking"``. Unicode is folded to ASCII;
    anything outside ``[A-Za-z0-9._-]`` becomes ``_``; never empty, never a dot-name.
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return (text[:max_len].rstrip("._-") or "target")


def _r(x: float | None, nd: int = 5) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _mask_stats(mask: np.ndarray) -> dict[str, float]:
    return {
        "shape": list(mask.shape),
        "mean": _r(mask.mean()),
        "min": _r(mask.min()),
        "max": _r(mask.max()),
        "fraction_above_half": _r((mask > 0.5).mean()),
    }


def _windows(result: "Result") -> list[dict[str, float]]:
    w = result.detection.windows
    if w is None:
        return []
    return [
        {"start": _r(s, 4), "end": _r(s + w.window_sec, 4), "prob": _r(p), "cosine": _r(c)}
        for s, p, c in zip(w.starts_s, w.probs, w.cosine)
    ]


def _activity(result: "Result", max_points: int = 400) -> dict[str, Any]:
    """The soft activity curve, decimated so event.json stays small."""
    d = result.detection
    step = max(1, int(math.ceil(len(d.activity) / max_points)))
    return {
        "times_s": [_r(t, 4) for t in d.times_s[::step]],
        "values": [_r(v, 4) for v in d.activity[::step]],
    }


def build_event(result: "Result", extra: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> dict[str, Any]:
    """The event.json dictionary of a result (JSON-serialisable; see event.schema.json)."""
    d = result.detection
    ev: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": result.inputs,
        "query": result.query_trim,
        "classification": result.classification.to_dict(),
        "target_found": bool(d.found),
        "detection": {
            "detector": d.name,
            "found": bool(d.found),
            "threshold": _r(d.threshold),
            "evidence": _jsonable(d.evidence),
            "windows": _windows(result),
            "activity": _activity(result),
        },
        "segments": [s.to_dict() for s in d.segments],
        "params": result.params.model_dump(),
        "param_sources": result.param_sources,
        "unused_params": result.unused_params,
        "notes": result.notes,
        "masker": {
            "name": result.masker,
            "loss_history": [_r(v, 6) for v in result.mask_result.loss_history],
            "mask": _mask_stats(result.mask),
            "info": _jsonable(result.mask_result.info),
        },
        "metrics": _jsonable(result.metrics) if result.metrics is not None else None,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "versions": result.versions,
        "outputs": files or {},
    }
    ev["timings"]["total"] = round(sum(result.timings.values()), 4)
    if extra:
        ev.update(_jsonable(extra))
    return ev


def _jsonable(x: Any) -> Any:
    """Numpy scalars/arrays → Python; non-finite floats → None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return _r(x, 6)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path if it can be the output folder (it is one, or does not exist yet).

    Raises :class:`InputError` naming the path otherwise, so callers can check before any work
    is done rather than fail after it.
    """
    if str(out_dir).strip() == "":
        raise InputError(None, "the output folder name is empty")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    return out


def make_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder ``out_dir`` and its parents unless it exists; returns it."""
    out = check_out_dir(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(out, f"cannot create the output folder: {e.strerror or e}") from e
    return out


def write_outputs(result: "Result", out_dir: Path, extra: dict[str, Any]) -> dict[str, Path]:
    """Write every output file of ``result`` into ``out_dir`` (created if missing)."""
    make_out_dir(out_dir)
    p = result.params
    ext = _EXT[p.output_format]
    name = result.class_name
    files: dict[str, Path] = {}
    t0 = time.perf_counter()

    files["target"] = out_dir / f"target{ext}"
    audio.write(files["target"], audio.peak_safe(result.target), fmt=p.output_format)
    files["residual"] = out_dir / f"residual{ext}"
    residual = result.residual
    if p.output_format != "FLOAT":
        # 16-bit files: the residual is the mixture minus the target *as stored*, so that the two
        # files still add up to a 16-bit mixture sample for sample (rounding each on its own
        # leaves them one step off in about half the samples).
        stored, _ = sf.read(files["target"], dtype="float32")
        residual = result.mix - stored
    audio.write(files["residual"], audio.peak_safe(residual), fmt=p.output_format)
    if p.save_renamed_query and result.classification.available:
        # Without a class the query keeps no new name: "target" is the separated sound's file.
        files["renamed_query"] = out_dir / f"{name}{ext}"
        audio.write(files["renamed_query"], audio.peak_safe(result.query), fmt=p.output_format)
    if p.save_trimmed_query:
        files["trimmed_query"] = out_dir / f"query_trimmed{ext}"
        audio.write(files["trimmed_query"], audio.peak_safe(result.query), fmt=p.output_format)
    if p.save_visualizations:
        from . import plots

        files["comparison_plot"] = out_dir / f"{name}_comparison.png"
        plots.comparison_plot(
            files["comparison_plot"],
            mix=result.mix,
            target=result.target,
            residual=result.residual,
            reference_mel=result.mask_result.reference_mel,
            mask=result.mask,
            sr=audio.SAMPLE_RATE,
            hop=p.hop,
            title=f"{name}: mixture / target / residual",
        )
        files["timeline_plot"] = out_dir / f"{name}_timeline.png"
        plots.timeline_plot(
            files["timeline_plot"],
            detection=result.detection,
            duration_s=len(result.mix) / audio.SAMPLE_RATE,
            title=f"{name}: detection",
        )
    result.timings["write"] = time.perf_counter() - t0
    files["event"] = out_dir / "event.json"
    ev = build_event(result, extra, {k: v.name for k, v in files.items()})
    tmp = files["event"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ev, indent=1, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    tmp.replace(files["event"])
    return files


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
