"""What every classifier returns, and what text and image classifiers share: the execution providers
and the step from a probability matrix to predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float]
    below_threshold: bool  # confidence under the bundle's threshold for this label


def providers() -> list[str]:
    """CUDA first where this onnxruntime build has it; CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def predictions_from(probabilities: np.ndarray, labels: Sequence[str], thresholds: np.ndarray) -> list[Prediction]:
    """The best label of each row of ``probabilities``, flagged where under that label's threshold."""
    best = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    return [
        Prediction(
            label=labels[k],
            confidence=float(row[k]),
            scores={label: float(p) for label, p in zip(labels, row, strict=True)},
            below_threshold=bool(row[k] < thresholds[k]),
        )
        for row, k in zip(probabilities, best, strict=True)
    ]
