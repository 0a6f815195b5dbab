"""Routing rule files: the shipped defaults load, and every kind of mistake names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.rules import DEFAULT_ROUTES, RulesError, load_rules, parse_rules, routes_path
from tests.unit.test_pipeline_support import DOCTYPE_LABELS

CXR_LABELS = ["normal", "pneumonia"]

GOOD = """\
rules:
  - name: radiology
    label: radiology_report
    destinations: [ris]
  - name: default
    destinations: [ehr-inbox]
"""


def error_of(text: str, labels: list[str] | None = None) -> str:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "routes.yaml", labels)
    return str(caught.value)


def test_shipped_defaults_load_and_name_only_model_labels() -> None:
    rules = load_rules(DEFAULT_ROUTES, labels={"hl7": DOCTYPE_LABELS, "dicom": CXR_LABELS})
    assert rules.rules[-1].is_default
    assert [r.name for r in rules.rules][-1] == "default"
    named = {label for rule in rules.rules if rule.kind != ("dicom",) for label in rule.label or ()}
    assert named <= set(DOCTYPE_LABELS)
    image_labels = {label for rule in rules.rules if rule.kind == ("dicom",) for label in rule.label or ()}
    assert image_labels == set(CXR_LABELS)
    assert rules.source == str(DEFAULT_ROUTES)
    # The worker without an image model (MEDROUTE_IMAGE_MODEL=none) starts with the same file.
    assert load_rules(DEFAULT_ROUTES, labels={"hl7": DOCTYPE_LABELS}).rules == rules.rules
    assert load_rules(DEFAULT_ROUTES, labels=DOCTYPE_LABELS).rules == rules.rules


def test_every_condition_is_read() -> None:
    rules = parse_rules("""\
rules:
  - name: everything
    kind: [hl7]
    message_type: "ORU^R01*"
    label: [radiology_report, letter]
    min_confidence: 0
    max_confidence: 0.75
    below_threshold: false
    has_text: true
    sending_application: RIS
    sending_facility: [GENHOSP, "CLINIC*"]
    destinations: [ris, archive]
  - name: default
    destinations: [ehr-inbox]
