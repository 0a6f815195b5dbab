"""``medroute redrive`` against the real broker and a real forwarder: an EHR (python-hl7's MLLP server) refuses
every message, its letters pile up; the EHR is mended (answers AA); the letters are sent again and arrive once,
each patient's in order, and a second redrive sends nothing twice."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from medroute.config import AUDIT_EVENTS, FORWARD_DEADLETTER, KafkaSettings
from medroute.ports import free_port
from tests.integration.forward_peers import Hl7Receiver, hl7_decision, hl7_message, publish_sync, start_forwarder
from tests.integration.forward_peers import wait_until as wait
from tests.integration.topic_reading import read_topic_sync
from tools.operations.redrive import main as redrive

DESTINATIONS = """\
destinations:
  {name}:
    type: mllp
    host: 127.0.0.1
    port: {port}
    concurrency: 2
"""


def controls(received: list[tuple[float, str, str]]) -> list[str]:
    return [control for _, control, _ in received]


def test_dead_letters_sent_again_arrive_once_in_each_patients_order(
    kafka: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, port = f"ehr-redrive-{uuid.uuid4().hex[:8]}", free_port()
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(DESTINATIONS.format(name=name, port=port))
    refusing = Hl7Receiver(port, tmp_path / "refusing.log", ack="AE").start()
    forwarder = start_forwarder(kafka, tmp_path, destinations)
    sent = [hl7_message(7000 + n, f"R{n % 2}") for n in range(6)]
    try:
        publish_sync(kafka, [hl7_decision(raw, [name]) for raw in sent])

        def letters(records: list[dict]) -> list[dict]:
            return [r for r in records if r["destination"] == name]

        found = letters(read_topic_sync(kafka, FORWARD_DEADLETTER, until=lambda rs: len(letters(rs)) >= 6))
        assert {r["reason"] for r in found} == {"refused"} and len(found) == 6
        refusing.stop()

        assert redrive(["--destination", name, "--dry-run"]) == 0
        assert "6 would be sent again" in capsys.readouterr().out
        time.sleep(1.0)
        mended = Hl7Receiver(port, tmp_path / "mended.log").start()
        assert mended.received() == []  # the dry run sent nothing
        assert redrive(["--destination", name, "--by", "integration-engineer"]) == 0
        assert "6 sent again" in capsys.readouterr().out
        assert wait(lambda: len(mended.received()) >= 6, 60), forwarder.log()[-3000:]
        expected = [raw.split(b"|")[9].decode() for raw in sent]
        for patient in ("R0", "R1"):
            theirs = [c for c, raw in zip(expected, sent, strict=True) if f"|{patient}^".encode() in raw]
            assert [c for _, c, p in mended.received() if p == patient] == theirs

        # The same letters again: the ledger knows their redrive ids as delivered, nothing goes twice.
        assert redrive(["--destination", name]) == 0
        assert "no dead letters" in capsys.readouterr().out
        time.sleep(2.0)
        assert Counter(controls(mended.received())) == Counter(expected)

        def redrives(events: list[dict]) -> list[dict]:
            return [e for e in events if e["action"] == "redrive" and e["details"]["destination"] == name]

        [event] = redrives(read_topic_sync(kafka, AUDIT_EVENTS, until=lambda es: len(redrives(es)) >= 1))
        assert event["details"]["count"] == 6 and event["details"]["by"] == "integration-engineer"
        mended.stop()
    finally:
        forwarder.stop()
        refusing.stop()
