"""Routing as pure functions: rule matching, first match wins, and the decision a message gets."""

from __future__ import annotations

import pytest

from pipeline.classify import Classification
from pipeline.extract import ExtractedText, extract_text
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided
from pipeline.routing import RouteFacts, Rule, Rules, route
from pipeline.rules import load_rules, parse_rules
from tests.unit.test_pipeline_support import DOCTYPE_LABELS, FakeClassifier, fixture_record, record_from

DEFAULT = Rule("default", ("ehr-inbox",))


def facts(**overrides: object) -> RouteFacts:
    values: dict = {
        "kind": "hl7",
        "message_type": "ORU^R01^ORU_R01",
        "sending_application": "RIS",
        "sending_facility": "GENHOSP",
        "has_text": True,
        "label": "radiology_report",
        "confidence": 0.9,
        "below_threshold": False,
    }
    values.update(overrides)
    return RouteFacts(**values)


def test_first_matching_rule_wins() -> None:
    rules = Rules(
        (
            Rule("radiology", ("ris",), label=("radiology_report",)),
            Rule("oru", ("ehr-results",), message_type=("ORU^*",)),
            DEFAULT,
        )
    )
    assert route(facts(), rules).rule_name == "radiology"
    assert route(facts(label="progress_note"), rules).rule_name == "oru"
    assert route(facts(label="progress_note", message_type="MDM^T02"), rules).destinations == ["ehr-inbox"]


@pytest.mark.parametrize(
    ("patterns", "message_type", "matches"),
    [
        (("ORU^R01*",), "ORU^R01^ORU_R01", True),
        (("ORU^R01*",), "ORU^R01", True),
        (("ORU^R01*",), "ORU^R30^ORU_R30", False),
        (("ADT^A0?*",), "ADT^A08^ADT_A01", True),
        (("MDM^*", "ORU^*"), "MDM^T02^MDM_T02", True),
        (("MDM^*", "ORU^*"), "SIU^S12", False),
    ],
)
def test_message_type_globs(patterns: tuple[str, ...], message_type: str, matches: bool) -> None:
    rule = Rule("r", ("x",), message_type=patterns)
    assert rule.matches(facts(message_type=message_type)) is matches


@pytest.mark.parametrize(
    ("low", "high", "confidence", "matches"),
    [
        (0.5, None, 0.5, True),  # bounds are inclusive
        (0.5, None, 0.49, False),
        (None, 0.5, 0.5, True),
        (None, 0.5, 0.51, False),
        (0.2, 0.6, 0.4, True),
        (0.2, 0.6, 0.7, False),
        (0.0, None, None, False),  # a confidence condition never matches an unclassified message
    ],
)
def test_confidence_bounds(low: float | None, high: float | None, confidence: float | None, matches: bool) -> None:
    rule = Rule("r", ("x",), min_confidence=low, max_confidence=high)
    assert rule.matches(facts(confidence=confidence)) is matches


def test_label_lists_kind_text_threshold_and_sender_conditions() -> None:
    notes = Rule("notes", ("x",), label=("progress_note", "office_note"))
    assert notes.matches(facts(label="office_note"))
    assert not notes.matches(facts(label=None))
    assert Rule("d", ("x",), kind=("dicom",)).matches(facts(kind="dicom"))
    assert not Rule("d", ("x",), kind=("dicom",)).matches(facts())
    assert Rule("t", ("x",), has_text=False).matches(facts(has_text=False, label=None))
    assert not Rule("t", ("x",), has_text=False).matches(facts())
    assert Rule("b", ("x",), below_threshold=True).matches(facts(below_threshold=True))
    assert not Rule("b", ("x",), below_threshold=True).matches(facts(below_threshold=None))
    sender = Rule("s", ("x",), sending_application=("RIS*",), sending_facility=("GENHOSP",))
    assert sender.matches(facts(sending_application="RIS^1.2.3.4^ISO"))  # HD.1 namespace id
    assert sender.matches(facts(sending_application="RISPLUS"))
    assert not sender.matches(facts(sending_application="LAB"))
    assert not sender.matches(facts(sending_facility="OTHERHOSP"))


