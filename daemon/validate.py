"""Checks on a claimed job before it runs: regular files only, exactly one mix and one query,
audio headers within the limits, and a sidecar that fits the parameter schema.

Messages name files the way the user dropped them (``street.mix.wav``, ``dog/query.ogg``), never
the daemon's work folders; a sidecar problem is ``FILE: KEY: problem`` (``street.yaml: opt_steps:
must be ≥ 0 and ≤ 1000 (got 5000)``), the form of the daemon config's own messages.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sourcesep import InputError, ParamError
from sourcesep.params import MAX_PARAM_FILE_BYTES, PARAM_KEYS, check_weights_free, load_yaml_mapping, resolve, validate_params

from .config import key_problems
from .inbox import Claim, display

MAX_SIDECAR_BYTES = MAX_PARAM_FILE_BYTES  # checked from the size first, so the message can give it


@dataclass
class JobInputs:
    """What an attempt needs from a validated job."""

    mix: str
    query: str
    gt: str | None
    overrides: dict[str, Any]  # every explicitly set parameter (daemon config + sidecar)
    param_sources: dict[str, str]  # parameter → "default" | "daemon config:F" | "sidecar:F"
    sidecar: str | None = None
    # what the sidecar set, as recorded (event.json, ledger, log): files by their result-folder path
    sidecar_overrides: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # role → file, sha256, bytes, duration…
    # parameter → the file it names, relative to the committed result folder ("inputs/segs.txt"):
    # the work folder the job reads it from is gone once the job is committed
    result_paths: dict[str, str] = field(default_factory=dict)


def public_path(p: Path, claim: Claim) -> str:
    """How the user named the file: ``NAME.mix.wav`` or ``NAME/mix.wav`` (not the work path)."""
    try:
        rel = p.relative_to(claim.inputs)
    except ValueError:
        return display(str(p))
    return display(str(Path(claim.name) / rel) if claim.kind == "folder" else str(rel))


def public_message(msg: str, claim: Claim, inbox_dir: Path) -> str:
    """``msg`` with the work and inbox folders replaced by the names the user knows."""
    prefix = f"{display(claim.name)}/" if claim.kind == "folder" else ""
    msg = display(msg)
    for base, repl in ((claim.inputs, prefix), (inbox_dir, "")):
        msg = msg.replace(display(str(base)) + os.sep, repl)
    return msg.replace(display(str(claim.inputs)), display(claim.name))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _regular_files_only(claim: Claim) -> None:
    problems = []
    for dirpath, dirnames, filenames in os.walk(claim.inputs):  # never follows links
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{public_path(p, claim)}: is a symbolic link; links are never followed (drop the file itself)")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                problems.append(f"{public_path(p, claim)}: not a regular file")
    if problems:
        raise InputError(None, "; ".join(problems))


def _sidecar_segments(sidecar: dict[str, Any], claim: Claim, rel: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A sidecar's ``segments`` file must be a regular file inside its own job folder. Returns the
    sidecar with the file's work path (what the core reads) and ``{"segments": "inputs/…"}``."""
    seg = sidecar.get("segments")
    if seg is None:
        return sidecar, {}
    if claim.kind != "folder":
        raise ParamError(f"{rel}: segments: needs a job folder (put the segments file in NAME/ next to params.yaml)")
    name = str(seg)
    target = claim.inputs / name
    if os.path.isabs(name) or ".." in Path(name).parts or target.is_symlink() or not target.is_file():
        raise ParamError(f"{rel}: segments: must name a regular file inside the job folder (got {name!r})")
    return {**sidecar, "segments": str(target)}, {"segments": str(Path("inputs") / os.path.normpath(name))}


def _key_first(e: ParamError, label: str, where: str) -> ParamError:
    """The core's error about the layer ``label`` as the daemon's ``WHERE: key: problem``."""
    if e.problems:
        return ParamError.of(where, e.problems)
    return ParamError(f"{where}: {str(e).removeprefix(label + ': ')}")


