"""One job attempt through the daemon's preloaded :class:`sourcesep.Separator`.

Two ways to run an attempt, chosen by ``isolation`` in the config:

* ``fork`` (default on CPU): the daemon forks a child per attempt. The child inherits the loaded
  model copy-on-write, runs the job, reports one JSON outcome through a pipe and exits. A timeout
  is a real ``SIGKILL``; an out-of-memory kill takes the child, not the daemon; memory used by a
  job is returned to the system when the child exits; the daemon's main loop (signals, claims,
  heartbeat) never waits on a job. The child dies with the daemon (``PR_SET_PDEATHSIG``) so a
  killed daemon never leaves a job running behind its back.
  One constraint: GNU OpenMP cannot start threads in a child if the parent already used an OpenMP
  thread pool, so the daemon keeps torch at one thread and each child sets ``threads``.
* ``thread`` (needed with CUDA, which cannot be used across ``fork``): the attempt runs in a
  thread of the daemon. A thread cannot be killed, so on timeout the daemon records the timeout,
  stops taking jobs and exits with status 75 for systemd to restart it clean.

Errors are classified here: ``input`` (bad input or parameters; never retried), ``resource``
(disk full, quota or file size limit reached; retried until space returns), ``transient`` (out of memory, timeout, anything else;
retried up to ``max_attempts``).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sourcesep import InputError, ModelError, ParamError

from . import logs
from .room import is_resource_error, room_probe_bytes, why_no_room

INPUT, TRANSIENT, RESOURCE = "input", "transient", "resource"


@dataclass(frozen=True)
class JobSpec:
    """Everything an attempt needs, as plain data (it crosses a fork)."""

    job_id: str
    name: str
    mix: str
    query: str
    gt: str | None
    overrides: dict[str, Any]
    extra_event: dict[str, Any]
    out_dir: str
    job_log: str
    threads: int
    log_level: str = "info"
    log_format: str = "auto"
    # role → where the input will sit in the committed result folder ("inputs/NAME.mix.wav"):
    # event.json names that instead of the work folder the file is read from.
    input_paths: dict[str, str] = field(default_factory=dict)
    # the same for parameters that name a file of the job ({"segments": "inputs/segs.txt"})
    param_paths: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """``ok`` with a ``summary`` for the ledger and report, or an ``error`` dict with ``type``,
    ``message``, ``stage``, ``kind`` (input | transient | resource)."""

    ok: bool
    summary: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    duration_s: float = 0.0

    @classmethod
    def failure(cls, kind: str, type_: str, message: str, stage: str, **more: Any) -> "Outcome":
        return cls(False, error={"kind": kind, "type": type_, "message": message, "stage": stage, **more})


def classify(exc: BaseException) -> str:
    """``input``, ``resource`` or ``transient`` for an exception raised by an attempt."""
    if isinstance(exc, (InputError, ParamError)):
        return INPUT
    if is_resource_error(exc):
        return RESOURCE
    if isinstance(exc, ModelError):
        return TRANSIENT
    return TRANSIENT


def _summary(files: dict[str, Path]) -> dict[str, Any]:
    """The ledger's summary of a finished job, read back from the event.json it just wrote (so
    the two always agree, and the event is not built a second time)."""
    ev = json.loads(Path(files["event"]).read_text(encoding="utf-8"))
    cls = ev.get("classification") or {}
    return {
        "class_name": cls.get("class_name"),
        "confidence": cls.get("confidence"),
        "target_found": ev.get("target_found"),
        "segments": ev.get("segments"),
        "timings": ev.get("timings"),
        "metrics": ev.get("metrics"),
        "detector": (ev.get("detection") or {}).get("detector"),
        "masker": (ev.get("masker") or {}).get("name"),
        "notes": ev.get("notes") or [],
        "files": {k: Path(v).name for k, v in files.items()},
    }


def _largest_output_bytes(result: Any) -> int:
    """Size of the largest audio file ``result.write`` makes (samples × bytes per sample)."""
    width = 4 if getattr(result.params, "output_format", "PCM_16") == "FLOAT" else 2
    return int(max(len(result.target), len(result.residual)) * width + 4096)


def run_attempt(sep: Any, spec: JobSpec) -> Outcome:
    """Run one attempt in this process: separate, write into ``spec.out_dir``, summarise."""
    log = logs.get_logger(job_id=spec.job_id, job=spec.name)
    t0 = time.perf_counter()
    stage = "separate"
    try:
        log.info("stage start", stage=stage)
        result = sep.separate(spec.mix, spec.query, gt=spec.gt, source="daemon", **spec.overrides)
        log.info(
            "stage end",
            stage=stage,
            duration_s=round(time.perf_counter() - t0, 4),
            timings={k: round(v, 4) for k, v in result.timings.items()},
            class_name=result.classification.class_name,
            segments=[s.to_dict() for s in result.segments],
        )
        for role, rel in spec.input_paths.items():
            if isinstance(result.inputs.get(role), dict):
                work_path = result.inputs[role].get("path")
                result.inputs[role] = {**result.inputs[role], "path": rel}
                if work_path:  # notes name the files as the result folder does
                    result.notes = [n.replace(work_path, rel) for n in result.notes]
        if result.notes:
            log.info("separation notes", notes=result.notes)
        if spec.param_paths:
            result.params = result.params.model_copy(update=spec.param_paths)
        stage = "write"
        t1 = time.perf_counter()
        log.info("stage start", stage=stage)
        files = result.write(spec.out_dir, extra_event=spec.extra_event)
        log.info("stage end", stage=stage, duration_s=round(time.perf_counter() - t1, 4), files=sorted(p.name for p in files.values()))
        return Outcome(True, summary=_summary(files), duration_s=time.perf_counter() - t0)
    except Exception as exc:  # every failure becomes an error.json; the daemon goes on
        kind = classify(exc)
        message = str(exc) or exc.__class__.__name__
        more: dict[str, Any] = {}
        if kind != INPUT and stage == "write":
            # libsndfile reports a full disk, a quota or a file size limit as "System error."
            # (errno lost): ask the filesystem whether there is room, while the cut-short outputs
            # still take theirs, and compare the file size limit with the largest result file.
            more["probe_bytes"] = room_probe_bytes(spec.out_dir)
            more["file_bytes"] = _largest_output_bytes(result)
            why = why_no_room(spec.out_dir, more["probe_bytes"], more["file_bytes"])
            if why:
                kind = RESOURCE
                message = f"no room to write the results in {Path(spec.out_dir).parent}: {why} ({exc.__class__.__name__}: {message})"
        if isinstance(exc, MemoryError):
            message = "out of memory"
        log.error("stage failed", stage=stage, error_type=exc.__class__.__name__, error=message, kind=kind)
        tb = "" if kind == INPUT else "".join(traceback.format_exception(exc))[-4000:]
        out = Outcome.failure(kind, exc.__class__.__name__, message, stage, traceback=tb, **more)
        out.duration_s = time.perf_counter() - t0
        return out


# ---------------------------------------------------------------------------------------------
# Runners
# ---------------------------------------------------------------------------------------------


class Running:
    """An attempt in progress. ``fileno()`` becomes readable when it ends (for ``selectors``)."""

    def __init__(self, spec: JobSpec, fd: int, pid: int | None, thread: threading.Thread | None) -> None:
        self.spec = spec
        self.fd = fd
        self.pid = pid
        self.thread = thread
        self.started = time.monotonic()
        self._buf = bytearray()
        self.eof = False
        self.killed_for: str | None = None

    def fileno(self) -> int:
        return self.fd

    def read(self) -> bool:
        """Read what the attempt sent; True once it is finished (EOF)."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if chunk:
            self._buf += chunk
            return False
        self.eof = True
        return True

    def kill(self, reason: str) -> None:
        """Stop the attempt (fork: SIGKILL the child; thread: abandon it)."""
        self.killed_for = reason
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def outcome(self) -> Outcome:
        """Collect the result (reaps the child). Call after :meth:`read` returned True or after
        :meth:`kill`."""
        status = None
        if self.pid is not None:
            _, status = os.waitpid(self.pid, 0)
            os.set_blocking(self.fd, True)  # the child is gone: its writes are all in the pipe
            while not self.eof:
                self.read()
        try:
            os.close(self.fd)
        except OSError:
            pass
        elapsed = time.monotonic() - self.started
        if self.killed_for == "timeout":
            return Outcome.failure(TRANSIENT, "Timeout", f"the attempt exceeded job_timeout_s and was stopped after {elapsed:.1f} s", "separate", duration_s=elapsed)
        if self.killed_for:
            return Outcome.failure(TRANSIENT, "Interrupted", f"the attempt was stopped: {self.killed_for}", "separate", duration_s=elapsed)
        if self._buf:
            try:
                data = json.loads(self._buf.decode("utf-8"))
                return Outcome(data["ok"], data.get("summary"), data.get("error"), data.get("duration_s", elapsed))
            except (ValueError, KeyError):
                pass
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            hint = " (the kernel's out-of-memory killer?)" if sig == signal.SIGKILL else ""
            return Outcome.failure(TRANSIENT, "Killed", f"the job process was killed by signal {signal.Signals(sig).name}{hint}", "separate", duration_s=elapsed)
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
        return Outcome.failure(TRANSIENT, "Crashed", f"the job process ended without a result (exit status {code})", "separate", duration_s=elapsed)


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: a killed daemon's child finishes its job; the commit stays exactly-once


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def start_fork(sep: Any, spec: JobSpec) -> Running:
    """Fork a child that runs ``spec`` with ``sep`` and reports through a pipe."""
    r, w = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # nothing buffered may be written twice
        except (OSError, ValueError):
            pass
    pid = os.fork()
    if pid == 0:  # ------------------------------------------------------------ child
        code = 70
        try:
            os.close(r)
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1):
                signal.signal(s, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides on Ctrl-C
            _set_parent_death_signal()
            if os.getppid() != parent:
                os._exit(code)
            os.environ.pop("NOTIFY_SOCKET", None)
            job_logs = logs.JobLogs()
            job_logs.register(spec.job_id, Path(spec.job_log))
            logs.configure(spec.log_level, spec.log_format, sys.stdout, job_logs)
            import torch

            torch.set_num_threads(spec.threads)
            outcome = run_attempt(sep, spec)
            _write_all(w, json.dumps(asdict(outcome), default=str).encode())
            code = 0
        except BaseException:  # noqa: BLE001 - the child must never return into the daemon
            pass
        finally:
            os._exit(code)
    os.close(w)
    os.set_blocking(r, False)
    return Running(spec, r, pid, None)


def start_thread(sep: Any, spec: JobSpec) -> Running:
    """Run ``spec`` in a daemon thread; the pipe carries the outcome like a child's would."""
    r, w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(r, False)

    def target() -> None:
        try:
            outcome = run_attempt(sep, spec)
            _write_all(w, json.dumps(asdict(outcome), default=str).encode())
        except OSError:
            pass  # abandoned after a timeout: nobody reads any more
        finally:
            os.close(w)

    t = threading.Thread(target=target, name=f"job-{spec.job_id}", daemon=True)
    running = Running(spec, r, None, t)
    t.start()
    return running


@dataclass
class RunnerChoice:
    """How attempts run and with how many torch threads the daemon itself keeps."""

    isolation: str
    parent_threads: int
    reason: str = field(default="")


def choose_isolation(isolation: str, device: str, threads: int) -> RunnerChoice:
    """Resolve ``auto``: fork on CPU, thread on CUDA (CUDA state does not survive a fork).
    Raises ValueError for ``fork`` on CUDA."""
    cuda = device.startswith("cuda")
    if device == "auto":
        import torch

        cuda = torch.cuda.is_available()
    if isolation == "auto":
        isolation = "thread" if cuda else "fork"
        reason = "CUDA cannot be used in a forked child" if cuda else "CPU: forked child per job"
    elif isolation == "fork" and cuda:
        # Every attempt would fail in its child ("Cannot re-initialize CUDA in forked subprocess").
        raise ValueError(f"isolation: fork cannot run on CUDA (device: {device}): a forked child cannot use "
                          "the GPU; set isolation: thread (or auto), or device: cpu")
    else:
        reason = "configured"
    return RunnerChoice(isolation, 1 if isolation == "fork" else threads, reason)