def test_default_rule_is_mandatory_and_last() -> None:
    with pytest.raises(ValueError, match="default rule"):
        Rules((Rule("radiology", ("ris",), label=("radiology_report",)),))
    assert DEFAULT.is_default
    assert route(facts(kind="dicom", label=None, confidence=None), Rules((DEFAULT,))).rule_name == "default"


def decided(record, classifier=None, rules=None) -> Decided:  # type: ignore[no-untyped-def]
    (outcome,) = Hl7Feed(classifier or FakeClassifier(), rules or load_rules()).process([record])
    assert isinstance(outcome, Decided)
    return outcome


def test_decide_for_a_report_names_model_label_confidence_rule_destinations() -> None:
    record = fixture_record("oru_r01_radiology.hl7", message_id="m-42")
    outcome = decided(record, rules=load_rules(labels=DOCTYPE_LABELS))
    assert outcome.classification == Classification("fake-doctype@0.0.1", "radiology_report", 0.92, False)
    decision = outcome.decision
    assert decision.message_id == "m-42"
    assert decision.kind == "hl7"
    assert decision.message_type == "ORU^R01^ORU_R01"
    assert (decision.model, decision.label, decision.confidence) == ("fake-doctype@0.0.1", "radiology_report", 0.92)
    assert (decision.rule, decision.destinations) == ("radiology-reports", ["ris"])
    assert decision.reason is None


def test_decide_without_text_rests_on_the_message_type() -> None:
    classifier = FakeClassifier()
    outcome = decided(fixture_record("adt_a01.hl7"), classifier)
    assert outcome.classification is None
    assert classifier.calls == []  # the model is not asked about an empty text
    decision = outcome.decision
    assert (decision.model, decision.label, decision.confidence) == (None, None, None)
    assert (decision.rule, decision.destinations) == ("adt-events", ["ehr-adt"])
    orders = decided(fixture_record("orm_o01.hl7")).decision
    assert (orders.rule, orders.destinations) == ("default", ["ehr-inbox"])


@pytest.mark.parametrize(
    ("text", "rule", "destinations"),
    [
        ("FINDINGS: clear. IMPRESSION: normal.", "radiology-reports", ["ris"]),
        ("Discharged home after pneumonia.", "discharge-summaries", ["ehr-documents"]),
        ("Patient seen today.", "clinical-notes", ["ehr-documents"]),  # progress_note at 0.55
        ("unsure what this is", "below-model-threshold", ["review-queue"]),
    ],
)
def test_shipped_rules(text: str, rule: str, destinations: list[str]) -> None:
    record = record_from(f"MSH|^~\\&|RIS|GENHOSP|||20240101||ORU^R01^ORU_R01|1|P|2.5.1\rOBX|1|TX|||{text}\r")
    decision = decided(record).decision
    assert (decision.rule, decision.destinations) == (rule, destinations)


def test_low_confidence_rule_from_a_bound() -> None:
    rules = parse_rules(
        "rules:\n  - {name: low, max_confidence: 0.6, destinations: [review-queue]}\n"
        "  - {name: default, destinations: [ehr-inbox]}\n"
    )
    record = record_from("MSH|^~\\&|A|B|||20240101||ORU^R01|1|P|2.5.1\rOBX|1|TX|||Patient seen today.\r")
    decision = decided(record, rules=rules).decision
    assert (decision.rule, decision.label, decision.confidence) == ("low", "progress_note", 0.55)


def test_extracted_text_is_what_the_model_reads() -> None:
    record = fixture_record("oru_r01_radiology.hl7")
    classifier = FakeClassifier()
    outcome = decided(record, classifier)
    assert classifier.calls == [[extract_text(record).text]]
    assert isinstance(outcome.content, ExtractedText) and outcome.content.sources == ["OBX-5", "NTE-3"]
