"""Forwarding HL7 over MLLP to python-hl7's server (an EHR this project did not write), through the real broker.

One forwarder process runs the module's destinations: a receiver that answers AA, one that answers AE, and one
that is down for the first 30 s (started first, so its outage overlaps the other tests). The SIGKILL test runs
a forwarder of its own.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medroute.config import AUDIT_EVENTS, FORWARD_DEADLETTER, KafkaSettings
from medroute.ports import free_port
from pipeline.forward.status import status_rows
from pipeline.settings import WorkerSettings
from pipeline.worker import load_startup
from shell import health
from tests.integration.forward_peers import (
    Hl7Receiver,
    hl7_decision,
    hl7_message,
    publish_sync,
    start_forwarder,
    wait_until,
)
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic_sync
from tests.web.conftest import web_settings
from web.app import build_services, create_app
from web.users import Accounts, Role, add_token

OUTAGE_SECONDS = 30.0
DESTINATIONS = """\
destinations:
  ehr-{tag}:
    type: mllp
    host: 127.0.0.1
    port: {ok_port}
    concurrency: 4
  ehr-ae-{tag}:
    type: mllp
    host: 127.0.0.1
    port: {ae_port}
    attempts: 3
  ehr-down-{tag}:
    type: mllp
    host: 127.0.0.1
    port: {down_port}
    timeout: 5
    backoff: {{initial: 0.2, maximum: 1}}
    breaker: {{failures: 2, open_seconds: 0.5, max_open_seconds: 2}}
