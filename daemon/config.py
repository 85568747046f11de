"""Daemon settings: one validated schema read from a YAML file.

``config/daemon.yaml`` documents every key. Relative folder paths are resolved against the config
file's directory (not the working directory), so a unit file and a shell see the same folders.
A bad config is one :class:`ConfigError` with a one-line message in the daemon's one form for
config and sidecar problems, ``FILE: KEY: problem`` (``daemon.yaml: workers: must be …``).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from sourcesep import ParamError, RuntimeOptions
from sourcesep.params import PARAM_KEYS, RUNTIME_KEYS, check_weights_free, load_yaml_mapping, resolve

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class ConfigError(Exception):
    """The daemon's configuration is unusable. The message is one line for the operator."""

    exit_code = 2


def key_problems(values: Mapping[str, Any], runtime_problem: str) -> list[tuple[str, str]]:
    """(key, problem) for each key of a parameter mapping that is not a separation parameter:
    a runtime option (``runtime_problem`` says where it belongs) or an unknown key."""
    return [
        (k, runtime_problem if k in RUNTIME_KEYS else "unknown key")
        for k in values
        if k not in PARAM_KEYS and k != "preset"
    ]


WORKER_MEMORY_BYTES = 1 << 30  # peak RSS of one 10 s job's child is about 0.6-0.9 GiB (README: Performance)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_files(name_v2: str, names_v1: tuple[str, ...], controller_v1: str, proc_cgroup: str,
                  root: str) -> list[str] | None:
    """Contents of this process's cgroup files: ``name_v2`` under the unified hierarchy, else
    ``names_v1`` under the v1 ``controller_v1`` hierarchy. None when neither can be read."""
    try:
        lines = Path(proc_cgroup).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.lstrip("/")
        if hid == "0" and controllers == "":
            files = [Path(root) / rel / name_v2]
        elif controller_v1 in controllers.split(","):
            files = [Path(root) / controllers / rel / n for n in names_v1]
        else:
            continue
        try:
            return [f.read_text(encoding="ascii").strip() for f in files]
        except OSError:
            continue  # hybrid hosts list a unified line whose files live elsewhere
    return None


def cgroup_memory_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """Memory limit (bytes) of this process's cgroup (systemd ``MemoryMax=``): v2 ``memory.max``
    or v1 ``memory.limit_in_bytes``. None when unlimited or unknown."""
    vals = _cgroup_files("memory.max", ("memory.limit_in_bytes",), "memory", proc_cgroup, root)
    if not vals or vals[0] == "max":
        return None
    try:
        limit = int(vals[0])
    except ValueError:
        return None
    return None if limit >= 1 << 60 else limit  # v1 writes "unlimited" as ~2^63


