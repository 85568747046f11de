"""A claimed job as the daemon's main loop holds it, and the timestamps it records."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from . import inbox, validate


def iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


@dataclass
class Job:
    """A claimed job owned by this process."""

    claim: inbox.Claim
    attempt: int = 0
    next_at: float = 0.0  # monotonic time of the next attempt
    validated: bool = False
    inputs: validate.JobInputs | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    final_error: dict[str, Any] | None = None  # failed, but failed/ could not be written yet
    started_at: float | None = None
    resource_blocked: bool = False
    probe_bytes: int = 0  # room the last attempt needed when the outbox was full (for the wait check)
    file_bytes: int = 0  # its largest result file

    @property
    def id(self) -> str:
        return self.claim.id
