"""``medroute quantize``: an int8 bundle that loads like any other, with its size and quality change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.registry import INSTALLED_DIR
from models.text import TextClassifier
from tools.modelling.quantize import main

DEV = Path(__file__).resolve().parents[2] / "data" / "mtsamples" / "doctype_dev.csv"


def test_int8_doctype_bundle_is_smaller_loads_and_reports_its_quality(tmp_path, capsys) -> None:
    target = tmp_path / "doctype-en-int8"
    assert main(["--input-model", "doctype-en", "--output-model", str(target), "--eval-data", str(DEV)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "doctype-en@1.0.0+int8"
    assert report["bytes_after"] < 0.7 * report["bytes_before"]
    assert abs(report["macro_f1_change_points"]) <= 1.0
    assert report["macro_f1"]["before"] == pytest.approx(0.8368, abs=1e-4)
    classifier = TextClassifier.load(target)
    original = TextClassifier.load(INSTALLED_DIR / "doctype-en")
    text = "FINDINGS: No acute cardiopulmonary process. IMPRESSION: Normal chest radiograph."
    assert classifier.predict([text])[0].label == original.predict([text])[0].label


def test_unsupported_bits_and_unknown_models_are_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--input-model", "doctype-en", "--output-model", str(tmp_path / "x"), "--bits", "4"])
    assert exited.value.code == 2
    assert main(["--input-model", "no-such-model", "--output-model", str(tmp_path / "y")]) == 2
    assert "no model bundle 'no-such-model'" in capsys.readouterr().err
