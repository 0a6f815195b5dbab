"""Document-type classification of extracted text: a pure function of the text and a model.

The model is anything with the interface of ``models.text.TextClassifier`` (``ref``, ``labels``,
``predict``), so the worker, the REST API, replay and batch runs share this code, and tests can pass a
small fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from medroute.records import Hl7Record
from pipeline.extract import ExtractedText


class Prediction(Protocol):
    label: str
    confidence: float
    scores: Mapping[str, float]
    below_threshold: bool


class TextModel(Protocol):
    @property
    def ref(self) -> str: ...  # "name@version"

    @property
    def labels(self) -> list[str]: ...

    def predict(self, texts: Sequence[str]) -> Sequence[Prediction]: ...


@dataclass(frozen=True)
class Classification:
    model: str  # "name@version"
    label: str
    confidence: float
    below_threshold: bool  # under the model's own threshold for this label


def classify(record: Hl7Record, extracted: ExtractedText, classifier: TextModel) -> Classification | None:
    """The document type of one message; None when it carries no text to classify."""
    if record.kind != "hl7":
        raise ValueError(f"a text classifier cannot classify a {record.kind!r} record")
    return classify_many([extracted], classifier)[0]


def classify_many(extracted: Sequence[ExtractedText], classifier: TextModel) -> list[Classification | None]:
    """Classify many texts in one ``predict`` call (a micro-batch); None where there is no text."""
    with_text = [n for n, item in enumerate(extracted) if item.has_text]
    results: list[Classification | None] = [None] * len(extracted)
    if not with_text:
        return results
    predictions = classifier.predict([extracted[n].text for n in with_text])
    if len(predictions) != len(with_text):
        raise RuntimeError(f"{classifier.ref} returned {len(predictions)} predictions for {len(with_text)} texts")
    for n, prediction in zip(with_text, predictions, strict=True):
        results[n] = classification_of(classifier.ref, prediction)
    return results


def classification_of(model: str, prediction: Prediction) -> Classification:
    """A model's prediction as the pipeline records it (text and image models alike)."""
    return Classification(
        model=model,
        label=prediction.label,
        confidence=float(prediction.confidence),
        below_threshold=bool(prediction.below_threshold),
    )