""")
    rule = rules.rules[0]
    assert rule.kind == ("hl7",) and rule.message_type == ("ORU^R01*",)
    assert rule.label == ("radiology_report", "letter")
    assert (rule.min_confidence, rule.max_confidence) == (0.0, 0.75)
    assert (rule.below_threshold, rule.has_text) == (False, True)
    assert rule.sending_application == ("RIS",) and rule.sending_facility == ("GENHOSP", "CLINIC*")
    assert rule.destinations == ("ris", "archive")
    assert rule.line == 2


def test_path_comes_from_medroute_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("MEDROUTE_ROUTES", str(path))
    assert routes_path() == path
    assert [r.name for r in load_rules().rules] == ["radiology", "default"]
    monkeypatch.delenv("MEDROUTE_ROUTES")
    assert routes_path() == DEFAULT_ROUTES


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        # YAML syntax error: an unclosed flow list.
        ("rules:\n  - name: a\n    destinations: [ris\n  - name: default\n", 4, "invalid YAML"),
        # An unknown key (a typo of 'label').
        (
            "rules:\n  - name: a\n    lable: letter\n    destinations: [ris]\n  - name: d\n    destinations: [x]\n",
            3,
            "unknown key 'lable'",
        ),
        # Wrong type: a confidence given as text.
        (
            "rules:\n  - name: a\n    min_confidence: high\n    destinations: [ris]\n"
            "  - name: d\n    destinations: [x]\n",
            3,
            "number from 0 to 1",
        ),
        # Out of range confidence.
        (
            "rules:\n  - name: a\n    max_confidence: 1.5\n    destinations: [ris]\n"
            "  - name: d\n    destinations: [x]\n",
            3,
            "number from 0 to 1",
        ),
        # Wrong type: a boolean condition given a number.
        (
            "rules:\n  - name: a\n    has_text: 3\n    destinations: [ris]\n  - name: d\n    destinations: [x]\n",
            3,
            "true or false",
        ),
        # No default rule at the end.
        ("rules:\n  - name: a\n    label: letter\n    destinations: [ris]\n", 2, "default rule"),
        # A default rule before the end hides the rules after it.
        (
            "rules:\n  - name: catch-all\n    destinations: [x]\n  - name: b\n    label: letter\n"
            "    destinations: [ris]\n",
            2,
            "could never fire",
        ),
        # A rule without destinations.
        ("rules:\n  - name: a\n    label: letter\n  - name: d\n    destinations: [x]\n", 2, "no 'destinations'"),
        # Empty destinations.
        (
            "rules:\n  - name: a\n    label: letter\n    destinations: []\n  - name: d\n    destinations: [x]\n",
            4,
            "non-empty list",
        ),
        # Destinations as a plain text instead of a list.
        ("rules:\n  - name: a\n    destinations: ris\n", 3, "non-empty list"),
        # Unknown kind.
        (
            "rules:\n  - name: a\n    kind: fhir\n    destinations: [x]\n  - name: d\n    destinations: [x]\n",
            3,
            "unknown kind 'fhir'",
        ),
        # Rule without a name, and a duplicate name.
        ("rules:\n  - label: letter\n    destinations: [x]\n  - name: d\n    destinations: [x]\n", 2, "'name'"),
        (
            "rules:\n  - name: d\n    label: letter\n    destinations: [x]\n  - name: d\n    destinations: [x]\n",
            5,
            "already used on line 2",
        ),
        # A key given twice in one rule.
        (
            "rules:\n  - name: a\n    label: letter\n    label: radiology_report\n    destinations: [x]\n"
            "  - name: d\n    destinations: [x]\n",
            4,
            "appears twice",
        ),
        # min above max.
        (
            "rules:\n  - name: a\n    min_confidence: 0.8\n    max_confidence: 0.2\n    destinations: [x]\n"
            "  - name: d\n    destinations: [x]\n",
            3,
            "could never match",
        ),
        # Structure: no rules list, unknown top-level key, a rule that is not a mapping.
        ("routes:\n  - name: d\n    destinations: [x]\n", 1, "unknown top-level key 'routes'"),
        ("rules: []\n", 1, "non-empty list"),
        ("rules:\n  - just a string\n", 2, "mapping"),
        ("", 1, "empty"),
    ],
)
def test_invalid_files_name_the_line(text: str, line: int, words: str) -> None:
    message = error_of(text)
    assert message.startswith(f"routes.yaml:{line}: "), message
    assert words in message


def test_labels_are_checked_against_the_model() -> None:
    text = (
        "rules:\n  - name: a\n    label: [letter, radiology]\n    destinations: [x]\n"
        "  - name: d\n    destinations: [x]\n"
    )
    message = error_of(text, DOCTYPE_LABELS)
    assert message.startswith("routes.yaml:3: ")
    assert "'radiology'" in message and "radiology_report" in message
    assert parse_rules(text, "routes.yaml").rules[0].label == ("letter", "radiology")  # no model: not checked


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"missing\.yaml: cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_dicom_conditions_are_read_and_image_labels_checked_by_kind() -> None:
    text = """\
rules:
  - name: chest
    kind: dicom
    modality: [CR, dx]
    body_part: "CHEST*"
    label: pneumonia
    destinations: [radiologist-priority, pacs]
  - name: reports
    kind: hl7
    label: letter
    destinations: [ehr]
  - name: default
    destinations: [pacs]
"""
    rules = parse_rules(text, "routes.yaml", {"hl7": DOCTYPE_LABELS, "dicom": CXR_LABELS})
    assert (rules.rules[0].modality, rules.rules[0].body_part) == (("CR", "dx"), ("CHEST*",))
    # An image label on an HL7 rule, and a text label on a DICOM rule, are mistakes.
    message = error_of(text.replace("label: letter", "label: pneumonia"), {"hl7": DOCTYPE_LABELS, "dicom": CXR_LABELS})
    assert message.startswith("routes.yaml:10: ") and "'pneumonia'" in message and "letter" in message
    message = error_of(text.replace("label: pneumonia", "label: letter"), {"hl7": DOCTYPE_LABELS, "dicom": CXR_LABELS})
    assert message.startswith("routes.yaml:6: ") and "normal, pneumonia" in message
    # Without an image model the DICOM rules' labels are not checked (they cannot fire).
    assert parse_rules(text, "routes.yaml", {"hl7": DOCTYPE_LABELS}).rules[0].label == ("pneumonia",)
