"""The model interface the feeds classify with, and a prediction as the pipeline records it.

A model is anything with the interface of ``models.text.TextClassifier`` or ``models.image.ImageClassifier``
(``ref``, ``labels``, ``predict``), so the worker, the REST API, replay and batch runs share the feeds,
and tests can pass a small fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Prediction(Protocol):
    label: str
    confidence: float
    scores: Mapping[str, float]
    below_threshold: bool


class Model(Protocol):
    @property
    def ref(self) -> str: ...  # "name@version"

    @property
    def labels(self) -> list[str]: ...

    def predict(self, inputs: Sequence[Any]) -> Sequence[Prediction]: ...  # texts, or 2-D pixel arrays


@dataclass(frozen=True)
class Classification:
    model: str  # "name@version"
    label: str
    confidence: float
    below_threshold: bool  # under the model's own threshold for this label
    # Every label's probability (the web API shows them); not part of decisions or audit events.
    scores: Mapping[str, float] = field(default_factory=dict, compare=False, repr=False)


def classification_of(model: str, prediction: Prediction) -> Classification:
    """A model's prediction as the pipeline records it (text and image models alike)."""
    return Classification(
        model=model,
        label=prediction.label,
        confidence=float(prediction.confidence),
        below_threshold=bool(prediction.below_threshold),
        scores=prediction.scores,
    )
