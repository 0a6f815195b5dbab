"""``medroute audit export``: the audit topic as JSON lines, or as RFC 5424 syslog lines (IHE ATNA style).

Reads ``audit.events`` from the beginning (or ``--since`` a time) up to its end when the export starts,
without a consumer group. Syslog lines: facility authpriv (10), severity notice (5), APP-NAME ``medroute``,
MSGID the action, the event's who/what/when as structured data and its details as the JSON message::

    <85>1 2026-03-01T08:30:15.123456+00:00 host medroute - route [medroute@32473 actor="worker" ...] {...}

32473 is the example enterprise number of RFC 5612; a site with its own IANA number changes ``SD_ID``.
Audit events carry no PHI (identifiers only as keyed hashes), so the export carries none either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TextIO

from medroute.config import AUDIT_EVENTS, KafkaSettings
from medroute.kafka.client import records_to_end
from medroute.records import AuditEvent

SD_ID = "medroute@32473"
PRI = 10 * 8 + 5  # authpriv.notice


def _sd_value(value: object) -> str:
    """An RFC 5424 PARAM-VALUE: '"', '\\' and ']' escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_line(event: AuditEvent, hostname: str) -> str:
    params = {"actor": event.actor, "event_id": event.event_id, "message_id": event.message_id or "-"}
    structured = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    message = json.dumps(event.details, ensure_ascii=False, sort_keys=True)
    action = "".join(c for c in event.action if 33 <= ord(c) <= 126)[:32] or "-"
    return f"<{PRI}>1 {event.at} {hostname} medroute - {action} {structured} {message}"


def json_line(event: AuditEvent) -> str:
    return json.dumps(event.to_dict(), ensure_ascii=False, sort_keys=True)


async def read_events(settings: KafkaSettings, since_ms: int | None = None) -> list[AuditEvent]:
    """Every audit event up to the topic's end at the start, in time order."""
    records = await records_to_end(settings, AUDIT_EVENTS, since_ms)
    return sorted((AuditEvent.from_json(r.value) for r in records if r.value), key=lambda e: e.at)


def lines(events: list[AuditEvent], form: str) -> Iterator[str]:
    hostname = socket.gethostname() or "-"
    for event in events:
        yield syslog_line(event, hostname) if form == "syslog" else json_line(event)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medroute audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["export"])
    parser.add_argument("--format", choices=["jsonl", "syslog"], default="jsonl")
    parser.add_argument("--since", help="ISO-8601 time (Kafka record timestamps); default: the beginning")
    parser.add_argument("--output", help="file to write (default: standard output)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    since_ms = int(datetime.fromisoformat(args.since).timestamp() * 1000) if args.since else None
    events = asyncio.run(read_events(KafkaSettings(), since_ms))
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for line in lines(events, args.format):
            out.write(line + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {len(events)} audit events", file=sys.stderr)
    return 0
