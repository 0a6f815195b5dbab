"""The duplicate window is shared: a resent message (same MSH-3/4/10) is stored once whichever listener
process receives it, and after a listener restart, within the window."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from formats.hl7.mllp_client import MllpClient, parse_ack
from medroute.config import HL7_INBOUND, KafkaSettings
from tests.integration.conftest import start_listener
from tests.integration.test_mllp_bad_input import TopicCollector

ADT = (Path(__file__).resolve().parent.parent / "fixtures" / "hl7" / "adt_a01.hl7").read_bytes()


async def _send(port: int, raw: bytes) -> str:
    async with MllpClient("127.0.0.1", port) as client:
        return parse_ack(await client.send(raw, timeout=15)).code


def test_resend_to_another_process_and_after_restart_is_stored_once(kafka: KafkaSettings, tmp_path: Path) -> None:
    control_id = f"DUP{uuid.uuid4().hex[:12]}"
    raw = ADT.replace(b"|ADT000123|", f"|{control_id}|".encode(), 1)
    collector = TopicCollector(kafka, (HL7_INBOUND,))
    first = start_listener(kafka.bootstrap_servers, str(tmp_path))
    second = start_listener(kafka.bootstrap_servers, str(tmp_path))
    try:
        assert asyncio.run(_send(first.port, raw)) == "AA"
        time.sleep(0.5)  # the other process's follow lag (~100 ms)
        assert asyncio.run(_send(second.port, raw)) == "AA"

        first.process.stop()
        restarted = start_listener(kafka.bootstrap_servers, str(tmp_path), port=first.port)
        try:
            assert asyncio.run(_send(restarted.port, raw)) == "AA"  # known from the topic, read at start
        finally:
            restarted.process.stop()
        time.sleep(1.5)  # give a wrongly stored copy time to arrive
        copies = collector.wait_for(HL7_INBOUND, lambda r: r["control_id"] == control_id)
        assert len(copies) == 1
        assert "mllp.duplicate" in second.process.log()
    finally:
        second.process.stop()
        first.process.stop()
        collector.close()
