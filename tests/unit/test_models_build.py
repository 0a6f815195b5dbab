"""The bundle builder: the ONNX graph reproduces the sklearn model, and a small build loads and predicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.bundle import MANIFEST, verify_files
from models.registry import INSTALLED_DIR
from models.text import TextClassifier
from tools.modelling.build_text_model import Config, Dataset, build, read_csv, train

DATA = Path(__file__).resolve().parents[2] / "data" / "mtsamples"
SHIPPED = INSTALLED_DIR / "doctype-en"


@pytest.fixture(scope="module")
def train_data() -> Dataset:
    return read_csv([DATA / "doctype_train.csv"])


@pytest.fixture(scope="module")
def dev() -> Dataset:
    return read_csv([DATA / "doctype_dev.csv"])


def subset(data: Dataset, per_label: int) -> Dataset:
    rows: dict[str, list[str]] = {}
    for text, label in zip(data.texts, data.labels, strict=True):
        if len(rows.setdefault(label, [])) < per_label:
            rows[label].append(text)
    texts = [text for label in sorted(rows) for text in rows[label]]
    labels = [label for label in sorted(rows) for _ in rows[label]]
    return Dataset(texts, labels, data.sha256)


def test_shipped_bundle_is_the_sklearn_model_retrained(train_data: Dataset, dev: Dataset) -> None:
    """Retraining with the recorded settings on the recorded data gives the shipped graph's probabilities."""
    manifest = json.loads((SHIPPED / MANIFEST).read_text())
    assert manifest["training"]["data_sha256"] == train_data.sha256
    model = train(train_data, Config(**manifest["training"]["hyperparameters"]))
    sample = dev.texts[::4]
    expected = model.predict_proba(sample)
    shipped = TextClassifier.load(SHIPPED)
    assert shipped.labels == model.labels
    np.testing.assert_allclose(shipped.predict_proba(sample), expected, atol=1e-4)


def test_small_build_loads_and_predicts(tmp_path: Path, train_data: Dataset, dev: Dataset) -> None:
    config = Config(max_length=256, prefix_tokens=8, c=1.0)
    output = tmp_path / "tiny"
    classifier = build(
        subset(train_data, 6),
        subset(dev, 2),
        name="tiny",
        version="0.0.1",
        output=output,
        config=config,
        cv_folds=0,
        log=lambda message: None,
    )
    verify_files(output)
    manifest = json.loads((output / MANIFEST).read_text())
    assert manifest["preprocessing"]["max_length"] == 256
    assert manifest["metrics"]["onnx_vs_sklearn_max_abs_diff"] < 1e-4
    assert set(manifest["metrics"]["baselines_dev"]) == {"tfidf_logreg", "tfidf_logreg_balanced"}
    assert classifier.ref == "tiny@0.0.1"
    predictions = classifier.predict(["FINDINGS: normal chest. IMPRESSION: no acute disease.", ""])
    assert [p.label in classifier.labels for p in predictions] == [True, True]
    assert not list(tmp_path.glob(".*building"))


def test_build_without_header_bigrams_still_matches(tmp_path: Path, train_data: Dataset) -> None:
    config = Config(max_length=128, prefix_tokens=0, header_bigrams=False)
    data = subset(train_data, 5)
    model = train(data, config)
    classifier = build(
        data,
        subset(train_data, 1),
        name="plain",
        version="1",
        output=tmp_path / "plain",
        config=config,
        cv_folds=0,
        log=lambda message: None,
    )
    texts = [*data.texts[:10], "", "CHIEF COMPLAINT: chest pain"]
    np.testing.assert_allclose(classifier.predict_proba(texts), model.predict_proba(texts), atol=1e-4)
