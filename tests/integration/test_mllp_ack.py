"""ACK correctness against the real listener and broker: original and enhanced mode, charsets,
custom delimiters, duplicates, an independent client (python-hl7's ``mllp_send``), and Kafka going
away and coming back under an in-process listener."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from formats.hl7.mllp_client import MllpClient, parse_ack
from listeners.mllp.server import MllpServer
from listeners.mllp.settings import MllpSettings
from listeners.sink import KafkaSink
from medroute.config import HL7_INBOUND, KafkaSettings
from shell.broker import LocalBroker
from tests.integration.conftest import RunningListener
from tests.integration.mllp_peers import mllp_send_file
from tests.integration.test_mllp_bad_input import TopicCollector

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"


@pytest.fixture(scope="module")
def listener(mllp_listener: RunningListener) -> RunningListener:
    return mllp_listener


@pytest.fixture(scope="module")
def inbound(kafka: KafkaSettings) -> Iterator[TopicCollector]:
    collector = TopicCollector(kafka, (HL7_INBOUND,))
    yield collector
    collector.close()


def fixture_with_new_id(name: str) -> tuple[bytes, str, str]:
    """A fixture message with a fresh MSH-10 (the listener remembers ids for its duplicate window)."""
    raw = (FIXTURES / name).read_bytes()
    header = raw.removeprefix(b"\xef\xbb\xbf")
    field = header[3:4]
    fields = header.split(b"\r", 1)[0].split(field)
    old_id = fields[9].decode()
    new_id = f"{old_id[:4]}{uuid.uuid4().hex[:12]}"
    return raw.replace(field + old_id.encode() + field, field + new_id.encode() + field, 1), new_id, old_id


async def _send(port: int, *messages: bytes, expect_reply: bool = True) -> list[bytes]:
    async with MllpClient("127.0.0.1", port) as client:
        return [await client.send(m, timeout=15, expect_reply=expect_reply) for m in messages]


@pytest.mark.parametrize(
    ("name", "pid", "codec", "version"),
    [
        ("adt_a01.hl7", "MRN100234", "ascii", "2.5.1"),
        ("oru_r01_radiology.hl7", "MRN200871", "ascii", "2.5.1"),
        ("mdm_t02.hl7", "MRN300442", "ascii", "2.5.1"),
        ("orm_o01.hl7", "MRN400123", "ascii", "2.3.1"),
        ("siu_s12.hl7", "MRN500777", "ascii", "2.5.1"),
        ("z_segments.hl7", "MRN700555", "ascii", "2.5.1"),
        ("custom_delimiters.hl7", "MRN600001", "ascii", "2.5.1"),
        ("gb18030_chinese.hl7", "MRN800001", "gb18030", "2.5.1"),
        ("latin1_8859_1.hl7", "MRN900001", "iso8859-1", "2.5.1"),
        ("shift_jis.hl7", "MRN100001", "shift_jis", "2.5.1"),
        ("iso2022_jp.hl7", "MRN110001", "iso2022_jp", "2.5.1"),
        ("utf8_bom.hl7", "MRN120001", "utf-8-sig", "2.5.1"),
    ],
)
def test_valid_message_ack_and_record(
    name: str, pid: str, codec: str, version: str, listener: RunningListener, inbound: TopicCollector
) -> None:
    raw, control_id, _ = fixture_with_new_id(name)
    (ack,) = asyncio.run(_send(listener.port, raw))
    text = ack.decode("utf-8" if codec == "utf-8-sig" else codec)
    d = text[3]
    incoming = raw.decode(codec).lstrip("\ufeff").split("\r")[0].split(d)
    msh, msa = (s.split(d) for s in text.split("\r")[:2])
    assert msh[1] == incoming[1]  # same delimiters
    assert msh[2:6] == [incoming[4], incoming[5], incoming[2], incoming[3]]  # sender and receiver swapped
    trigger = incoming[8].split(incoming[1][0])[1]
    assert msh[8] == incoming[1][0].join(("ACK", trigger, "ACK"))
    assert msh[9] != control_id and msh[11] == version
    assert (msh[17] if len(msh) > 17 else "") == (incoming[17] if len(incoming) > 17 else "")  # same charset
    assert msa[:3] == ["MSA", "AA", control_id]
    assert "ERR" not in text

    (record,) = inbound.wait_for(HL7_INBOUND, lambda r: r["control_id"] == control_id)
    assert record["_key"] == pid
    assert base64.b64decode(record["raw"]) == raw
    assert record["encoding"] == codec and record["version"] == version


def _undeclared(name: str, declared: bytes) -> tuple[bytes, str]:
    """A fixture with its MSH-18 emptied, as many real senders send it."""
    raw, control_id, _ = fixture_with_new_id(name)
    return raw.replace(b"|" + declared + b"\r", b"|\r", 1), control_id


@pytest.mark.parametrize(
    ("name", "declared", "codec", "needle"),
    [
        ("latin1_8859_1.hl7", b"8859/1", "iso8859-1", "MÜLLER"),
        ("utf8_bom.hl7", b"UNICODE UTF-8", "utf-8", "Zoë"),
        ("gb18030_chinese.hl7", b"GB 18030-2000", "iso8859-1", None),  # no site fallback for Chinese: bytes kept
    ],
)
def test_empty_msh18_with_non_ascii_bytes_is_accepted(
    name: str, declared: bytes, codec: str, needle: str | None, listener: RunningListener, inbound: TopicCollector
) -> None:
    raw, control_id = _undeclared(name, declared)
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    assert b"|" + declared not in raw
    (ack,) = asyncio.run(_send(listener.port, raw))
    assert parse_ack(ack)[:2] == ("AA", control_id)
    (record,) = inbound.wait_for(HL7_INBOUND, lambda r: r["control_id"] == control_id)
    assert base64.b64decode(record["raw"]) == raw
    assert (record["charset"], record["encoding"], record["charset_assumed"]) == ("", codec, codec)
    if needle:
        assert needle in raw.decode(codec)


@pytest.mark.parametrize(
    ("mode", "answered", "code"),
    [("AL", True, "CA"), ("SU", True, "CA"), ("ER", False, None), ("NE", False, None)],
)
def test_enhanced_mode_accept_ack(
    mode: str, answered: bool, code: str | None, listener: RunningListener, inbound: TopicCollector
) -> None:
    raw, control_id, _ = fixture_with_new_id("enhanced_al.hl7")
    raw = raw.replace(b"|||AL|NE", f"|||{mode}|AL".encode())
    follow_up, follow_id, _ = fixture_with_new_id("adt_a01.hl7")

    async def exchange() -> tuple[bytes, bytes]:
        async with MllpClient("127.0.0.1", listener.port) as client:
            first = await client.send(raw, timeout=15, expect_reply=answered)
            # The next message on the same connection gets its own answer, not a stray one.
            return first, await client.send(follow_up, timeout=15)

    first, second = asyncio.run(exchange())
    if answered:
        ack = parse_ack(first)
        assert (ack.code, ack.control_id) == (code, control_id)
        assert b"|||NE|NE" in first.split(b"\r")[0]  # an accept ack is itself never acknowledged
    else:
        assert first == b""
    assert parse_ack(second)[:2] == ("AA", follow_id)
    inbound.wait_for(HL7_INBOUND, lambda r: r["control_id"] == control_id)  # stored either way


def test_duplicate_is_acknowledged_and_stored_once(listener: RunningListener, inbound: TopicCollector) -> None:
    raw, control_id, _ = fixture_with_new_id("oru_r01_radiology.hl7")
    acks = asyncio.run(_send(listener.port, raw, raw)) + asyncio.run(_send(listener.port, raw))
    assert [parse_ack(a)[:2] for a in acks] == [("AA", control_id)] * 3
    time.sleep(2)  # give a wrongly stored second copy time to show up
    copies = inbound.wait_for(HL7_INBOUND, lambda r: r["control_id"] == control_id)
    assert len(copies) == 1


def test_independent_client_mllp_send(listener: RunningListener, inbound: TopicCollector, tmp_path: Path) -> None:
    messages = [fixture_with_new_id(n) for n in ("adt_a01.hl7", "oru_r01_radiology.hl7", "mdm_t02.hl7")]
    acks = mllp_send_file([raw for raw, _, _ in messages], listener.port, tmp_path)
    assert acks == [("AA", control_id) for _, control_id, _ in messages]
    for _, control_id, _ in messages:
        inbound.wait_for(HL7_INBOUND, lambda r, c=control_id: r["control_id"] == c)


def test_kafka_down_gives_ar_207_fast_then_recovers_without_restart(own_broker: LocalBroker) -> None:
    settings = KafkaSettings(bootstrap=own_broker.bootstrap)

    async def scenario() -> None:
        sink = KafkaSink(settings, timeout=3.0)
        await sink.start()
        mllp = replace(MllpSettings(port=0), store_timeout=3.0, dedup_window=600)
        try:
            async with MllpServer(mllp, sink) as server, MllpClient("127.0.0.1", server.port) as client:
                before, before_id, _ = fixture_with_new_id("adt_a01.hl7")
                assert parse_ack(await client.send(before, timeout=15))[:2] == ("AA", before_id)

                await asyncio.to_thread(own_broker.stop)
                during, during_id, _ = fixture_with_new_id("adt_a01.hl7")
                began = time.monotonic()
                ack = parse_ack(await client.send(during, timeout=30))
                assert (ack.code, ack.control_id, ack.error_code) == ("AR", during_id, "207")
                assert time.monotonic() - began < 10  # bounded: the sender is not left hanging

                await asyncio.to_thread(own_broker.start)
                deadline = time.monotonic() + 90
                while True:  # the sender's retry of the same message, as an EHR would do
                    ack = parse_ack(await client.send(during, timeout=30))
                    if ack.code == "AA" or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1)
                assert (ack.code, ack.control_id) == ("AA", during_id)
                after, after_id, _ = fixture_with_new_id("oru_r01_radiology.hl7")
                assert parse_ack(await client.send(after, timeout=15))[:2] == ("AA", after_id)
        finally:
            await sink.stop()

    asyncio.run(scenario())
