"""Forwarder status: each forwarder's snapshot on ``forward.status`` (compacted, keyed by destination), and
``medroute forward status``: the snapshots with each destination group's backlog on ``routing.decisions``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from medroute.config import FORWARD_STATUS, ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import connection_kwargs, consumer, records_to_end, topic_partitions
from pipeline.forward.forwarder import Forwarder, group_id

STALE_SECONDS = 30.0


def snapshot(forwarder: Forwarder, stopped: bool = False) -> dict[str, Any]:
    return {
        "destination": forwarder.name,
        "stopped": stopped,
        "type": forwarder.destination.type,
        "breaker": forwarder.breaker.state,
        **asdict(forwarder.stats),
        "at": time.time(),
    }


async def publish(producer: AIOKafkaProducer, forwarders: list[Forwarder], stopped: bool = False) -> None:
    for forwarder in forwarders:
        value = json.dumps(snapshot(forwarder, stopped)).encode()
        await producer.send(FORWARD_STATUS, value, key=forwarder.name.encode())


async def read_snapshots(kafka: KafkaSettings) -> dict[str, dict[str, Any]]:
    """The latest snapshot of each destination."""
    records = await records_to_end(kafka, FORWARD_STATUS)
    return {r.key.decode(): json.loads(r.value) for r in records if r.key and r.value}  # the last one per key wins


async def pending_counts(kafka: KafkaSettings, names: list[str]) -> dict[str, int | None]:
    """Per destination, the decisions its group has not passed yet (None: the group never committed)."""
    partitions = await topic_partitions(kafka, ROUTING_DECISIONS)
    admin = AIOKafkaAdminClient(**connection_kwargs(kafka))
    await admin.start()
    try:
        committed = {name: await admin.list_consumer_group_offsets(group_id(name)) for name in names}
    finally:
        await admin.close()
    reader = consumer(kafka)
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
    counts: dict[str, int | None] = {}
    for name, offsets in committed.items():
        counts[name] = None if not offsets else sum(
            end - (offsets[tp].offset if tp in offsets and offsets[tp].offset >= 0 else 0) for tp, end in ends.items()
        )  # fmt: skip
    return counts


def status_row(name: str, snap: dict[str, Any], pending: int | None, now: float | None = None) -> dict[str, Any]:
    """One destination as ``medroute forward status`` and the web console show it. ``state``: running,
    stopped (its forwarder said so), silent (no snapshot for ``STALE_SECONDS``: killed, or cut off from Kafka)
    or unknown (never reported)."""
    age = (now or time.time()) - snap["at"] if snap else None
    if age is None:
        state = "unknown"
    elif snap.get("stopped"):
        state = "stopped"
    else:
        state = "running" if age < STALE_SECONDS else "silent"
    return {
        "destination": name,
        "type": snap.get("type", "-"),
        "state": state,
        "delivered": snap.get("delivered", 0),
        "pending": pending,
        "retrying": snap.get("retrying", 0),
        "dead_lettered": snap.get("dead_lettered", 0),
        "breaker": snap.get("breaker", "-"),
        "last_error": snap.get("last_error"),
        "last_delivered_at": snap.get("last_delivered_at"),
        "reported_at": snap.get("at"),
    }


async def status_rows(
    kafka: KafkaSettings, names: list[str], snapshots: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The file's destinations (``names``), or every one that reported; ``snapshots``: as already followed
    (the web server's), else read from ``forward.status`` now."""
    if snapshots is None:
        snapshots = await read_snapshots(kafka)
    listed = sorted(names or snapshots)
    pending = await pending_counts(kafka, listed)
    return [status_row(name, snapshots.get(name, {}), pending[name]) for name in listed]


def format_rows(rows: list[dict[str, Any]]) -> str:
    header = f"{'destination':<22} {'type':<7} {'state':<8} {'delivered':>9} {'pending':>8} {'retrying':>8} " \
             f"{'dead':>6} {'breaker':<9} last error"  # fmt: skip
    lines = [header]
    for row in rows:
        pending_text = "-" if row["pending"] is None else str(row["pending"])
        lines.append(
            f"{row['destination']:<22} {row['type']:<7} {row['state']:<8} "
            f"{row['delivered']:>9} {pending_text:>8} {row['retrying']:>8} {row['dead_lettered']:>6} "
            f"{row['breaker']:<9} {row['last_error'] or '-'}"
        )
    return "\n".join(lines)
