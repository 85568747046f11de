"""Plain data passed between pipeline stages. Arrays are numpy unless stated otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Segment:
    """A span of the mixture where the query sound is judged active. Times in seconds."""

    start: float
    end: float
    score: float = 1.0

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, float]:
        return {"start": round(self.start, 4), "end": round(self.end, 4), "score": round(float(self.score), 4)}


@dataclass
class Classification:
    """What the AST thinks the query is. ``available`` is False without a trained model."""

    available: bool
    class_id: int | None = None
    class_name: str | None = None
    confidence: float | None = None
    top5: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "name", "p"}]
    embedding: np.ndarray | None = None  # (hidden,) float32

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "class_id": self.class_id,
            "class_name": self.class_name,
            "confidence": None if self.confidence is None else round(float(self.confidence), 5),
            "top5": self.top5,
        }


@dataclass
class WindowScores:
    """Per-window AST scores over the mixture.

    starts_s: (W,) window start times (s); probs: (W,) probability of the query class;
    cosine: (W,) cosine similarity of window embedding to query embedding;
    embeddings: (W, hidden) window embeddings.
    """

    starts_s: np.ndarray
    window_sec: float
    probs: np.ndarray
    cosine: np.ndarray
    embeddings: np.ndarray | None = None


@dataclass
class Detection:
    """Output of a temporal detector.

    times_s: (N,) frame centre times (s) of the soft activity curve; activity: (N,) in [0, 1];
    segments: detected spans; found: whether the query sound is judged present at all;
    threshold: the decision threshold applied to ``activity`` (or to window scores);
    windows: the AST window scores when the detector used them; evidence: numbers that justify
    ``found`` (reported in event.json).
    """

    name: str
    times_s: np.ndarray
    activity: np.ndarray
    segments: list[Segment]
    found: bool
    threshold: float | None = None
    windows: WindowScores | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class MaskResult:
    """Output of a masker: mask (F, T) in [0, 1] on the mixture STFT grid, DGMO loss history,
    the reference mel (n_mels, T) when the masker builds one, and extra statistics."""

    mask: np.ndarray
    loss_history: list[float] = field(default_factory=list)
    reference_mel: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
