"""The ONNX runtime classifier on the shipped doctype-en bundle."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.text import Prediction, TextClassifier

RADIOLOGY = """EXAM: CT of the abdomen and pelvis with contrast.
REASON FOR EXAM: Right lower quadrant pain.
TECHNIQUE: Axial images were obtained from the lung bases through the pubic symphysis after intravenous contrast.
FINDINGS: The liver, spleen, pancreas and adrenal glands are unremarkable. No free fluid. The appendix is dilated
to 11 mm with periappendiceal fat stranding. No abscess.
IMPRESSION: Findings consistent with acute appendicitis."""

DISCHARGE = """ADMISSION DIAGNOSIS: Community-acquired pneumonia.
DISCHARGE DIAGNOSIS: Community-acquired pneumonia, resolved.
HOSPITAL COURSE: The patient was admitted and treated with intravenous antibiotics with improvement.
DISCHARGE MEDICATIONS: Amoxicillin 500 mg three times a day for five days.
DISCHARGE INSTRUCTIONS: Follow up with the primary care physician in one week."""


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    return TextClassifier.load("doctype-en")


def test_identity(classifier: TextClassifier) -> None:
    assert classifier.name == "doctype-en"
    assert classifier.ref == f"doctype-en@{classifier.version}"
    assert classifier.labels == sorted(classifier.labels)  # the bundle's order, sklearn's classes_
    assert len(classifier.labels) == 7


def test_radiology_and_discharge_reports(classifier: TextClassifier) -> None:
    radiology, discharge = classifier.predict([RADIOLOGY, DISCHARGE])
    assert radiology.label == "radiology_report"
    assert discharge.label == "discharge_summary"
    assert isinstance(radiology, Prediction)
    assert radiology.confidence == max(radiology.scores.values())
    assert radiology.below_threshold == (radiology.confidence < classifier.bundle.threshold(radiology.label))


def test_probabilities_sum_to_one(classifier: TextClassifier) -> None:
    for prediction in classifier.predict([RADIOLOGY, "Dear Dr. Smith, thank you for the referral.", "x"]):
        assert list(prediction.scores) == classifier.labels
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in prediction.scores.values())


def test_empty_and_unknown_text_get_the_prior(classifier: TextClassifier) -> None:
    empty, blank, unknown = classifier.predict(["", "   \n", "qqqzx wwwvy"])
    assert blank.scores == pytest.approx(empty.scores)
    assert unknown.scores == pytest.approx(empty.scores)
    assert empty.label in classifier.labels
    assert classifier.predict([]) == []


def test_batch_equals_one_by_one(classifier: TextClassifier) -> None:
    texts = [RADIOLOGY, "", DISCHARGE * 40, "Chief complaint: cough.", RADIOLOGY[:80]] * 8  # > one batch
    batched = classifier.predict_proba(texts)
    single = np.array([classifier.predict_proba([text])[0] for text in texts])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    assert [p.label for p in classifier.predict(texts)] == [classifier.labels[k] for k in single.argmax(1)]


def test_one_string_is_refused(classifier: TextClassifier) -> None:
    with pytest.raises(TypeError):
        classifier.predict(RADIOLOGY)


def test_runtime_imports_neither_torch_nor_sklearn() -> None:
    code = (
        "import sys; from models.text import TextClassifier; TextClassifier.load('doctype-en').predict(['x']); "
        "print(sorted(m for m in ('torch', 'sklearn', 'transformers', 'onnx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_repeated_texts_come_from_the_cache_with_the_same_result() -> None:
    classifier = TextClassifier.load("doctype-en")
    classifier.cache_size = 2
    texts = ["FINDINGS: normal chest.", "DISCHARGE DIAGNOSIS: pneumonia.", "Dear Dr. Smith, thank you."]
    first = classifier.predict_proba(texts)
    hits = classifier.cache_hits
    again = classifier.predict_proba([texts[2], texts[1], texts[2]])  # the first text was evicted (size 2)
    assert classifier.cache_hits == hits + 3
    np.testing.assert_array_equal(again, first[[2, 1, 2]])
    classifier.predict_proba([texts[0]])
    assert classifier.cache_hits == hits + 3  # evicted: computed again