def cgroup_cpu_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs this process's cgroup may use (systemd ``CPUQuota=``): v2 ``cpu.max`` ("quota period")
    or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``. None when unlimited or unknown."""
    vals = _cgroup_files("cpu.max", ("cpu.cfs_quota_us", "cpu.cfs_period_us"), "cpu", proc_cgroup, root)
    if not vals:
        return None
    quota, period = (vals[0].split() + ["100000"])[:2] if len(vals) == 1 else vals
    try:
        q, p = float(quota), float(period)
    except ValueError:  # "max"
        return None
    return None if q <= 0 or p <= 0 else q / p


def effective_workers(cfg: "DaemonConfig", isolation: str) -> int:
    """``cfg.workers``, with ``auto`` resolved for this machine.

    Thread isolation (CUDA) runs 2 jobs so one can prepare while the other uses the GPU. Fork
    isolation (CPU) runs one job per ``threads`` usable cores (CPU affinity and any cgroup CPU
    quota), but no more than the available memory holds at about 1 GiB per job (MemAvailable and
    any cgroup memory limit, e.g. systemd's ``MemoryMax=``).
    """
    if cfg.workers != "auto":
        return int(cfg.workers)
    if isolation == "thread":
        return 2
    cores: float = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1.0, math.floor(quota)))
    n = max(1, int(cores) // cfg.threads)
    mems = [m for m in (_available_memory(), cgroup_memory_limit()) if m is not None]
    if mems:
        n = min(n, max(1, min(mems) // WORKER_MEMORY_BYTES))
    return min(n, 64)


def parse_hhmm(text: str) -> tuple[int, int]:
    """``"22:05"`` → ``(22, 5)``; ValueError on anything else."""
    m = _HHMM.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a time of day HH:MM")
    return int(m.group(1)), int(m.group(2))


def parse_window(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``"22:00-06:00"`` → ``((22, 0), (6, 0))``. A window may wrap past midnight."""
    parts = str(text).split("-")
    if len(parts) != 2:
        raise ValueError(f"'{text}' is not a window HH:MM-HH:MM")
    start, end = parse_hhmm(parts[0]), parse_hhmm(parts[1])
    if start == end:
        raise ValueError(f"window '{text}' is empty (start == end); leave 'windows' empty to always run")
    return start, end


class DaemonConfig(RuntimeOptions):
    """Every daemon setting with its default (see config/daemon.yaml for the commented version).

    The model and runtime keys (model, offline, device, threads, precision) are the core's own
    :class:`sourcesep.RuntimeOptions`, so the CLI and the daemon validate them the same way.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- folders -------------------------------------------------------------------------
    inbox: Path = Field(description="Where users drop jobs. Must be on the same filesystem as work.")
    outbox: Path = Field(description="Committed results, one folder per job.")
    work: Path = Field(description="Claimed jobs, the ledger and status.json.")
    failed: Path = Field(description="Failed jobs with their inputs and error.json.")
    ledger: Path | None = Field(None, description="SQLite ledger (default: WORK/state.db).")
    status_file: Path | None = Field(None, description="Heartbeat status file (default: WORK/status.json).")

    # --- separation parameters (model/runtime keys come from RuntimeOptions) -------------------
    params: dict[str, Any] = Field(default_factory=dict, description="Separation parameter defaults for every job.")

    # --- jobs ----------------------------------------------------------------------------
    # Throughput beats latency for a batch service: on CPU, jobs side by side with one thread each
    # outrun one job using every core (small AST matmuls scale poorly across threads; measured on
    # 2 cores: 2 workers x 1 thread 5,400 pairs/h, 1 worker x 2 threads 3,800).
    threads: int = Field(1, ge=1, le=256, description="Torch CPU threads per job.")
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto", description="Jobs run at the same time; auto: on CPU one per `threads` usable cores "
        "(capped by memory, about 1 GiB each), on CUDA 2."
    )
    isolation: Literal["auto", "fork", "thread"] = Field(
        "auto", description="fork: each job in a forked child (real timeouts); thread: in-process "
        "(needed for CUDA); auto: fork on CPU, thread on CUDA."
    )
    batch_windows: Literal["auto", "on", "off"] = Field(
        "auto", description="Merge the AST forwards of jobs running at the same time into one batch; "
        "auto: on with thread isolation on CUDA and more than one worker; never with fork isolation."
    )
    batch_wait_ms: float = Field(
        5.0, gt=0, le=1000, description="How long a batched forward waits for other jobs' windows (ms)."
    )
    settle_s: float = Field(2.0, gt=0, le=3600, description="Files must be unchanged this long.")
    orphan_timeout_s: float = Field(3600.0, gt=0, description="A job missing a partner this long fails.")
    job_timeout_s: float = Field(1800.0, gt=0, description="One attempt may run this long.")
    max_attempts: int = Field(3, ge=1, le=100, description="Attempts for transient errors.")
    retry_backoff_s: float = Field(30.0, ge=0, description="Backoff before attempt 2; doubles each time.")
    retry_backoff_max_s: float = Field(900.0, ge=0, description="Longest backoff.")
    max_input_mb: float = Field(1024.0, gt=0, description="Refuse audio files larger than this (MiB).")
    max_duration_s: float = Field(3600.0, gt=0, description="Refuse audio longer than this (s), from the header.")
    max_channels: int = Field(2, ge=1, le=1024, description="Refuse audio with more channels, from the header.")
    max_sample_rate: int = Field(96000, ge=8000, le=10_000_000, description="Refuse audio sampled faster (Hz), from the header.")
    grace_s: float = Field(30.0, ge=0, description="On SIGTERM, let a running job finish this long.")

    # --- schedule ------------------------------------------------------------------------
    rescan_s: float = Field(10.0, gt=0, description="Periodic inbox rescan (network filesystems).")
    heartbeat_s: float = Field(10.0, gt=0, description="status.json refresh and watchdog ping.")
    windows: list[str] = Field(default_factory=list, description="Processing windows 'HH:MM-HH:MM'; empty = always.")
    retention_days: float | None = Field(None, gt=0, description="Delete outbox/failed folders older than this; null = keep.")
    report_time: str | None = Field("07:00", description="Nightly report time HH:MM; null = no report.")

    # --- process -------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a tty, else JSON.")
    umask: int = Field(0o027, ge=0, le=0o777, description="Process umask for everything written.")
    allow_root: bool = Field(False, description="Allow running as root (refused by default).")

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            parse_window(w)
        return v

    @field_validator("report_time")
    @classmethod
    def _report_time(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hhmm(v)
        return v

    @field_validator("batch_windows", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        # YAML 1.1 reads unquoted on/off as booleans.
        return ("on" if v else "off") if isinstance(v, bool) else v

    @field_validator("umask", mode="before")
    @classmethod
    def _umask(cls, v: Any) -> Any:
        # YAML reads an unquoted 0027 as octal already; a quoted "0027"/"0o027" is parsed here.
        if isinstance(v, str):
            try:
                return int(v.strip().lower().removeprefix("0o") or "0", 8)
            except ValueError:
                raise ValueError(f"'{v}' is not an octal umask such as \"0027\"") from None
        return v

    @field_validator("settle_s", "orphan_timeout_s", "job_timeout_s", "retry_backoff_s", "grace_s", "rescan_s", "heartbeat_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DaemonConfig":
        bad = key_problems(self.params, "a runtime option: set it at the top level of the config, not under params")
        if bad:
            raise ValueError("; ".join(f"params.{k}: {why}" for k, why in bad))
        try:
            params, sources = resolve([("params", self.params)])
            if self.model.strip().lower() == "none":  # refused at start, not job by job
                check_weights_free(params, sources)
        except ParamError as e:
            pairs = e.problems or [(None, str(e))]
            raise ValueError("; ".join(f"params.{k}: {why}" if k else f"params: {why}" for k, why in pairs)) from None
        folders = {"inbox": self.inbox, "outbox": self.outbox, "work": self.work, "failed": self.failed}
        seen: dict[Path, str] = {}
        for key, p in folders.items():
            if p in seen:
                raise ValueError(f"{key}: the same folder as {seen[p]} ({p})")
            seen[p] = key
        for key, p in folders.items():
            if key != "inbox" and (p == self.inbox or self.inbox in p.parents):
                raise ValueError(f"{key}: {p} must not be inside the inbox: it would be scanned as a job")
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def ledger_path(self) -> Path:
        return self.ledger or self.work / "state.db"

    @property
    def status_path(self) -> Path:
        return self.status_file or self.work / "status.json"

    @property
    def max_bytes(self) -> int:
        return int(self.max_input_mb * 1024 * 1024)

    def runtime(self) -> dict[str, Any]:
        """The options that need a new Separator (and a model reload) when they change."""
        return {"model": self.model, "offline": self.offline, "device": self.device, "precision": self.precision}


_PATH_KEYS = ("inbox", "outbox", "work", "failed", "ledger", "status_file")


# What a key takes, where pydantic's own words would name the schema's internals (the branches
# of a union, a regular expression, an octal limit printed in decimal).
_ALLOWED = {
    "workers": "an integer from 1 to 64, or 'auto'",
    "device": "auto, cpu, cuda or cuda:N",
    "umask": 'an octal umask from "0000" to "0777"',
}
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range(key: str) -> str:
    """``≥ 1 and ≤ 256`` from the field's constraints ("" when it has none)."""
    field = DaemonConfig.model_fields.get(key)
    metadata = field.metadata if field is not None else []
    return " and ".join(f"{sym} {_num(getattr(m, a))}" for m in metadata for a, sym in _BOUNDS if getattr(m, a, None) is not None)


def _problem(key: str, e: Any) -> str:
    """What is wrong with one key, in words (pydantic's "Input should be" → "must be")."""
    msg = e["msg"].removeprefix("Value error, ")
    if key in _ALLOWED and e["type"] != "value_error":
        return f"must be {_ALLOWED[key]}"
    if e["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and _range(key):
        return f"must be {_range(key)}"
    msg = msg.split(", unable to ")[0].replace("Input should be", "must be")
    return msg.replace("a valid dictionary", "a mapping of key: value").replace("a valid boolean", "true or false")


def _format(err: ValidationError, source: str) -> str:
    """One line, ``FILE: KEY: problem`` per problem; a union's branches make one problem."""
    lines: list[str] = []
    for e in err.errors():
        if not e["loc"]:  # the model validator: its message names its keys
            line = f"{source}: {e['msg'].removeprefix('Value error, ')}"
        else:
            key = str(e["loc"][0])
            name = key + "".join(f"[{p}]" for p in e["loc"][1:] if isinstance(p, int))
            if e["type"] == "extra_forbidden":
                line = f"{source}: {name}: unknown key"
            elif e["type"] == "missing":
                line = f"{source}: {name}: required"
            else:
                problem = _problem(key, e)
                got = e.get("input")
                shown = got is None or isinstance(got, (dict, list)) or (isinstance(got, str) and repr(got) in problem)
                line = f"{source}: {name}: {problem}" + ("" if shown else f" (got {got!r})")
        if line not in lines:
            lines.append(line)
    return "; ".join(lines)


def config_from_mapping(data: dict[str, Any], base_dir: Path, source: str = "config") -> DaemonConfig:
    """Validate a config mapping; relative paths are taken relative to ``base_dir``."""
    data = dict(data)
    for key in _PATH_KEYS:
        v = data.get(key)
        if isinstance(v, (str, os.PathLike)) and str(v).strip():
            p = Path(os.path.expanduser(str(v)))
            data[key] = Path(os.path.normpath(p if p.is_absolute() else base_dir / p))
        elif key in data and v is not None:
            raise ConfigError(f"{source}: {key}: must be a folder path (got {v!r})")
    if isinstance(data.get("windows"), str):
        data["windows"] = [data["windows"]]
    try:
        return DaemonConfig(**data)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_config(path: str | os.PathLike) -> DaemonConfig:
    """Read and validate a daemon config file (YAML). Raises :class:`ConfigError`."""
    path = Path(path).expanduser()
    try:
        data = load_yaml_mapping(path, "config")
    except ParamError as e:
        raise ConfigError(str(ParamError.of(str(path), e.problems) if e.problems else e)) from None
    base = path.resolve().parent
    return config_from_mapping(data, base, str(path))


def prepare_folders(cfg: DaemonConfig, source: str = "config") -> None:
    """Create the folders (mode 0750 under the umask) and check the claim's rename can work.

    The claim is an atomic ``rename`` from inbox to work, so both must be on one filesystem.
    ``source`` (the config file) leads each :class:`ConfigError` message, as in :func:`load_config`.
    """
    for key in ("inbox", "outbox", "work", "failed"):
        p: Path = getattr(cfg, key)
        try:
            p.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as e:
            raise ConfigError(f"{source}: {key}: cannot create folder {p}: {e.strerror or e}") from None
        if not p.is_dir():
            raise ConfigError(f"{source}: {key}: {p} is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{source}: {key}: folder {p} is not writable by this user (uid {os.geteuid()})")
    for key, p in (("ledger", cfg.ledger_path.parent), ("status_file", cfg.status_path.parent)):
        try:
            p.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as e:
            raise ConfigError(f"{source}: {key}: cannot create folder {p}: {e.strerror or e}") from None
    if cfg.inbox.stat().st_dev != cfg.work.stat().st_dev:
        raise ConfigError(
            f"{source}: inbox, work: {cfg.inbox} and {cfg.work} must be on the same filesystem: "
            "jobs are claimed by an atomic rename from one to the other"
        )
