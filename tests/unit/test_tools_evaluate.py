"""``medroute evaluate`` on the shipped text bundle, the CSV reader's errors, and the metrics."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from models.bundle import load_bundle
from models.registry import find_bundle
from tools.modelling import evaluate
from tools.modelling.datasets import DataError, read_labelled_csv
from tools.modelling.metrics import classification_metrics, expected_calibration_error, roc_auc

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "mtsamples" / "doctype_dev.csv"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = evaluate.main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_doctype_dev_matches_the_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--model", "doctype-en", "--test-data", str(DEV))
    assert status == 0
    metrics = json.loads(out)  # exactly one JSON object
    recorded = load_bundle(find_bundle("doctype-en")).manifest["metrics"]["dev"]
    assert metrics["model"] == "doctype-en@1.0.0"
    assert metrics["rows"] == recorded["rows"] == 170
    assert metrics["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=1e-3)
    assert metrics["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-3)
    assert sum(c["support"] for c in metrics["per_class"].values()) == 170
    assert all(0 <= c[k] <= 1 for c in metrics["per_class"].values() for k in ("precision", "recall", "f1"))
    assert 0 <= metrics["ece"] <= 1
    assert "auc" not in metrics  # seven labels


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file"),
        (b"id,text\n1,hello\n", ":1: missing column(s) label"),
        (b"id,text,label\n", "no data rows"),
        (b"id,text,label\n1,fine,letter\n2,caf\xe9,letter\n", ":3: bytes that are not UTF-8"),
        (b"id,text,label\n1,fine,letter\n2,two,fields,extra\n", ":3: 4 fields, but the header has 3"),
        (b'id,text,label\n1,"multi\nline",letter\n2,x,\n', ":4: empty label"),
        (b"id,text,label\n1,fine,not_a_doctype\n", "labels the model does not know: not_a_doctype"),
    ],
)
def test_bad_csv_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    status, out, err = run(capsys, "--model", "doctype-en", "--test-data", str(path))
    assert status == 2
    assert out == ""
    assert err.startswith("medroute evaluate: error: ")
    assert expected in err
    assert "Traceback" not in err


def test_missing_file_and_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "--model", "doctype-en", "--test-data", str(tmp_path / "none.csv"))
    assert status == 2 and "no such file" in err
    status, _, err = run(capsys, "--model", "no-such-model", "--test-data", str(DEV))
    assert status == 2 and "no model bundle 'no-such-model'" in err


def test_reader_handles_gzip_bom_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv.gz"
    with gzip.open(path, "wb") as stream:
        stream.write('\ufeffid,text,label\na,"two\nlines",x\nb,plain,y\n'.encode())
    rows = read_labelled_csv(path)
    assert [(r.id, r.text, r.label, r.line) for r in rows] == [("a", "two\nlines", "x", 2), ("b", "plain", "y", 4)]
    with pytest.raises(DataError, match="no such file"):
        read_labelled_csv(tmp_path / "missing.csv")


def test_metrics_agree_with_sklearn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 300)
    scores = np.clip(truth * 0.3 + rng.random(300) * 0.7, 0, 1).round(2)  # rounding makes ties
    probabilities = np.stack([1 - scores, scores], axis=1)
    metrics = classification_metrics(truth, probabilities, ["a", "b"])
    assert roc_auc(truth == 1, scores) == pytest.approx(sklearn_metrics.roc_auc_score(truth, scores))
    predicted = probabilities.argmax(axis=1)
    assert metrics["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(truth, predicted, average="macro"), abs=1e-4)
    assert metrics["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(truth, predicted), abs=1e-4)
    assert metrics["confusion_matrix"] == sklearn_metrics.confusion_matrix(truth, predicted).tolist()
    # a model that is always right and always sure is perfectly calibrated
    assert expected_calibration_error(truth, np.eye(2)[truth]) == 0.0
