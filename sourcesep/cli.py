"""``sourcesep`` command line: a thin layer over :class:`sourcesep.Separator`.

Every separation parameter of :class:`sourcesep.params.Params` is a flag with the same name, its
default and its help text; ``--config FILE.yaml`` supplies any of them (and the runtime options)
from a file, flags given on the command line win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from pydantic.fields import FieldInfo

from .errors import ParamError, SourcesepError
from .openmp import limit_spin_waits
from .params import PRESETS, Params, RuntimeOptions, load_yaml_mapping, split_config

EPILOG = """\
Parameters are taken, in increasing priority, from the defaults (the original design's
"balanced" preset), --preset, --config FILE.yaml, and the flags given here. Errors (missing or
unreadable files, a silent or too-short query, a model that cannot be loaded) exit non-zero with
one line on stderr: 2 = bad input or parameter, 3 = model, 1 = anything else.
"""

CLI_SOURCE = "cli"  # the layer the command line's flags are, in event.json's param_sources


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of an annotation like ``float | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


_METAVARS = {"model": "ID_OR_DIR", "device": "DEVICE", "segments": "FILE"}


def _add_field(group: argparse._ArgumentGroup, name: str, f: FieldInfo) -> None:
    flags = [f"--{name}"]
    typ, optional = _unwrap(f.annotation)
    default = f.default
    help_text = f"{f.description} (default: {default})"
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if typ is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(typ) is typing.Literal:
        kwargs["choices"] = list(typing.get_args(typ))
    else:
        kwargs["type"] = typ
        kwargs["metavar"] = _METAVARS.get(name) or {int: "N", float: "X"}.get(typ, "VALUE")
    group.add_argument(*flags, **kwargs)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error, instead of the whole usage block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}  # the top-level parser's subcommands

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> _Parser:
    parser = _Parser(
        prog="sourcesep",
        description="Query-by-example audio source separation: give a mixture and a short example "
        "of the sound you want; get the sound (target), the rest (residual), plots and event.json.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sep = sub.add_parser(
        "separate",
        help="separate the query's sound from a mixture",
        description="Separate the query's sound from a mixture and write the results to --out_dir.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = sep.add_argument_group("inputs and outputs")
    io.add_argument("--mix_wav", "--mix-wav", required=True, metavar="PATH",
                    help="the mixture (any format libsndfile reads; resampled to 16 kHz mono)")
    io.add_argument("--query_wav", "--query-wav", required=True, metavar="PATH",
                    help="a 1-3 s example of the sound to extract")
    io.add_argument("--gt_wav", "--gt-wav", metavar="PATH", help="ground-truth target, to compute metrics (optional)")
    io.add_argument("--out_dir", "--out-dir", default="out", metavar="DIR", help="output folder (default: out)")
    io.add_argument("--config", metavar="FILE.yaml", help="YAML file of parameters and runtime options")
    io.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                    help="parameter preset: 'seed' = the original design's AST detector + stitching/DGMO masker")
    io.add_argument("--debug", action="store_true", help="show a traceback on unexpected errors")

    rt = sep.add_argument_group("model and runtime")
    for name, f in RuntimeOptions.model_fields.items():
        _add_field(rt, name, f)

    groups = {
        "detector": "pipeline", "max_query_sec": "query", "window_sec": "temporal detection",
        "n_mels": "reference and initial mask", "opt_steps": "DGMO mask optimisation",
        "chunk_sec": "long inputs", "output_format": "outputs",
    }
    group = sep.add_argument_group("pipeline")
    for name, f in Params.model_fields.items():
        if name in groups:
            group = sep.add_argument_group(groups[name])
        _add_field(group, name, f)

    ex = sub.add_parser("example", help="write a small synthetic example pair (mix.wav, query.wav, gt.wav)")
    ex.add_argument("out_dir", nargs="?", default="examples", help="folder to write into (default: examples)")

    pp = sub.add_parser("params", help="print every parameter with its default (YAML, or a Markdown table)")
    pp.add_argument("--format", choices=["yaml", "markdown"], default="yaml")
    parser.commands = {"separate": sep, "example": ex, "params": pp}
    return parser


def _version() -> str:
    from . import __version__

    return f"sourcesep {__version__}"


def _run_separate(args: argparse.Namespace) -> int:
    from .event import check_out_dir
    from .separator import Separator

    given = {k: v for k, v in vars(args).items() if k in Params.model_fields or k in RuntimeOptions.model_fields or k == "preset"}
    config_params: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    if args.config:
        config_params, runtime = split_config(load_yaml_mapping(args.config), f"config:{args.config}")
    cli_params = {k: v for k, v in given.items() if k not in RuntimeOptions.model_fields}
    runtime.update({k: v for k, v in given.items() if k in RuntimeOptions.model_fields})

    check_out_dir(args.out_dir)  # before the work, not after it
    source = f"config:{args.config}" if args.config else "separator"
    sep = Separator(**runtime, params_source=source, **config_params)
    result = sep.separate(args.mix_wav, args.query_wav, gt=args.gt_wav, source=CLI_SOURCE, **cli_params)
    files = result.write(args.out_dir)
    _summary(result, files)
    return 0


def _summary(result: Any, files: dict[str, Path]) -> None:
    c = result.classification
    lines = []
    if c.available:
        lines.append(f"query class: {c.class_name} (p={c.confidence:.2f})")
    else:
        lines.append("query class: unavailable (no AST model)")
    segs = ", ".join(f"{s.start:.2f}-{s.end:.2f}s" for s in result.segments) or "none"
    lines.append(f"target found: {'yes' if result.target_found else 'no'}; segments: {segs}")
    if result.metrics and result.metrics.get("si_sdr") is not None:
        m = result.metrics
        lines.append(f"SI-SDR {m['si_sdr']:.2f} dB (improvement {m['si_sdri']:+.2f} dB, {m['quality']})")
    elif result.metrics and result.metrics.get("leakage_db") is not None:
        lines.append(f"leakage {result.metrics['leakage_db']:.2f} dB re the mixture (the ground truth is silent)")
    lines.extend(f"note: {n}" for n in result.notes)
    lines.append(f"time: {sum(result.timings.values()):.2f} s")
    out = Path(files["event"]).parent
    lines.append(f"wrote {len(files)} files to {out}/: " + ", ".join(p.name for p in files.values()))
    sys.stdout.write("\n".join(lines) + "\n")


def _params_yaml() -> str:
    import yaml

    defaults = {**json.loads(RuntimeOptions().model_dump_json()), **json.loads(Params().model_dump_json())}
    return yaml.safe_dump(defaults, sort_keys=False)


def _params_markdown() -> str:
    from .reads import read_by

    rows = ["| option | default | read by | what it does |", "| --- | --- | --- | --- |"]
    for model in (RuntimeOptions, Params):
        for name, f in model.model_fields.items():
            typ, _ = _unwrap(f.annotation)
            if typing.get_origin(typ) is typing.Literal:
                choices = "|".join(typing.get_args(typ))
                flag = f"`--{name} {{{choices}}}`"
            elif typ is bool:
                flag = f"`--{name}` / `--no-{name}`"
            else:
                flag = f"`--{name}`"
            used = "the model (fixed per Separator)" if model is RuntimeOptions else read_by(name)
            rows.append(f"| {flag} | `{f.default}` | {used} | {f.description} |")
    return "\n".join(rows) + "\n"


def _flag_words(e: SourcesepError) -> str:
    """A problem with the command line's own options names the flag (``--opt_steps: must be …``)
    instead of the layer (``cli: opt_steps: …``)."""
    if isinstance(e, ParamError) and e.where == CLI_SOURCE and e.problems:
        return "; ".join(f"--{key}: {why}" if key else why for key, why in e.problems)
    return str(e)


def main(argv: Sequence[str] | None = None) -> int:
    # Library chatter (download retries, deprecation notes) would bury the one-line error; the
    # libraries read these when first imported, which happens later, when the model loads.
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    limit_spin_waits()  # before torch is imported: see sourcesep/openmp.py
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the command whose options these are not
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "separate":
            return _run_separate(args)
        if args.command == "example":
            from .example import write_example

            paths = write_example(Path(args.out_dir))
            sys.stdout.write("wrote " + ", ".join(str(p) for p in paths.values()) + "\n")
            return 0
        if args.command == "params":
            sys.stdout.write(_params_markdown() if args.format == "markdown" else _params_yaml())
            return 0
    except SourcesepError as e:
        sys.stderr.write(f"sourcesep: error: {_flag_words(e)}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("sourcesep: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001 - one line for users, traceback on request
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"sourcesep: unexpected error: {e.__class__.__name__}: {e} (rerun with --debug for details)\n")
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
