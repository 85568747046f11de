"""Which separation parameters each detector and masker reads, so that an option the chosen
pipeline would ignore is reported (``event.json`` ``unused_params``, a note on the command line)
instead of doing nothing silently.

Parameters every pipeline reads (query limits, STFT size, chunking, outputs) are not listed here.
"""

from __future__ import annotations

from typing import Mapping

from .params import Params

_SEGMENTING = frozenset({"min_dur_ms", "merge_gap_ms", "segment_padding_ms"})
_AST_WINDOWS = frozenset({"window_sec", "hop_sec", "cls_threshold", "cls_percentile", "use_cosine_gate",
                          "cosine_threshold"})

DETECTOR_READS: dict[str, frozenset[str]] = {
    "ast": _AST_WINDOWS | _SEGMENTING,
    "query": _SEGMENTING,
    "fused": _AST_WINDOWS | _SEGMENTING,
    "oracle": frozenset({"segments"}),
}

MASKER_READS: dict[str, frozenset[str]] = {
    "seed": frozenset({"n_mels", "time_mask_sharpening", "gamma_profile", "mask_floor", "soft_masking",
                       "use_embedding_masking", "semantic_blending", "similarity_smoothing",
                       "use_spectrogram_features", "opt_steps", "lr", "lambda_tv", "lambda_sat"}),
    "nmf": frozenset({"mask_floor", "unit_peak_mask"}),
    "wiener": frozenset({"mask_floor", "unit_peak_mask", "opt_steps", "lr", "lambda_tv"}),
}

_DETECTOR_KEYS = frozenset().union(*DETECTOR_READS.values())
_MASKER_KEYS = frozenset().union(*MASKER_READS.values())

# Switches that turn a feature on: set to false they ask for nothing, so they never need a note
# (nor does any option set to None, "unset").
_SWITCHES = frozenset({"use_cosine_gate", "use_embedding_masking", "use_spectrogram_features", "save_renamed_query"})

# key → the switch it only matters with
_ONLY_WITH = {
    "cosine_threshold": "use_cosine_gate",
    "semantic_blending": "use_embedding_masking",
    "similarity_smoothing": "use_embedding_masking",
}


def _cannot_apply(key: str, detector: str, has_ast: bool) -> str | None:
    """Why the switch ``key``, turned on, cannot take effect in this pipeline (None: it can)."""
    if key == "use_embedding_masking" and not (has_ast and detector in ("ast", "fused")):
        return "needs the AST windows of the ast or fused detector"
    if key == "use_spectrogram_features" and not has_ast:
        return "needs an AST model"
    if key == "save_renamed_query" and not has_ast:
        return "needs an AST model (the query has no class without one)"
    return None


def unused_params(params: Params, sources: Mapping[str, str], detector: str, masker: str,
                  has_ast: bool) -> dict[str, str]:
    """``{key: why}`` for every parameter set explicitly (its source is not ``"default"``) that the
    pipeline (``detector``, ``masker``, with or without an AST model) does not read."""
    out: dict[str, str] = {}
    for key in Params.model_fields:  # schema order, so event.json is the same run to run
        value = getattr(params, key)
        if sources.get(key, "default") == "default" or value is None or (key in _SWITCHES and value is False):
            continue
        switch = _ONLY_WITH.get(key)
        if key in _DETECTOR_KEYS and key not in DETECTOR_READS[detector]:
            out[key] = f"not used by the {detector} detector"
        elif key in _MASKER_KEYS and key not in MASKER_READS[masker]:
            out[key] = f"not used by the {masker} masker"
        elif switch and not getattr(params, switch):
            out[key] = f"only used with {switch}: true"
        elif switch and (why := _cannot_apply(switch, detector, has_ast)):
            out[key] = f"only used with {switch}, which {why}"
        elif key == "cls_percentile" and params.cls_threshold is not None:
            out[key] = "not used when cls_threshold is set"
        elif key in _SWITCHES and (why := _cannot_apply(key, detector, has_ast)):
            out[key] = why
    return out


def read_by(key: str) -> str:
    """Which components read the parameter ``key``, in words ("seed, wiener maskers"), or
    "every run" for one every pipeline reads."""
    parts = []
    for table, what in ((DETECTOR_READS, "detector"), (MASKER_READS, "masker")):
        names = [name for name, keys in table.items() if key in keys]
        if names:
            parts.append(f"{', '.join(names)} {what}{'s' if len(names) > 1 else ''}")
    return "; ".join(parts) or "every run"


def describe_unused(unused: Mapping[str, str]) -> list[str]:
    """One line per reason: ``"opt_steps, lr: not used by the nmf masker"``."""
    by_reason: dict[str, list[str]] = {}
    for key, why in unused.items():
        by_reason.setdefault(why, []).append(key)
    return [f"{', '.join(keys)}: {why}" for why, keys in by_reason.items()]
