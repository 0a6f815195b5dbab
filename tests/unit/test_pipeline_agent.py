"""The Faust agent through ``agent.test_context()``: one decision per record, none for a duplicate.

No broker: the app points at an unused address and publishes through a recording ``Publisher``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import faust
import pytest

from medroute.config import AUDIT_EVENTS, HL7_DEADLETTER, ROUTING_DECISIONS, KafkaSettings
from medroute.records import AuditEvent, DeadLetter, Hl7Record, RoutingDecision
from pipeline.agents import install
from pipeline.app import create_app
from pipeline.hl7_feed import Hl7Feed
from pipeline.ledger import TABLE_NAME
from pipeline.publish import Outbound
from pipeline.rules import load_rules
from pipeline.settings import WorkerSettings
from tests.unit.test_pipeline_support import FakeClassifier, fixture_record


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def publish(self, messages: Sequence[Outbound]) -> None:
        self.sent.extend(messages)

    def on(self, topic: str) -> list[dict]:
        return [json.loads(m.value) | {"_key": m.key.decode()} for m in self.sent if m.topic == topic]


@pytest.fixture
def harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[faust.App, faust.types.AgentT, RecordingPublisher, FakeClassifier]:
    monkeypatch.setenv("MEDROUTE_HOME", str(tmp_path))
    app = create_app(KafkaSettings(bootstrap="127.0.0.1:1"), WorkerSettings(), store="memory://")
    classifier = FakeClassifier()
    publisher = RecordingPublisher()
    agent = install(app, Hl7Feed(classifier, load_rules()), batch_size=8, batch_seconds=0.01, publisher=publisher)
    return app, agent, publisher, classifier


async def settle(publisher: RecordingPublisher, count: int, topic: str = ROUTING_DECISIONS) -> None:
    for _ in range(200):
        if len(publisher.on(topic)) >= count:
            return
        await asyncio.sleep(0.01)


def records() -> list[Hl7Record]:
    return [
        fixture_record("oru_r01_radiology.hl7", message_id="m-oru"),
        fixture_record("mdm_t02.hl7", message_id="m-mdm"),
        fixture_record("adt_a01.hl7", message_id="m-adt"),
    ]


async def test_one_decision_per_record_and_none_for_a_duplicate(harness) -> None:
    app, agent, publisher, classifier = harness
    oru, mdm, adt = records()
    async with agent.test_context() as context:
        for record in (oru, mdm, adt):
            await context.put(record.to_json(), key=b"MRN-A", partition=1)
        await settle(publisher, 3)
        await context.put(oru.to_json(), key=b"MRN-A", partition=1)  # redelivered after a "crash"
        await context.put(mdm.to_json(), key=b"MRN-A", partition=1)
        await asyncio.sleep(0.2)

    decisions = publisher.on(ROUTING_DECISIONS)
    assert sorted(d["message_id"] for d in decisions) == ["m-adt", "m-mdm", "m-oru"]
    by_id = {d["message_id"]: RoutingDecision.from_dict({k: v for k, v in d.items() if k != "_key"}) for d in decisions}
    assert all(d["_key"] == d["order_key"] and d["source_offset"].startswith("hl7.inbound:") for d in decisions)
    assert (by_id["m-oru"].label, by_id["m-oru"].rule, by_id["m-oru"].destinations) == (
        "radiology_report",
        "radiology-reports",
        ["ris"],
    )
    assert (by_id["m-mdm"].label, by_id["m-mdm"].destinations) == ("discharge_summary", ["ehr-documents"])
    assert (by_id["m-adt"].model, by_id["m-adt"].rule, by_id["m-adt"].destinations) == (None, "adt-events", ["ehr-adt"])
    assert by_id["m-oru"].model == "fake-doctype@0.0.1"

    # Only the two texts were classified (the ADT has none), and the duplicates were not again.
    assert sorted(len(text) > 0 for call in classifier.calls for text in call) == [True, True]

    table = app.tables[TABLE_NAME]
    assert {key: value["outcome"] for key, value in table.items()} == {
        "m-oru": "decision",
        "m-mdm": "decision",
        "m-adt": "decision",
    }

    audit = [AuditEvent.from_dict({k: v for k, v in e.items() if k != "_key"}) for e in publisher.on(AUDIT_EVENTS)]
    actions = {(e.message_id, e.action) for e in audit}
    assert actions == {
        ("m-oru", "receive"),
        ("m-oru", "classify"),
        ("m-oru", "route"),
        ("m-mdm", "receive"),
        ("m-mdm", "classify"),
        ("m-mdm", "route"),
        ("m-adt", "receive"),
        ("m-adt", "route"),
    }
    classify_oru = next(e for e in audit if e.message_id == "m-oru" and e.action == "classify")
    assert classify_oru.details["model"] == "fake-doctype@0.0.1"
    assert classify_oru.details["label"] == "radiology_report" and classify_oru.details["confidence"] == 0.92
    receive_oru = next(e for e in audit if e.message_id == "m-oru" and e.action == "receive")
    assert receive_oru.details["received_at"] == oru.received_at and receive_oru.details["peer"] == oru.peer
    route_oru = next(e for e in audit if e.message_id == "m-oru" and e.action == "route")
    assert route_oru.details["rule"] == "radiology-reports" and route_oru.details["destinations"] == ["ris"]
    # No PHI: neither names, identifiers, the control id nor report text appear in clear.
    text = json.dumps([m.value.decode() for m in publisher.sent if m.topic == AUDIT_EVENTS])
    for secret in ("SAMPLE", "MRN200871", "RAD55501", "lungs are clear", "EXAMPLE", "TESTPATIENT"):
        assert secret not in text


async def test_duplicates_within_one_batch_give_one_decision(harness) -> None:
    _, agent, publisher, _ = harness
    oru = records()[0]
    async with agent.test_context() as context:
        await context.put(oru.to_json(), key=b"MRN-A")
        await context.put(oru.to_json(), key=b"MRN-A")
        await settle(publisher, 1)
        await asyncio.sleep(0.1)
    assert [d["message_id"] for d in publisher.on(ROUTING_DECISIONS)] == ["m-oru"]


async def test_table_writes_go_to_the_partition_of_their_own_event(harness) -> None:
    app, agent, publisher, _ = harness
    oru, mdm, adt = records()
    async with agent.test_context() as context:
        await context.put(oru.to_json(), key=b"MRN-A", partition=3)
        await context.put(mdm.to_json(), key=b"MRN-B", partition=0)
        await context.put(adt.to_json(), key=b"MRN-C", partition=2)
        await settle(publisher, 3)
    table = app.tables[TABLE_NAME]
    changelog = table.changelog_topic.get_topic_name()
    written = {json.loads(m.key): m.partition for m in publisher.sent if m.topic == changelog}
    assert written == {"m-oru": 3, "m-mdm": 0, "m-adt": 2}
    # Each entry is published after the decision it records.
    sent = list(enumerate(publisher.sent))
    decided_at = {json.loads(m.value)["message_id"]: n for n, m in sent if m.topic == ROUTING_DECISIONS}
    marked_at = {json.loads(m.key): n for n, m in sent if m.topic == changelog}
    assert all(decided_at[message_id] < marked_at[message_id] for message_id in written)
    # The records are what Faust's own recovery decodes into the same entries.
    schema = table.changelog_topic.schema
    for message in (m for m in publisher.sent if m.topic == changelog):
        key = app.serializers.loads_key(schema.key_type, message.key, serializer=schema.key_serializer)
        value = app.serializers.loads_value(schema.value_type, message.value, serializer=schema.value_serializer)
        assert table[key] == value and value["outcome"] == "decision"


async def test_unreadable_record_goes_to_the_dead_letter_topic(harness) -> None:
    _, agent, publisher, _ = harness
    async with agent.test_context() as context:
        await context.put(b"\x00not json", key=b"MRN-A")
        await settle(publisher, 1, HL7_DEADLETTER)
    (letter,) = [
        DeadLetter.from_dict({k: v for k, v in d.items() if k != "_key"}) for d in publisher.on(HL7_DEADLETTER)
    ]
    assert letter.source == "worker" and letter.reason == "unreadable_record"
    assert letter.raw == b"\x00not json"
    assert publisher.on(ROUTING_DECISIONS) == []
    assert [e["action"] for e in publisher.on(AUDIT_EVENTS)] == ["reject"]


def test_ledger_entries_survive_the_changelog_round_trip(harness) -> None:
    """What recovery after a restart does with each changelog record: decode key and value."""
    app, _, _, _ = harness
    schema = app.tables[TABLE_NAME].changelog_topic.schema
    entry = {"outcome": "decision", "rule": "radiology-reports", "at": "2024-03-02T10:15:00+00:00"}
    key = app.serializers.dumps_key(schema.key_type, "m-1", serializer=schema.key_serializer)
    value = app.serializers.dumps_value(schema.value_type, entry, serializer=schema.value_serializer)
    assert app.serializers.loads_key(schema.key_type, key, serializer=schema.key_serializer) == "m-1"
    assert app.serializers.loads_value(schema.value_type, value, serializer=schema.value_serializer) == entry
