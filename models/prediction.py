"""What every classifier returns, and what text and image classifiers share: the execution providers
and the step from a probability matrix to predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.registry import MODELS

MODEL_THREADS = MODELS("MEDROUTE_MODEL_THREADS", 1, "ONNX Runtime threads per model session (no spin-waiting); "
                       "raise it for large transformer models on an otherwise idle host", minimum=1)


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


def open_session(path: str | Path) -> ort.InferenceSession:
    """An ONNX Runtime session for a bundle's graph, with ``MEDROUTE_MODEL_THREADS`` threads (default 1).

    One thread and no spin-waiting by default: the pipeline parallelises across micro-batches and
    processes, and ONNX Runtime's default (a spinning thread per core) doubled the CPU a small model
    costs on a shared 2-core host while making it slower (2,600 against 4,400 texts/s measured).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = MODEL_THREADS()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=providers())


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
