"""``medroute audit export`` reads the real audit topic: every event as a JSON line or an RFC 5424 line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from listeners.sink import KafkaSink
from medroute.config import AUDIT_EVENTS, KafkaSettings
from medroute.records import AuditEvent
from tests.unit.test_at_rest_tools import RFC5424
from tools.operations import audit_export


def test_audit_export_as_json_lines_and_syslog(kafka: KafkaSettings, tmp_path: Path) -> None:
    events = [AuditEvent(action="view", actor="web", message_id=f"m{n}", details={"user": "u"}) for n in range(3)]

    async def publish() -> None:
        sink = KafkaSink(kafka)
        await sink.start()
        try:
            for event in events:
                await sink.put(AUDIT_EVENTS, event.message_id.encode(), event.to_json())
        finally:
            await sink.stop()

    asyncio.run(publish())
    jsonl, syslog = tmp_path / "audit.jsonl", tmp_path / "audit.log"
    assert audit_export.main(["export", "--output", str(jsonl)]) == 0
    assert audit_export.main(["export", "--format", "syslog", "--output", str(syslog)]) == 0
    exported = {json.loads(line)["event_id"] for line in jsonl.read_text().splitlines()}
    assert {e.event_id for e in events} <= exported
    lines = syslog.read_text().splitlines()
    assert len(lines) == len(exported) and all(RFC5424.match(line) for line in lines)
    assert all(any(e.event_id in line for line in lines) for e in events)
