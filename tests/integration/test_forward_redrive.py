"""Dead letters sent again, against the real broker and a real forwarder: an EHR (python-hl7's MLLP server) refuses
every message and its letters pile up; the EHR is mended (answers AA); the letters are sent again, by
``medroute redrive`` or from the web UI's API, and arrive once, each patient's in order; a second redrive sends
nothing twice."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medroute.config import AUDIT_EVENTS, FORWARD_DEADLETTER, KafkaSettings
from medroute.ports import free_port
from pipeline.settings import WorkerSettings
from pipeline.worker import load_startup
from tests.integration.forward_peers import Hl7Receiver, hl7_decision, hl7_message, publish_sync, start_forwarder
from tests.integration.forward_peers import wait_until as wait
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic_sync
from tests.web.conftest import web_settings
from tools.operations.redrive import main as redrive
from web.app import build_services, create_app
from web.users import Accounts, Role, add_token

DESTINATIONS = """\
destinations:
  {name}:
    type: mllp
    host: 127.0.0.1
    port: {port}
    concurrency: 2
"""


@dataclass
class Refused:
    name: str
    port: int
    sent: list[bytes]
    forwarder: ChildProcess

    def mended(self, log: Path) -> Hl7Receiver:
        return Hl7Receiver(self.port, log).start()

    def assert_each_once_in_each_patients_order(self, receiver: Hl7Receiver) -> None:
        assert wait(lambda: len(receiver.received()) >= len(self.sent), 60), self.forwarder.log()[-3000:]
        time.sleep(1.0)  # anything more would be a double delivery
        controls = [raw.split(b"|")[9].decode() for raw in self.sent]
        assert Counter(c for _, c, _ in receiver.received()) == Counter(controls)
        for patient in ("R0", "R1"):
            theirs = [c for c, raw in zip(controls, self.sent, strict=True) if f"|{patient}^".encode() in raw]
            assert [c for _, c, p in receiver.received() if p == patient] == theirs


@pytest.fixture
def refused(kafka: KafkaSettings, tmp_path: Path) -> Iterator[Refused]:
    """Six messages of two patients, each refused (AE) and dead-lettered; the refusing EHR stopped."""
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
        yield Refused(name, port, sent, forwarder)
    finally:
        forwarder.stop()
        refusing.stop()


def redrive_events(kafka: KafkaSettings, name: str) -> list[dict]:
    def ours(events: list[dict]) -> list[dict]:
        return [e for e in events if e["action"] == "redrive" and e["details"]["destination"] == name]

    return ours(read_topic_sync(kafka, AUDIT_EVENTS, until=lambda es: len(ours(es)) >= 1))


def test_medroute_redrive_sends_each_once_in_each_patients_order(
    kafka: KafkaSettings, refused: Refused, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert redrive(["--destination", refused.name, "--dry-run"]) == 0
    assert "6 would be sent again" in capsys.readouterr().out
    time.sleep(1.0)
    mended = refused.mended(tmp_path / "mended.log")
    try:
        assert mended.received() == []  # the dry run sent nothing
        assert redrive(["--destination", refused.name, "--by", "integration-engineer"]) == 0
        assert "6 sent again" in capsys.readouterr().out
        refused.assert_each_once_in_each_patients_order(mended)
        # The same letters again: the ledger knows their redrive ids as delivered, nothing goes twice.
        assert redrive(["--destination", refused.name]) == 0
        assert "no dead letters" in capsys.readouterr().out
        time.sleep(2.0)
        refused.assert_each_once_in_each_patients_order(mended)
        [event] = redrive_events(kafka, refused.name)
        assert event["details"]["count"] == 6 and event["details"]["by"] == "integration-engineer"
    finally:
        mended.stop()


def test_the_web_ui_lists_the_letters_and_an_admin_sends_them_again(
    kafka: KafkaSettings, refused: Refused, tmp_path: Path
) -> None:
    tokens = {role: add_token(tmp_path / "tokens", f"t-{role.name}", role) for role in (Role.viewer, Role.admin)}
    accounts = Accounts.load(tmp_path / "users", tmp_path / "tokens")
    services = build_services(web_settings(tmp_path / "users", tmp_path / "tokens"), load_startup(WorkerSettings()),
                              accounts, kafka)  # fmt: skip
    mended = refused.mended(tmp_path / "mended.log")
    try:
        with TestClient(create_app(services)) as client:
            viewer, admin = ({"Authorization": f"Bearer {tokens[r]}"} for r in (Role.viewer, Role.admin))
            letters = client.get(f"/api/destinations/{refused.name}/deadletters", headers=viewer).json()
            assert len(letters) == 6 and {(x["reason"], x["code"]) for x in letters} == {("refused", "AE")}
            assert client.post(f"/api/destinations/{refused.name}/redrive", json={}, headers=viewer).status_code == 403
            answer = client.post(f"/api/destinations/{refused.name}/redrive", json={"reason": "refused"}, headers=admin)
            assert answer.json() == {"destination": refused.name, "sent": 6}
            refused.assert_each_once_in_each_patients_order(mended)

            def listed() -> int:  # on the destination's page: delivered letters leave the list
                return client.get(f"/destinations/{refused.name}", headers=viewer).text.count("<tr data-id")

            assert wait(lambda: listed() == 0, 30)
        [event] = redrive_events(kafka, refused.name)
        assert event["details"]["by"] == "t-admin" and event["details"]["reason"] == "refused"
    finally:
        mended.stop()
