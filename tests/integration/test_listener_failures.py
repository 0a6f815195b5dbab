"""Commit before acknowledge, under failure: kill -9 of the listener, and Kafka going away."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from formats.hl7.mllp_client import MllpClient
from medroute.config import HL7_INBOUND, KafkaSettings
from medroute.ports import free_port
from shell.broker import LocalBroker
from shell.samples import SampleMessage, sample_messages
from tests.integration.conftest import start_listener
from tests.integration.mllp_peers import parse_ack
from tests.integration.topic_reading import read_topic_sync


async def _send_until_acknowledged(
    messages: list[SampleMessage], port: int, acknowledged: list[str], negative: list[str], deadline: float
) -> None:
    """A sender that behaves as an EHR does: resend a message until it gets AA; reconnect on error."""
    client: MllpClient | None = None
    for message in messages:
        while time.monotonic() < deadline:
            try:
                if client is None:
                    client = MllpClient("127.0.0.1", port)
                    await client.connect()
                code, control_id = parse_ack(await client.send(message.raw, timeout=10))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError):
                if client is not None:
                    await client.close()
                client = None
                await asyncio.sleep(0.1)
                continue
            assert control_id == message.control_id
            if code == "AA":
                acknowledged.append(message.control_id)
                break
            negative.append(message.control_id)
            await asyncio.sleep(0.2)
    if client is not None:
        await client.close()


def test_kill9_under_load_loses_no_acknowledged_message(kafka: KafkaSettings, tmp_path: Path) -> None:
    port = free_port()
    listener = start_listener(kafka.bootstrap_servers, str(tmp_path), port=port)
    senders = [sample_messages(150, seed=900 + n, prefix=f"K9S{n}-") for n in range(4)]
    acknowledged: list[str] = []
    negative: list[str] = []

    async def scenario() -> None:
        deadline = time.monotonic() + 180
        tasks = [
            asyncio.create_task(_send_until_acknowledged(ms, port, acknowledged, negative, deadline))
            for ms in senders
        ]
        while len(acknowledged) < 100:  # kill while all four are mid-stream
            await asyncio.sleep(0.01)
        listener.process.kill9()
        killed_at = len(acknowledged)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(listener.process.start, port)
        await asyncio.gather(*tasks)
        assert killed_at < 600

    try:
        asyncio.run(scenario())
    finally:
        listener.process.stop()

    everything = {m.control_id for ms in senders for m in ms}
    assert set(acknowledged) == everything  # the senders finished after the restart
    stored = read_topic_sync(
        kafka, HL7_INBOUND, until=lambda rs: everything <= {r["control_id"] for r in rs}, timeout=60
    )
    stored_ids = {r["control_id"] for r in stored}
    missing = set(acknowledged) - stored_ids
    assert not missing, f"{len(missing)} acknowledged messages are not on {HL7_INBOUND}"


def test_broker_down_means_no_positive_ack_and_recovery_without_restart(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    settings = KafkaSettings(bootstrap=own_broker.bootstrap)
    listener = start_listener(own_broker.bootstrap, str(tmp_path))
    before, during, after = (sample_messages(20, seed=s, prefix=p) for s, p in ((1, "BD0-"), (2, "BD1-"), (3, "BD2-")))

    async def send_each(messages: list[SampleMessage], timeout: float) -> list[tuple[str, str | None]]:
        """(control id, MSA-1 or None when the connection failed) for each message, one connection."""
        results: list[tuple[str, str | None]] = []
        for message in messages:
            try:
                client = MllpClient("127.0.0.1", listener.port)
                await client.connect()
                try:
                    code, _ = parse_ack(await client.send(message.raw, timeout=timeout))
                finally:
                    await client.close()
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError):
                code = None
            results.append((message.control_id, code))
        return results

    try:
        assert {code for _, code in asyncio.run(send_each(before, 10))} == {"AA"}

        own_broker.stop()
        down = asyncio.run(send_each(during, 30))
        assert all(code != "AA" for _, code in down), down
        assert {code for _, code in down} <= {"AR", "CR", None}

        own_broker.start()
        deadline = time.monotonic() + 90
        recovered: list[tuple[str, str | None]] = []
        while time.monotonic() < deadline:
            recovered = asyncio.run(send_each(after[:1], 10))
            if recovered[0][1] == "AA":
                break
            time.sleep(1)
        assert recovered and recovered[0][1] == "AA", "listener did not recover after Kafka came back"
        assert {code for _, code in asyncio.run(send_each(after[1:], 10))} == {"AA"}
        assert listener.process.process.poll() is None  # same listener process throughout
    finally:
        listener.process.stop()

    stored = {r["control_id"] for r in read_topic_sync(settings, HL7_INBOUND, timeout=10)}
    assert {m.control_id for m in before + after} <= stored
    # Nothing from the outage was acknowledged; whatever was stored of it was also answered negatively.


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status may never be collected in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_several_listener_processes_share_the_port_and_end_with_their_parent(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    listener = start_listener(kafka.bootstrap_servers, str(tmp_path), MEDROUTE_MLLP_PROCESSES="2")
    messages = sample_messages(64, seed=77, prefix="MP-")
    deadline = time.monotonic() + 60
    while listener.process.log().count('"mllp.listening"') < 2 and time.monotonic() < deadline:
        time.sleep(0.2)

    async def send_all() -> list[str]:
        async def one_connection(share: list[SampleMessage]) -> list[str]:
            async with MllpClient("127.0.0.1", listener.port) as client:
                return [parse_ack(await client.send(m.raw, timeout=30))[0] for m in share]

        results = await asyncio.gather(*(one_connection(messages[i::8]) for i in range(8)))
        return [code for codes in results for code in codes]

    try:
        assert asyncio.run(send_all()) == ["AA"] * len(messages)
        parent = listener.process.process
        assert parent is not None
        children = [
            int(pid)
            for pid in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
            # The listener processes, not multiprocessing's resource tracker.
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(children) == 1, "no further listener process was started"
        listener.process.kill9()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and any(_running(c) for c in children):
            time.sleep(0.1)
        assert not any(_running(c) for c in children), "a listener process outlived its parent"
    finally:
        listener.process.stop()
    stored = read_topic_sync(
        kafka, HL7_INBOUND, until=lambda rs: {m.control_id for m in messages} <= {r["control_id"] for r in rs}
    )
    assert {m.control_id for m in messages} <= {r["control_id"] for r in stored}
