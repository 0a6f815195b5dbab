"""``medroute routes check`` and ``routes test`` with the shipped models and rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from shell.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
DEFAULT_RULES = Path(__file__).resolve().parents[2] / "pipeline" / "routes.default.yaml"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_HOME", str(tmp_path))
    monkeypatch.delenv("MEDROUTE_DESTINATIONS", raising=False)


def test_check_accepts_the_shipped_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "check", str(DEFAULT_RULES)]) == 0
    assert "11 rules" in capsys.readouterr().out


def test_check_names_file_and_line_of_a_bad_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: a\n    label: nope\n    destinations: [x]\n  - name: d\n    destinations: [y]\n")  # noqa: E501
    assert main(["routes", "check", str(rules)]) == 2
    assert capsys.readouterr().out.startswith(f"{rules}:3: rule 'a' names label 'nope'")


def test_check_refuses_destinations_the_file_does_not_define(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: adt\n    message_type: 'ADT^*'\n    destinations: [ehr]\n"
                     "  - name: d\n    destinations: [inbox]\n")  # fmt: skip
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text("destinations:\n  ehr: {type: folder, path: /tmp/ehr}\n")
    assert main(["routes", "check", str(rules), "--destinations", str(destinations)]) == 2
    assert capsys.readouterr().out.strip() == (
        f"{rules}:5: rule 'd' names destination 'inbox', which {destinations} does not define"
    )


def test_test_decides_hl7_dicom_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "report.txt"
    text.write_text("Discharge summary. The patient was admitted with chest pain and discharged home on aspirin.")
    items = [FIXTURES / "adt_a01.hl7", get_testdata_file("CT_small.dcm"), text]
    assert main(["routes", "test", str(DEFAULT_RULES), *map(str, items), "--json"]) == 0
    adt, ct, report = (__import__("json").loads(line) for line in capsys.readouterr().out.splitlines())
    assert (adt["kind"], adt["model"], adt["rule"], adt["destinations"]) == ("hl7", None, "adt-events", ["ehr-adt"])
    assert (ct["kind"], ct["rule"], ct["destinations"]) == ("dicom", "images", ["pacs"])
    assert report["kind"] == "text" and report["model"].startswith("doctype-en@") and report["destinations"]


def test_test_reports_a_bad_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [\n")
    assert main(["routes", "test", str(rules), str(FIXTURES / "adt_a01.hl7")]) == 2
    assert capsys.readouterr().out.startswith(f"{rules}:2: invalid YAML")
