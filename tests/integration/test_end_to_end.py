"""The slice end to end on the real broker: MLLP in, stored once, one decision and its audit out.

Half the traffic goes through python-hl7's ``mllp_send`` (a client this project did not write),
half through the project's own async client on several connections at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path

from formats.hl7.mllp_client import MllpClient
from medroute.config import AUDIT_EVENTS, HL7_INBOUND, ROUTING_DECISIONS, KafkaSettings
from medroute.logs import hash_id
from shell.samples import SampleMessage, sample_messages
from tests.integration.conftest import RunningListener
from tests.integration.mllp_peers import mllp_send_file, parse_ack
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic_sync

TOTAL = 240


async def _send_with_own_client(messages: list[SampleMessage], port: int, connections: int) -> list[tuple[str, str]]:
    acks: dict[str, tuple[str, str]] = {}

    async def sender(share: list[SampleMessage]) -> None:
        client = MllpClient("127.0.0.1", port)
        await client.connect()
        try:
            for message in share:
                acks[message.control_id] = parse_ack(await client.send(message.raw, timeout=30))
        finally:
            await client.close()

    await asyncio.gather(*(sender(messages[i::connections]) for i in range(connections)))
    return [acks[m.control_id] for m in messages]


def test_every_acknowledged_message_is_stored_once_and_decided_once(
    kafka: KafkaSettings, mllp_listener: RunningListener, worker: ChildProcess, tmp_path: Path
) -> None:
    messages = sample_messages(TOTAL, seed=2002, prefix="E2E")
    half = TOTAL // 2
    acks = mllp_send_file([m.raw for m in messages[:half]], mllp_listener.port, tmp_path)
    acks += asyncio.run(_send_with_own_client(messages[half:], mllp_listener.port, connections=6))

    assert len(acks) == TOTAL
    assert [code for code, _ in acks] == ["AA"] * TOTAL
    assert [control_id for _, control_id in acks] == [m.control_id for m in messages]

    sent = {m.control_id: m for m in messages}
    stored = [
        r
        for r in read_topic_sync(
            kafka, HL7_INBOUND, until=lambda rs: sum(r["control_id"] in sent for r in rs) >= TOTAL
        )
        if r["control_id"] in sent
    ]
    assert Counter(r["control_id"] for r in stored) == Counter({cid: 1 for cid in sent})
    # Keyed by patient: one patient's messages share a partition, in the order they were sent.
    for record in stored:
        assert record["_key"] == sent[record["control_id"]].patient_id
    by_patient = defaultdict(list)
    for record in sorted(stored, key=lambda r: (r["_partition"], r["_offset"])):
        by_patient[record["_key"]].append(record)
    for records in by_patient.values():
        assert len({r["_partition"] for r in records}) == 1

    message_ids = {r["message_id"]: r for r in stored}
    decisions = [
        d
        for d in read_topic_sync(
            kafka,
            ROUTING_DECISIONS,
            until=lambda ds: sum(d["message_id"] in message_ids for d in ds) >= TOTAL,
            timeout=180,
        )
        if d["message_id"] in message_ids
    ]
    assert Counter(d["message_id"] for d in decisions) == Counter({mid: 1 for mid in message_ids})
    for decision in decisions:
        record = message_ids[decision["message_id"]]
        # Keyed by the patient (hashed), so a forwarder delivers one patient's items in order.
        assert decision["_key"] == decision["order_key"] == hash_id(sent[record["control_id"]].patient_id)
        assert decision["destinations"], decision
        assert decision["rule"]
        if sent[record["control_id"]].has_text:
            assert decision["model"].startswith("doctype-en@")
            assert decision["label"] and 0.0 <= decision["confidence"] <= 1.0
        else:
            assert decision["model"] is None and decision["label"] is None

    audit = read_topic_sync(
        kafka,
        AUDIT_EVENTS,
        until=lambda es: sum(e.get("action") == "route" and e.get("message_id") in message_ids for e in es) >= TOTAL,
        timeout=60,
    )
    actions = defaultdict(set)
    for event in audit:
        if event.get("message_id") in message_ids:
            actions[event["message_id"]].add(event["action"])
    for message_id, record in message_ids.items():
        expected = {"receive", "route"} | ({"classify"} if sent[record["control_id"]].has_text else set())
        assert expected <= actions[message_id], (record["control_id"], actions[message_id])
    # No PHI in audit: no patient identifier or name appears anywhere in the events.
    audit_text = str([e for e in audit if e.get("message_id") in message_ids])
    assert "MRN0" not in audit_text and "DOE^" not in audit_text