"""


@dataclass
class Module:
    tag: str
    kafka: KafkaSettings
    home: Path
    destinations: Path
    forwarder: ChildProcess
    ok: Hl7Receiver
    ae: Hl7Receiver
    down: Hl7Receiver
    down_sent: list[bytes]
    down_since: float
    metrics_port: int


def messages(count: int, patients: int, start: int = 0) -> list[bytes]:
    return [hl7_message(start + n, f"P{(start + n) % patients:03d}") for n in range(count)]


@pytest.fixture(scope="module")
def module(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Module]:
    home = tmp_path_factory.mktemp("forward-mllp")
    tag = uuid.uuid4().hex[:8]
    ok = Hl7Receiver(free_port(), home / "ok.log").start()
    ae = Hl7Receiver(free_port(), home / "ae.log", ack="AE").start()
    down = Hl7Receiver(free_port(), home / "down.log")  # not started yet: the receiver is down
    destinations = home / "destinations.yaml"
    destinations.write_text(DESTINATIONS.format(tag=tag, ok_port=ok.port, ae_port=ae.port, down_port=down.port))
    metrics_port = free_port()
    forwarder = start_forwarder(kafka, home, destinations, MEDROUTE_FORWARD_METRICS_PORT=str(metrics_port))
    down_sent = messages(30, 3, start=9000)
    publish_sync(kafka, [hl7_decision(raw, [f"ehr-down-{tag}"]) for raw in down_sent])
    state = Module(tag, kafka, home, destinations, forwarder, ok, ae, down, down_sent, time.monotonic(), metrics_port)
    yield state
    forwarder.stop()
    for receiver in (ok, ae, down):
        receiver.stop()


def assert_once_in_order(received: list[tuple[float, str, str]], sent: list[bytes]) -> None:
    controls = [raw.split(b"|")[9].decode() for raw in sent]
    counts = Counter(control for _, control, _ in received)
    assert counts == Counter(controls), f"missing or repeated: {set(controls) ^ set(counts)}"
    by_patient: dict[str, list[str]] = defaultdict(list)
    for raw, control in zip(sent, controls, strict=True):
        by_patient[raw.split(b"PID|1||")[1].split(b"^")[0].decode()].append(control)
    seen: dict[str, list[str]] = defaultdict(list)
    for _, control, patient in received:
        seen[patient].append(control)
    assert seen == by_patient  # one patient's messages in the order they were decided


def test_every_message_arrives_once_acked_in_order_per_patient(module: Module) -> None:
    sent = messages(60, 6)
    decisions = [hl7_decision(raw, [f"ehr-{module.tag}", "somewhere-else"]) for raw in sent]
    publish_sync(module.kafka, decisions)
    assert wait_until(lambda: len(module.ok.received()) >= 60, 60), module.forwarder.log()[-3000:]
    time.sleep(1.0)  # anything more would be a double delivery
    assert_once_in_order(module.ok.received(), sent)
    ids = {d.message_id for d in decisions}

    def delivered(events: list[dict]) -> list[dict]:
        return [e for e in events if e["action"] == "forward" and e["message_id"] in ids
                and e["details"]["outcome"] == "delivered"]  # fmt: skip

    events = delivered(read_topic_sync(module.kafka, AUDIT_EVENTS, until=lambda es: len(delivered(es)) >= 60))
    assert Counter(e["message_id"] for e in events) == Counter(dict.fromkeys(ids, 1))
    assert {e["details"]["code"] for e in events} == {"AA"}
    assert all("DOE" not in str(e) and "P00" not in str(e) for e in events)  # no PHI in the audit trail


def test_a_receiver_that_answers_ae_ends_with_every_item_dead_lettered(module: Module) -> None:
    sent = messages(8, 2, start=500)
    decisions = [hl7_decision(raw, [f"ehr-ae-{module.tag}"]) for raw in sent]
    publish_sync(module.kafka, decisions)
    ids = {d.message_id for d in decisions}

    def letters(records: list[dict]) -> list[dict]:
        return [r for r in records if r["message_id"] in ids]

    found = letters(read_topic_sync(module.kafka, FORWARD_DEADLETTER, until=lambda rs: len(letters(rs)) >= 8))
    assert Counter(r["message_id"] for r in found) == Counter(dict.fromkeys(ids, 1))
    assert {(r["reason"], r["attempts"], r["destination"]) for r in found} == {("refused", 1, f"ehr-ae-{module.tag}")}
    assert all(r["detail"].startswith("AE") and r["decision"]["source_offset"] for r in found)
    assert Counter(c for _, c, _ in module.ae.received()) == Counter(raw.split(b"|")[9].decode() for raw in sent)


def test_destinations_reload_refuses_a_bad_file_and_applies_a_good_one(module: Module) -> None:
    original = module.destinations.read_text()
    started = time.time()
    module.destinations.write_text(original + "  broken:\n    type: mllp\n")
    added = f"ehr-new-{module.tag}"

    def reloads(events: list[dict]) -> list[dict]:
        return [e for e in events if e["action"] == "reload" and e["at"] >= _iso(started)]

    events = reloads(read_topic_sync(module.kafka, AUDIT_EVENTS, until=lambda es: len(reloads(es)) >= 1, timeout=30))
    refused = events[0]["details"]
    assert refused["outcome"] == "refused"
    line = len(original.splitlines()) + 2  # where the broken entry's settings start
    assert refused["error"] == f"{module.destinations}:{line}: mllp destination 'broken' needs 'host'"
    entry = f"  {added}:\n    type: mllp\n    host: 127.0.0.1\n    port: {module.ok.port}\n"
    module.destinations.write_text(original + entry)
    events = reloads(read_topic_sync(module.kafka, AUDIT_EVENTS, until=lambda es: len(reloads(es)) >= 2, timeout=30))
    assert events[1]["details"]["outcome"] == "applied" and events[1]["details"]["added"] == [added]
    sent = messages(3, 1, start=700)
    before = len(module.ok.received())
    publish_sync(module.kafka, [hl7_decision(raw, [added]) for raw in sent])
    assert wait_until(lambda: len(module.ok.received()) >= before + 3, 30), module.forwarder.log()[-3000:]


def test_a_forwarder_killed_mid_delivery_delivers_nothing_twice_but_what_was_in_flight(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """The receiver takes 50 ms per ACK, so most of the time a delivery waits for it. A SIGKILL leaves up to
    `concurrency` messages received but not acknowledged to the forwarder: MLLP resends those (the receiver
    sees them again, as after any lost ACK), and the few acknowledged in the last ledger round trip (their
    entries had not reached Kafka): a handful, more on a starved CPU, all from just before the kill.
    Everything acknowledged before that is not sent again, although its offsets were not committed yet: the
    ledger turns those into no-ops."""
    receiver = Hl7Receiver(free_port(), tmp_path / "kill.log", delay=0.05).start()
    tag = uuid.uuid4().hex[:8]
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        f"destinations:\n  ehr-kill-{tag}:\n    type: mllp\n    host: 127.0.0.1\n    port: {receiver.port}\n"
        "    concurrency: 4\n"
    )
    sent = messages(240, 8, start=1000)
    forwarder = start_forwarder(kafka, tmp_path, destinations)
    try:
        publish_sync(kafka, [hl7_decision(raw, [f"ehr-kill-{tag}"]) for raw in sent])
        assert wait_until(lambda: len(receiver.received()) >= 80, 60), forwarder.log()[-3000:]
        forwarder.kill9()
        killed_at = time.time()
        forwarder = start_forwarder(kafka, tmp_path, destinations)
        controls = {raw.split(b"|")[9].decode() for raw in sent}
        assert wait_until(lambda: {c for _, c, _ in receiver.received()} >= controls, 90), forwarder.log()[-3000:]
        time.sleep(1.0)
    finally:
        forwarder.stop()
        receiver.stop()
    received = receiver.received()
    counts = Counter(c for _, c, _ in received)
    first_seen = {c: t for t, c, _ in reversed(received)}
    repeated = {c for c, n in counts.items() if n > 1}
    assert len(repeated) <= 2 * 4, repeated  # the 4 in flight, and as many again whose ledger entry was
    # Only messages the receiver got in the last ACK delay before the kill came again.
    assert all(killed_at - 1.0 <= first_seen[c] <= killed_at for c in repeated), (repeated, killed_at)
    assert set(counts) == {raw.split(b"|")[9].decode() for raw in sent}


def test_a_receiver_down_for_30_s_gets_everything_once_it_is_back(module: Module) -> None:
    remaining = OUTAGE_SECONDS - (time.monotonic() - module.down_since)
    if remaining > 0:
        time.sleep(remaining)
    assert module.down.received() == []
    module.down.start()
    assert wait_until(lambda: len(module.down.received()) >= len(module.down_sent), 30), module.forwarder.log()[-3000:]
    time.sleep(1.0)
    assert_once_in_order(module.down.received(), module.down_sent)


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def test_health_of_the_running_forwarder(module: Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """`medroute health forward` (a container's HEALTHCHECK) reads the heartbeat its main loop keeps."""
    monkeypatch.setenv("MEDROUTE_HOME", str(module.home))
    assert wait_until(lambda: health.main(["forward"]) == 0, 30), module.forwarder.log()[-3000:]


def test_the_web_console_and_the_forwarders_metrics_show_each_destination(module: Module, tmp_path: Path) -> None:
    """The web server follows the forwarders' snapshots and asks Kafka what each destination still has to pass;
    the forwarder's Prometheus endpoint counts the same."""
    token = add_token(tmp_path / "tokens", "console", Role.viewer)
    accounts = Accounts.load(tmp_path / "users", tmp_path / "tokens")
    settings = web_settings(tmp_path / "users", tmp_path / "tokens")
    services = build_services(settings, load_startup(WorkerSettings()), accounts, module.kafka)
    ok, ae = f"ehr-{module.tag}", f"ehr-ae-{module.tag}"
    with TestClient(create_app(services)) as client:

        def rows() -> dict[str, dict]:
            answer = client.get("/api/destinations", headers={"Authorization": f"Bearer {token}"})
            return {row["destination"]: row for row in answer.json()}

        assert wait_until(lambda: {ok, ae, f"ehr-down-{module.tag}"} <= set(rows()), 30), rows()
        delivered, dead = rows()[ok]["delivered"], rows()[ae]["dead_lettered"]
        publish_sync(module.kafka, [hl7_decision(raw, [ok]) for raw in messages(6, 2, start=700)])
        publish_sync(module.kafka, [hl7_decision(raw, [ae]) for raw in messages(2, 1, start=800)])

        def settled() -> bool:
            now = rows()
            return (now[ok]["delivered"] >= delivered + 6 and now[ok]["pending"] == 0
                    and now[ae]["dead_lettered"] >= dead + 2 and now[ae]["pending"] == 0)  # fmt: skip

        assert wait_until(settled, 60), rows()
        now = rows()
        assert (now[ok]["state"], now[ok]["type"], now[ok]["breaker"]) == ("running", "mllp", "closed")
        assert now[ae]["last_error"] == "AE"
        # `medroute forward status` reads the snapshots from the topic itself and tells the same.
        printed = {row["destination"]: row for row in asyncio.run(status_rows(module.kafka, [ok, ae]))}
        assert printed[ok]["state"] == "running" and printed[ae]["dead_lettered"] >= now[ae]["dead_lettered"]
        page = client.get("/destinations", headers={"Authorization": f"Bearer {token}"}).text
        assert f'data-destination="{ok}"' in page and f'data-destination="{ae}"' in page
    with urllib.request.urlopen(f"http://127.0.0.1:{module.metrics_port}/metrics", timeout=10) as answer:
        scraped = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                   for line in answer.read().decode().splitlines() if line.startswith("medroute_forward_")}  # fmt: skip

    def metric(name: str, destination: str) -> float:
        return scraped[f'medroute_forward_{name}{{destination="{destination}",type="mllp"}}']

    assert metric("delivered_total", ok) >= now[ok]["delivered"] and metric("breaker_open", ok) == 0
    assert metric("dead_lettered_total", ae) >= now[ae]["dead_lettered"]

