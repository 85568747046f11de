"""Merge the model forwards of concurrent callers into one batched forward.

Several jobs running as threads of one process (the daemon with ``isolation: thread``) each run
their own AST forwards: 1-64 windows of one mixture, or one query. One job's ~19 one-second
windows leave most of a GPU idle, so two jobs' forwards run as one batch should cost little more
than one (not yet measured on a GPU). A :class:`ForwardBatcher` does that: the first caller waits a few milliseconds for
others with inputs of the same shape, runs the forward once on all of them and gives each
caller its rows.

On CPU there is nothing to gain (a forward's cost grows with its rows) and each lone forward
pays the wait, so batching is meant for CUDA.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class BatchStats:
    """Counters since the batcher was made.

    ``requests``: calls to :meth:`ForwardBatcher.run`; ``forwards``: forwards run; ``rows``:
    input rows (windows) forwarded; ``merged_forwards``: forwards that served more than one
    request; ``merged_requests``: requests served by such a forward.
    """

    requests: int = 0
    forwards: int = 0
    rows: int = 0
    merged_forwards: int = 0
    merged_requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(eq=False)
class _Request:
    feats: torch.Tensor
    arrived: float  # time.monotonic() s
    taken: bool = False  # in a batch that is running
    done: bool = False
    outputs: tuple[torch.Tensor, ...] | None = None
    error: BaseException | None = None
    key: tuple = field(init=False)

    def __post_init__(self) -> None:
        self.key = (tuple(self.feats.shape[1:]), self.feats.dtype, self.feats.device)

    @property
    def rows(self) -> int:
        return int(self.feats.shape[0])


class ForwardBatcher:
    """Run ``forward`` once for the inputs of several concurrent callers.

    Parameters
    ----------
    forward: ``feats (B, frames, mels) → outputs``, a tuple of tensors whose first dimension is
        B (row ``i`` of each output belongs to row ``i`` of ``feats``). It must treat rows
        independently (true of a model in eval mode: no batch statistics).
    wait_ms: how long the first caller of a batch waits for others (milliseconds, ≥ 0).
    max_batch: rows at which a batch stops waiting and runs (≥ 1). A batch takes whole requests
        in arrival order up to this many rows (a single larger request runs alone).

    Thread-safe; holds no global state. The forward runs in the thread of the batch's first
    caller, outside the lock, so batches of different shapes (or the next batch of the same
    shape) gather and run while it computes. A caller with nobody to share with returns after
    ``wait_ms`` plus its own forward.
    """

    def __init__(self, forward: Forward, *, wait_ms: float, max_batch: int) -> None:
        if not 0 <= wait_ms < float("inf"):
            raise ValueError(f"wait_ms must be a finite number ≥ 0 (got {wait_ms})")
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1 (got {max_batch})")
        self._forward = forward
        self.wait_ms = float(wait_ms)
        self._wait_s = self.wait_ms / 1000.0
        self.max_batch = int(max_batch)
        self._cond = threading.Condition()
        self._pending: dict[tuple, list[_Request]] = {}  # by input shape, in arrival order
        self._stats = BatchStats()

    def stats(self) -> BatchStats:
        """A snapshot of the counters."""
        with self._cond:
            return self._stats

    def run(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Forward ``feats`` (B, ...) with B ≥ 1, batched with concurrent callers of the same
        trailing shape, dtype and device; returns this caller's rows of each output.

        Blocks up to ``wait_ms`` (less once ``max_batch`` rows are pending) plus the forward.
        An exception raised by the forward is raised in every caller of that batch.
        """
        if feats.ndim < 1 or feats.shape[0] == 0:
            raise ValueError(f"feats must have at least one row, got shape {tuple(feats.shape)}")
        req = _Request(feats, time.monotonic())
        with self._cond:
            queue = self._pending.setdefault(req.key, [])
            queue.append(req)
            self._cond.notify_all()  # a waiting first caller may now have max_batch rows
            try:
                batch = self._wait_turn(req)
            except BaseException:  # interrupted while waiting: leave the queue to the others
                if not req.taken:
                    queue.remove(req)
                    if not queue:
                        del self._pending[req.key]
                    self._cond.notify_all()
                raise
        if batch is not None:
            self._run_batch(batch)
        if req.error is not None:
            raise req.error
        assert req.outputs is not None
        return req.outputs

    # ------------------------------------------------------------------ internals
    def _wait_turn(self, req: _Request) -> list[_Request] | None:
        """Under the lock: wait until ``req`` is done (None) or leads a batch (the batch).

        The oldest pending request of a shape leads: it waits until ``wait_ms`` after its own
        arrival or until ``max_batch`` rows are pending, then takes the batch off the queue.
        """
        while not req.done:
            queue = None if req.taken else self._pending[req.key]
            if queue is None or queue[0] is not req:  # in a running batch, or not the oldest
                self._cond.wait()
                continue
            remaining = req.arrived + self._wait_s - time.monotonic()
            if remaining > 0 and sum(r.rows for r in queue) < self.max_batch:
                self._cond.wait(remaining)
                continue
            batch, rows = [], 0
            while queue and (not batch or rows + queue[0].rows <= self.max_batch):
                rows += queue[0].rows
                batch.append(queue.pop(0))
                batch[-1].taken = True
            if not queue:
                del self._pending[req.key]
            else:
                self._cond.notify_all()  # the next oldest leads the rest
            s = self._stats
            merged = len(batch) > 1
            self._stats = BatchStats(
                requests=s.requests + len(batch),
                forwards=s.forwards + 1,
                rows=s.rows + rows,
                merged_forwards=s.merged_forwards + int(merged),
                merged_requests=s.merged_requests + (len(batch) if merged else 0),
            )
            return batch
        return None

    def _run_batch(self, batch: list[_Request]) -> None:
        """Forward the batch (no lock held), hand each request its rows, wake the callers."""
        per_request: list[tuple[torch.Tensor, ...]] = []
        error: BaseException | None = None
        try:
            if len(batch) == 1:
                per_request = [tuple(self._forward(batch[0].feats))]
            else:
                outputs = self._forward(torch.cat([r.feats for r in batch]))
                parts = [torch.split(o, [r.rows for r in batch]) for o in outputs]  # views, no copies
                per_request = [tuple(p[i] for p in parts) for i in range(len(batch))]
        except BaseException as e:  # noqa: BLE001 - every caller of the batch must hear of it
            error = e
        with self._cond:
            for i, r in enumerate(batch):
                r.outputs = per_request[i] if error is None else None
                r.error = error
                r.done = True
            self._cond.notify_all()