def _read_sidecar(path: Path, rel: str, config_name: str) -> dict[str, Any]:
    size = os.lstat(path).st_size
    if size > MAX_SIDECAR_BYTES:  # refused before it is read: the daemon's memory is shared by every job
        raise ParamError(f"{rel}: sidecar is {size} bytes; the limit is {MAX_SIDECAR_BYTES} bytes")
    try:
        sidecar = load_yaml_mapping(path, "sidecar")
    except ParamError as e:
        raise _key_first(e, str(path), rel) from None
    bad = key_problems(sidecar, f"set in the daemon config ({config_name}), not per job")
    if bad:
        raise ParamError("; ".join(f"{rel}: {k}: {why}" for k, why in bad))
    return sidecar


def validate(claim: Claim, *, params: dict[str, Any], config_name: str, probe: Callable[[Path], Any]) -> JobInputs:
    """Check a claimed job. Raises :class:`InputError` / :class:`ParamError` (bad input: never
    retried) or ``OSError`` (the filesystem misbehaved: retried)."""
    _regular_files_only(claim)
    files = claim.files()
    for role in ("mix", "query"):
        if len(files.get(role, [])) != 1:
            what = "no" if not files.get(role) else "more than one"
            raise InputError(None, f"{display(claim.name)}: {what} {role} file")
    for role in ("gt", "params"):
        if len(files.get(role, [])) > 1:
            raise InputError(None, f"{display(claim.name)}: more than one {role} file")
    info: dict[str, Any] = {}
    for role in ("mix", "query", "gt"):
        for p in files.get(role, []):
            a = probe(p)  # header only: limits are checked before anything is decoded
            info[role] = {
                "file": public_path(p, claim),
                "sha256": a.sha256,
                "bytes": p.stat().st_size,
                "duration_s": round(a.duration_s, 4),
                "sample_rate": a.sample_rate,
                "channels": a.channels,
                "format": a.format,
            }
    layers: list[tuple[str, dict[str, Any]]] = [(f"daemon config:{config_name}", dict(params))]
    sidecar_rel = None
    result_paths: dict[str, str] = {}
    sidecar_path = (files.get("params") or [None])[0]
    if sidecar_path is not None:
        sidecar_rel = public_path(sidecar_path, claim)
        sidecar, result_paths = _sidecar_segments(_read_sidecar(sidecar_path, sidecar_rel, config_name), claim, sidecar_rel)
        layers.append((f"sidecar:{sidecar_rel}", sidecar))
        info["params"] = {"file": sidecar_rel, "sha256": sha256_file(sidecar_path)}
    try:
        resolved, sources = resolve(layers)
    except ParamError as e:  # the config's layer was checked at start: the sidecar's is at fault
        raise _key_first(e, layers[-1][0], sidecar_rel or config_name) from None
    explicit = sorted(k for k, src in sources.items() if src != "default" and k in PARAM_KEYS)
    from_sidecar = [k for k in explicit if sources[k].startswith("sidecar")]
    return JobInputs(
        mix=str(files["mix"][0]),
        query=str(files["query"][0]),
        gt=str(files["gt"][0]) if files.get("gt") else None,
        overrides={k: getattr(resolved, k) for k in explicit},
        param_sources=sources,
        sidecar=sidecar_rel,
        sidecar_overrides={k: result_paths.get(k, getattr(resolved, k)) for k in from_sidecar},
        info=info,
        result_paths=result_paths,
    )


def check_model_fit(inputs: JobInputs, model: str) -> None:
    """Refuse, before the job runs, a sidecar that needs an AST when this daemon runs with
    ``model: none``, naming the file and key that asked for it (``job.yaml: preset: 'seed' needs
    an AST model (it sets detector: ast); …``). The daemon config's own params were checked at start."""
    if model.strip().lower() == "none":
        check_weights_free(validate_params(inputs.overrides), inputs.param_sources)
