"""A micro-batch through the HL7 feed: one predict call, outcomes in order, bad records rejected."""

from __future__ import annotations

from dataclasses import replace

from formats.hl7.message import read_lenient
from medroute.config import AUDIT_EVENTS, HL7_DEADLETTER, ROUTING_DECISIONS
from medroute.logs import hash_id
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided, Rejected
from pipeline.publish import messages_for
from pipeline.rules import load_rules
from tests.unit.test_pipeline_support import FakeClassifier, fixture_record


def test_batch_is_classified_in_one_call_and_keeps_its_order() -> None:
    classifier = FakeClassifier()
    batch = [
        fixture_record("oru_r01_radiology.hl7", message_id="a"),
        fixture_record("adt_a01.hl7", message_id="b"),
        fixture_record("gb18030_chinese.hl7", "gb18030", message_id="c"),
        fixture_record("mdm_t02.hl7", message_id="d"),
    ]
    outcomes = Hl7Feed(classifier, load_rules()).process(batch)
    assert len(classifier.calls) == 1 and len(classifier.calls[0]) == 3
    assert [o.message_id for o in outcomes] == ["a", "b", "c", "d"]
    assert all(isinstance(o, Decided) for o in outcomes)
    assert [o.decision.label for o in outcomes] == ["radiology_report", None, "progress_note", "discharge_summary"]


def test_undecodable_record_is_rejected_and_the_rest_decided() -> None:
    good = fixture_record("oru_r01_radiology.hl7", message_id="good")
    bad = replace(fixture_record("gb18030_chinese.hl7", "gb18030", message_id="bad"), encoding="utf-8")
    outcomes = Hl7Feed(FakeClassifier(), load_rules()).process([bad, good])
    rejected, decided = outcomes
    assert isinstance(rejected, Rejected) and isinstance(decided, Decided)
    letter = rejected.dead_letter
    assert (letter.reason, letter.source, letter.message_id, letter.raw) == ("undecodable", "worker", "bad", bad.raw)
    assert letter.peer == bad.peer and letter.received_at == bad.received_at
    assert [m.topic for m in messages_for(rejected)] == [HL7_DEADLETTER, AUDIT_EVENTS]
    assert [m.topic for m in messages_for(decided)] == [ROUTING_DECISIONS] + [AUDIT_EVENTS] * 3
    decision, *events = messages_for(decided)
    assert {m.key for m in events} == {b"good"}  # audit events by message id, the decision by patient
    assert decision.key == hash_id(read_lenient(good.text()).patient_id).encode()


def test_read_rejects_what_is_not_a_record() -> None:
    record = fixture_record("adt_a01.hl7")
    feed = Hl7Feed(FakeClassifier(), load_rules())
    assert feed.read(record.to_json()) == record
    for payload in (b"", b"[]", b'{"message_id": "x"}', b'{"raw": 5}', None):
        outcome = feed.read(payload)
        assert isinstance(outcome, Rejected), payload
        assert outcome.dead_letter.reason == "unreadable_record"
        assert outcome.message_id is None
