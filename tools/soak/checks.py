"""What the soak checks at the end, read from the topics themselves and from what the receivers recorded."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient

from medroute.config import (
    DICOM_DEADLETTER,
    DICOM_INBOUND,
    FORWARD_DEADLETTER,
    HL7_DEADLETTER,
    HL7_INBOUND,
    ROUTING_DECISIONS,
    KafkaSettings,
)
from medroute.kafka.client import connection_kwargs, reader_of, records_to_end
from pipeline.forward.forwarder import group_id

WORKER_GROUP = "soak-worker"
EHR, PACS = "ehr", "pacs"  # the soak's two destinations
Receipts = Mapping[str, Sequence[float]]  # item id (MSH-10 or SOP Instance UID) -> monotonic receipt times


@dataclass
class Traffic:
    """What the senders had acknowledged, what the receivers got, and when the forwarder was killed."""

    acked: list[str]
    stored: list[str]
    at_ehr: Receipts
    at_pacs: Receipts
    # When each new forwarder process was started after a kill (monotonic, taken before it was spawned): a
    # receipt before it came from an earlier process, even if the receiver recorded it after the kill.
    forwarder_restarts: list[float]


async def read_all(settings: KafkaSettings, topic: str) -> list[dict]:
    return [json.loads(r.value) for r in await records_to_end(settings, topic)]


async def lag(settings: KafkaSettings, group: str, topics: Sequence[str]) -> dict[str, int]:
    """Per partition of ``topics`` the group consumes: end offset minus the group's committed offset."""
    admin = AIOKafkaAdminClient(**connection_kwargs(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    reader = await reader_of(settings, topics[0])
    try:
        partitions = [tp for tp in committed if tp.topic in topics]
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
    return {f"{group}/{tp.topic}:{tp.partition}": ends[tp] - committed[tp].offset for tp in partitions}


async def all_lags(settings: KafkaSettings) -> dict[str, int]:
    """Partitions with lag: the worker pool on the inbound topics, each forwarder on the decisions."""
    lags = await lag(settings, WORKER_GROUP, (HL7_INBOUND, DICOM_INBOUND))
    for destination in (EHR, PACS):
        lags |= await lag(settings, group_id(destination), (ROUTING_DECISIONS,))
    return {p: n for p, n in lags.items() if n > 0}


def deliveries(expected: Counter, receipts: Receipts, forwarder_restarts: Sequence[float]) -> dict:
    """Items missing at a destination and items received more often than they were decided.

    ``expected`` counts, per item id, the distinct inbound records stored for it (an item the listener stored
    twice, after a lost ACK, is decided and delivered twice: that is the listener's resend window, not a double
    delivery). A double delivery whose receipts came from two forwarder processes (a restart between them) is
    the forwarder's documented window: the receiver had the item and the killed process had not stored its
    ledger entry. Two receipts from one process are not explained by it."""
    missing = sorted(key for key, n in expected.items() if len(receipts.get(key, ())) < n)
    window, unexplained = [], []
    for key, times in receipts.items():
        if len(times) > expected.get(key, 0) and key in expected:
            restarted_between = any(min(times) < restart <= max(times) for restart in forwarder_restarts)
            (window if restarted_between else unexplained).append(key)
    return {
        "expected": sum(expected.values()),
        "received": sum(len(t) for t in receipts.values()),
        "missing": len(missing),
        "missing_examples": missing[:5],
        "double_across_forwarder_restart": len(window),
        "double_unexplained": len(unexplained),
        # When each was received (monotonic s), to set beside ``forwarder_restarts_at``.
        "double_unexplained_examples": {key: [round(t, 3) for t in receipts[key]] for key in unexplained[:5]},
        "never_sent_by_soak": len([k for k in receipts if k not in expected]),
    }


async def outcome(settings: KafkaSettings, traffic: Traffic) -> dict:
    """One pass over the topics and the receivers' records."""
    hl7 = await read_all(settings, HL7_INBOUND)
    dicom = await read_all(settings, DICOM_INBOUND)
    inbound = {r["message_id"]: r for r in hl7 + dicom}
    decisions = Counter(d["message_id"] for d in await read_all(settings, ROUTING_DECISIONS))
    # A record the worker could not read is dead-lettered under its id: an outcome, not a loss.
    letters = await read_all(settings, HL7_DEADLETTER) + await read_all(settings, DICOM_DEADLETTER)
    dead = {d["message_id"] for d in letters if d.get("source") == "worker"}
    undecided = [m for m in inbound if m not in decisions and m not in dead]
    given_up = await read_all(settings, FORWARD_DEADLETTER)
    # Every stored item is due at its destination, decided or not: an undecided one is missing there too.
    to_ehr = Counter(r["control_id"] for r in hl7 if r["message_id"] not in dead)
    to_pacs = Counter(r["sop_instance_uid"] for r in dicom if r["message_id"] not in dead)
    on_hl7 = {r.get("control_id") for r in hl7}
    on_dicom = {r.get("sop_instance_uid") for r in dicom}
    return {
        "acknowledged_hl7": len(traffic.acked),
        "acknowledged_images": len(traffic.stored),
        "acknowledged_missing": [c for c in traffic.acked if c not in on_hl7]
        + [u for u in traffic.stored if u not in on_dicom],
        "inbound_records": len(inbound),
        "undecided": len(undecided),
        "undecided_examples": undecided[:5],
        "dead_lettered_by_worker": len(dead),
        "double_decisions": sum(1 for n in decisions.values() if n > 1),
        "forward_dead_letters": len(given_up),
        "forward_dead_letter_reasons": dict(Counter(f"{g['destination']}:{g['reason']}" for g in given_up)),
        "forwarder_restarts_at": [round(t, 3) for t in traffic.forwarder_restarts],
        "at_ehr": deliveries(to_ehr, traffic.at_ehr, traffic.forwarder_restarts),
        "at_pacs": deliveries(to_pacs, traffic.at_pacs, traffic.forwarder_restarts),
        "partitions_with_lag": await all_lags(settings),
    }


def settled(summary: dict) -> bool:
    return not (
        summary["undecided"] or summary["partitions_with_lag"]
        or summary["at_ehr"]["missing"] or summary["at_pacs"]["missing"]
    )  # fmt: skip


async def check(settings: KafkaSettings, traffic_now: Callable[[], Traffic], drain: float) -> dict:
    """Passes over the topics until everything is decided, delivered and committed, or ``drain`` seconds
    passed; ``traffic_now`` gives the receivers' records as they are at each pass."""
    deadline = time.monotonic() + drain
    started = time.monotonic()
    while True:
        summary = await outcome(settings, traffic_now())
        if settled(summary) or time.monotonic() > deadline:
            summary["drain_s"] = round(time.monotonic() - started)
            return summary
        await asyncio.sleep(5)


def passed(summary: dict, fail_on_window: bool) -> bool:
    """The soak's verdict. Doubles across a forwarder restart fail it only with ``fail_on_window``."""
    doubles = sum(summary[d]["double_unexplained"] for d in ("at_ehr", "at_pacs"))
    if fail_on_window:
        doubles += sum(summary[d]["double_across_forwarder_restart"] for d in ("at_ehr", "at_pacs"))
    return not (
        summary["acknowledged_missing"] or summary["undecided"] or summary["partitions_with_lag"]
        or summary["at_ehr"]["missing"] or summary["at_pacs"]["missing"] or summary["forward_dead_letters"]
        or doubles
    )  # fmt: skip
