"""The listener end to end over loopback TCP with an in-memory sink (a test double for Kafka)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from formats.hl7.mllp_client import MllpClient, MllpConnectionError, parse_ack
from listeners.mllp.dedup import identity_key
from listeners.mllp.server import MllpServer, serve
from listeners.mllp.settings import MllpSettings
from listeners.sink import SinkUnavailable
from medroute.config import AUDIT_EVENTS, HL7_DEADLETTER, HL7_INBOUND, HL7_RECEIVED_IDS
from medroute.ports import free_port
from medroute.records import AuditEvent, DeadLetter, Hl7Record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
ADT = (FIXTURES / "adt_a01.hl7").read_bytes()


class MemorySink:
    """Stores records in a list; can be made to fail or to hold each put until released."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self.failing = False
        self.gate: asyncio.Event | None = None
        self.puts_started = 0

    async def put(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.puts_started += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise SinkUnavailable("broker down (test)")
        self.records.append((topic, key, value))

    def on(self, topic: str) -> list[tuple[bytes | None, bytes]]:
        return [(k, v) for t, k, v in self.records if t == topic]

    def inbound(self) -> list[Hl7Record]:
        return [Hl7Record.from_json(v) for _, v in self.on(HL7_INBOUND)]

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_json(v) for _, v in self.on(HL7_DEADLETTER)]

    def audit(self) -> list[AuditEvent]:
        return [AuditEvent.from_json(v) for _, v in self.on(AUDIT_EVENTS)]


def settings(**overrides: object) -> MllpSettings:
    return replace(MllpSettings(port=0, host="127.0.0.1", default_charset="ASCII", strict=False), **overrides)


def with_control_id(raw: bytes, control_id: str) -> bytes:
    return raw.replace(b"|ADT000123|", f"|{control_id}|".encode(), 1)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


async def test_valid_message_is_stored_then_acknowledged(sink: MemorySink) -> None:
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send(ADT, timeout=5))
    assert (ack.code, ack.control_id) == ("AA", "ADT000123")
    ((key, value),) = sink.on(HL7_INBOUND)
    assert key == b"MRN100234"  # PID-3, first repetition, first component
    record = Hl7Record.from_json(value)
    assert record.raw == ADT and record.text() == ADT.decode("ascii")
    assert record.message_type == "ADT^A01^ADT_A01" and record.control_id == "ADT000123"
    assert (record.sending_application, record.sending_facility) == ("ADTSYS", "GENHOSP")
    assert (record.receiving_application, record.receiving_facility) == ("MEDROUTE", "GENHOSP")
    assert record.version == "2.5.1" and record.charset == "" and record.encoding == "ascii"
    assert record.peer.startswith("127.0.0.1:") and len(record.message_id) == 32
    assert sink.audit() == []  # the worker audits "receive" from the stored record, off the ACK path


async def test_stored_message_type_uses_the_standard_component_separator(sink: MemorySink) -> None:
    raw = (FIXTURES / "custom_delimiters.hl7").read_bytes()
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        assert parse_ack(await client.send(raw, timeout=5)).code == "AA"
    ((_, value),) = sink.on(HL7_INBOUND)
    record = Hl7Record.from_json(value)
    assert record.raw == raw  # the raw bytes keep the sender's delimiters
    assert record.message_type == "ORU^R01^ORU_R01"


async def test_ack_only_after_put_returns(sink: MemorySink) -> None:
    sink.gate = asyncio.Event()
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        sending = asyncio.create_task(client.send(ADT, timeout=5))
        while sink.puts_started == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert not sending.done()  # the put has not returned: no ACK yet
        assert sink.records == []
        sink.gate.set()
        assert parse_ack(await sending).code == "AA"
    assert len(sink.on(HL7_INBOUND)) == 1


async def test_sink_failure_gives_ar_207_and_nothing_stored(sink: MemorySink) -> None:
    sink.failing = True
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send(ADT, timeout=5))
        assert (ack.code, ack.control_id, ack.error_code) == ("AR", "ADT000123", "207")
        assert sink.records == []
        sink.failing = False  # the broker is back: the resend is stored and acknowledged
        assert parse_ack(await client.send(ADT, timeout=5)).code == "AA"
    assert len(sink.inbound()) == 1


async def test_enhanced_mode_storage_failure_is_cr(sink: MemorySink) -> None:
    sink.failing = True
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send((FIXTURES / "enhanced_al.hl7").read_bytes(), timeout=5))
    assert (ack.code, ack.error_code) == ("CR", "207")


async def test_duplicate_is_acknowledged_again_and_stored_once(sink: MemorySink) -> None:
    async with MllpServer(settings(), sink) as server:
        async with MllpClient("127.0.0.1", server.port) as client:
            first = parse_ack(await client.send(ADT, timeout=5))
            second = parse_ack(await client.send(ADT, timeout=5))
        async with MllpClient("127.0.0.1", server.port) as other:  # a resend on a new connection
            third = parse_ack(await other.send(ADT, timeout=5))
            other_id = parse_ack(await other.send(with_control_id(ADT, "NEW1"), timeout=5))
    assert [a.code for a in (first, second, third, other_id)] == ["AA"] * 4
    assert [r.control_id for r in sink.inbound()] == ["ADT000123", "NEW1"]


async def test_same_control_id_from_another_sender_is_not_a_duplicate(sink: MemorySink) -> None:
    other_sender = ADT.replace(b"|ADTSYS|", b"|OTHERSYS|", 1)
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        await client.send(ADT, timeout=5)
        await client.send(other_sender, timeout=5)
    assert len(sink.inbound()) == 2


async def test_concurrent_duplicates_store_one_copy(sink: MemorySink) -> None:
    sink.gate = asyncio.Event()
    async with MllpServer(settings(), sink) as server:
        clients = [MllpClient("127.0.0.1", server.port) for _ in range(3)]
        sends = [asyncio.create_task(c.send(ADT, timeout=5)) for c in clients]
        await asyncio.sleep(0.2)
        sink.gate.set()
        acks = [parse_ack(a).code for a in await asyncio.gather(*sends)]
        for c in clients:
            await c.close()
    assert acks == ["AA"] * 3
    assert len(sink.inbound()) == 1


async def test_dedup_disabled_with_zero_window(sink: MemorySink) -> None:
    async with MllpServer(settings(dedup_window=0), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        await client.send(ADT, timeout=5)
        await client.send(ADT, timeout=5)
    assert len(sink.inbound()) == 2


async def test_bad_message_is_dead_lettered_and_connection_keeps_serving(sink: MemorySink) -> None:
    bad = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01||P|2.5\rPID|1||SECRET-MRN^^^X||SECRETNAME^JOHN\r"
    with capture_logs() as logs:
        async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
            ack = parse_ack(await client.send(bad, timeout=5))
            good = parse_ack(await client.send(ADT, timeout=5))
    assert (ack.code, ack.control_id, ack.error_code) == ("AR", "", "101")
    assert good.code == "AA"
    (dead,) = sink.dead_letters()
    assert dead.reason == "missing_control_id" and dead.raw == bad and dead.source == "mllp"
    assert dead.peer.startswith("127.0.0.1:")
    assert "SECRET" not in dead.detail
    rejects = [a for a in sink.audit() if a.action == "reject"]
    assert len(rejects) == 1 and rejects[0].message_id == dead.message_id
    assert rejects[0].details["reason"] == "missing_control_id"
    assert "SECRET" not in json.dumps(rejects[0].to_dict())
    assert "SECRET" not in repr(logs) and "MRN100234" not in repr(logs) and "ADT000123" not in repr(logs)
    events = [entry["event"] for entry in logs]
    assert "mllp.frame_rejected" in events and "mllp.frame_accepted" in events
    assert "mllp.connection_open" in events and "mllp.connection_closed" in events


async def test_content_error_is_ae(sink: MemorySink) -> None:
    wrong = (FIXTURES / "gb18030_chinese.hl7").read_bytes().replace(b"GB 18030-2000", b"UNICODE UTF-8")
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send(wrong, timeout=5))
    assert (ack.code, ack.control_id, ack.error_code) == ("AE", "GB800001", "102")
    assert sink.dead_letters()[0].reason == "undecodable"


UNDECLARED_LATIN1 = with_control_id(ADT, "LATIN0001").replace(b"\rPV1", "\rNTE|1||Größe: 3 µm\rPV1".encode("latin-1"))


async def test_empty_msh18_high_bytes_are_accepted_with_the_assumed_charset(sink: MemorySink) -> None:
    before = REGISTRY.get_sample_value(
        "medroute_listener_charset_assumed_total", {"listener": "mllp", "charset": "iso8859-1"}
    )
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send(UNDECLARED_LATIN1, timeout=5))
    assert (ack.code, ack.control_id) == ("AA", "LATIN0001")
    (record,) = sink.inbound()
    assert record.raw == UNDECLARED_LATIN1  # bytes kept unchanged
    assert (record.charset, record.encoding, record.charset_assumed) == ("", "iso8859-1", "iso8859-1")
    assert "Größe: 3 µm" in record.text()
    after = REGISTRY.get_sample_value(
        "medroute_listener_charset_assumed_total", {"listener": "mllp", "charset": "iso8859-1"}
    )
    assert after == (before or 0) + 1


async def test_strict_mode_still_refuses_undeclared_high_bytes(sink: MemorySink) -> None:
    async with MllpServer(settings(strict=True), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send(UNDECLARED_LATIN1, timeout=5))
    assert (ack.code, ack.control_id, ack.error_code) == ("AE", "LATIN0001", "102")
    assert sink.inbound() == [] and sink.dead_letters()[0].reason == "undecodable"


async def test_frame_errors(sink: MemorySink) -> None:
    big = ADT + b"OBX|1|TX|||" + b"x" * 5000 + b"\r"
    async with MllpServer(settings(max_frame=1024), sink) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"junk!" + b"\x0b" + big + b"\x1c\r")
        await writer.drain()
        frame = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 5)
        ack = parse_ack(frame)
        assert (ack.code, ack.control_id, ack.error_code) == ("AR", "ADT000123", "104")
        writer.write(b"\x0b" + ADT + b"\x1c\r")
        assert parse_ack(await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 5)).code == "AA"
        writer.write(b"\x0bMSH|^~\\&|partial")  # then EOF: truncated, no answer possible
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    reasons = [d.reason for d in sink.dead_letters()]
    assert reasons == ["junk_before_start_block", "frame_too_large", "truncated_frame"]
    junk, oversize, truncated = sink.dead_letters()
    assert junk.raw == b"junk!" and oversize.raw == big[:1024] and truncated.raw == b"MSH|^~\\&|partial"


async def test_enhanced_mode_ne_sends_nothing_and_order_is_kept(sink: MemorySink) -> None:
    no_ack = ADT.replace(b"|P|2.5.1", b"|P|2.5.1|||NE|NE", 1)
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        assert await client.send(no_ack, timeout=5, expect_reply=False) == b""
        ack = parse_ack(await client.send(with_control_id(ADT, "NEXT"), timeout=5))
    assert ack.control_id == "NEXT"
    assert [r.control_id for r in sink.inbound()] == ["ADT000123", "NEXT"]


async def test_pipelined_frames_are_answered_in_order(sink: MemorySink) -> None:
    frames = b"".join(b"\x0b" + with_control_id(ADT, f"P{n}") + b"\x1c\r" for n in range(5))
    async with MllpServer(settings(), sink) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames)
        await writer.drain()
        acks = [parse_ack(await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 5)) for _ in range(5)]
        writer.close()
    assert [a.control_id for a in acks] == [f"P{n}" for n in range(5)]
    assert [r.control_id for r in sink.inbound()] == [f"P{n}" for n in range(5)]


async def test_key_falls_back_to_control_id(sink: MemorySink) -> None:
    no_pid = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|CTRL9|P|2.5\rEVN|A01\r"
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        await client.send(no_pid, timeout=5)
    assert sink.on(HL7_INBOUND)[0][0] == b"CTRL9"


@pytest.mark.parametrize(
    "name",
    [
        "gb18030_chinese.hl7",
        "latin1_8859_1.hl7",
        "shift_jis.hl7",
        "iso2022_jp.hl7",
        "utf8_bom.hl7",
        "custom_delimiters.hl7",
    ],
)
async def test_charsets_and_delimiters_round_trip(sink: MemorySink, name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = await client.send(raw, timeout=5)
    assert parse_ack(ack).code == "AA"
    (record,) = sink.inbound()
    assert record.raw == raw
    assert record.text().lstrip("\ufeff").startswith("MSH")
    if name == "custom_delimiters.hl7":
        assert ack.startswith(b"MSH#$%*!#") and b"MSA#AA#LAB60001#" in ack


async def test_ack_is_encoded_in_the_message_charset(sink: MemorySink) -> None:
    raw = (FIXTURES / "gb18030_chinese.hl7").read_bytes().replace(b"|BEIJINGHOSP|", "|北京医院|".encode("gb18030"))
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = await client.send(raw, timeout=5)
    assert "|北京医院|HIS|".encode("gb18030") in ack or "|HIS|北京医院|".encode("gb18030") in ack
    assert ack.split(b"\r")[0].endswith(b"|GB 18030-2000")


async def test_strict_mode(sink: MemorySink) -> None:
    no_obr = b"MSH|^~\\&|RIS|H|MR|H|20240101||ORU^R01^ORU_R01|S1|P|2.5.1\rPID|1||MRN1\rOBX|1|TX|X||text||||||F\r"
    async with MllpServer(settings(strict=True), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        good = parse_ack(await client.send((FIXTURES / "oru_r01_radiology.hl7").read_bytes(), timeout=10))
        bad = parse_ack(await client.send(no_obr, timeout=10))
    assert good.code == "AA"
    assert (bad.code, bad.control_id, bad.error_code) == ("AE", "S1", "102")
    assert [d.reason for d in sink.dead_letters()] == ["not_conformant"]


async def test_same_message_is_accepted_without_strict_mode(sink: MemorySink) -> None:
    no_obr = b"MSH|^~\\&|RIS|H|MR|H|20240101||ORU^R01^ORU_R01|S1|P|2.5.1\rPID|1||MRN1\rOBX|1|TX|X||text||||||F\r"
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        assert parse_ack(await client.send(no_obr, timeout=5)).code == "AA"


async def test_binary_garbage_is_ar_no_msh_not_a_charset_error(sink: MemorySink) -> None:
    garbage = bytes(range(0x80, 0x100)) * 3
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send(garbage, timeout=5))
    assert (ack.code, ack.control_id, ack.error_code) == ("AR", "", "100")
    (dead,) = sink.dead_letters()
    assert dead.reason == "no_msh" and dead.raw == garbage


async def test_dead_letter_failure_still_naks(sink: MemorySink) -> None:
    sink.failing = True
    async with MllpServer(settings(), sink) as server, MllpClient("127.0.0.1", server.port) as client:
        ack = parse_ack(await client.send(b"not hl7 at all", timeout=5))
    assert ack.code == "AR" and sink.records == []


async def test_idle_timeout_closes_the_connection(sink: MemorySink) -> None:
    async with MllpServer(settings(idle_timeout=0.3), sink) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x0bMSH|^~\\&|half a frame")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the listener
        writer.close()
    assert [d.reason for d in sink.dead_letters()] == ["truncated_frame"]


async def test_graceful_stop_finishes_the_frame_in_flight(sink: MemorySink) -> None:
    sink.gate = asyncio.Event()
    server = MllpServer(settings(), sink)
    await server.start()
    busy = MllpClient("127.0.0.1", server.port)
    idle = MllpClient("127.0.0.1", server.port)
    await idle.connect()
    sending = asyncio.create_task(busy.send(ADT, timeout=5))
    while sink.puts_started == 0:
        await asyncio.sleep(0.01)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()
    with pytest.raises(OSError):  # no longer accepting
        await asyncio.open_connection("127.0.0.1", server.port)
    sink.gate.set()
    assert parse_ack(await sending).code == "AA"
    await asyncio.wait_for(stopping, 5)
    with pytest.raises((MllpConnectionError, ConnectionError)):
        await idle.send(ADT, timeout=2)
    await busy.close()
    await idle.close()
    assert len(sink.inbound()) == 1


async def test_serve_stops_on_event(sink: MemorySink) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings(port=0), sink=sink, stop=stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_many_connections_in_parallel(sink: MemorySink) -> None:
    async with MllpServer(settings(), sink) as server:

        async def sender(n: int) -> list[str]:
            async with MllpClient("127.0.0.1", server.port) as client:
                return [
                    parse_ack(await client.send(with_control_id(ADT, f"C{n}-{i}"), timeout=5)).code for i in range(20)
                ]

        results = await asyncio.gather(*(sender(n) for n in range(20)))
    assert all(code == "AA" for codes in results for code in codes)
    assert len(sink.inbound()) == 400


async def test_metrics_count(sink: MemorySink) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"listener": "mllp", **labels}) or 0.0

    before = (
        value("medroute_listener_received_total"),
        value("medroute_listener_acknowledged_total", code="AA"),
        value("medroute_listener_negative_total", reason="no_msh"),
        value("medroute_listener_dead_lettered_total", reason="no_msh"),
        value("medroute_listener_discarded_bytes_total"),
        value("medroute_listener_ack_latency_seconds_count"),
    )
    async with MllpServer(settings(), sink) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"xyz\x0b" + with_control_id(ADT, "M1") + b"\x1c\r\x0bPID|1\x1c\r")
        await writer.drain()
        for _ in range(2):
            await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 5)
        writer.close()
    after = (
        value("medroute_listener_received_total"),
        value("medroute_listener_acknowledged_total", code="AA"),
        value("medroute_listener_negative_total", reason="no_msh"),
        value("medroute_listener_dead_lettered_total", reason="no_msh"),
        value("medroute_listener_discarded_bytes_total"),
        value("medroute_listener_ack_latency_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 1, 3, 2]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls(sink: MemorySink, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(cafile=str(cert))
    async with MllpServer(settings(tls_cert=str(cert), tls_key=str(key)), sink) as server:
        async with MllpClient("127.0.0.1", server.port, tls=context, server_hostname="localhost") as client:
            assert parse_ack(await client.send(ADT, timeout=5)).code == "AA"
        plain = MllpClient("127.0.0.1", server.port)  # a client without TLS gets no answer
        with pytest.raises((MllpConnectionError, ConnectionError, TimeoutError)):
            await plain.send(ADT, timeout=2)
        await plain.close()
    assert len(sink.inbound()) == 1


def test_strict_details_carry_no_field_values() -> None:
    from formats.hl7 import validate
    from formats.hl7.errors import MessageError
    from formats.hl7.message import read_message

    text = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|C1|P|2.5.1\rEVN|A01|20240101\rPID|1||X||N^J||SECRETDATE\r"
    with pytest.raises(MessageError) as info:
        validate.validate(read_message(text))
    assert "SECRETDATE" not in info.value.detail and info.value.reason.code == "not_conformant"


async def test_shared_window_entry_is_written_and_flushed_at_stop(sink: MemorySink) -> None:
    stop = asyncio.Event()
    port = free_port()
    task = asyncio.create_task(serve(settings(port=port), sink=sink, stop=stop))
    await asyncio.sleep(0.3)
    async with MllpClient("127.0.0.1", port) as client:
        assert parse_ack(await client.send(with_control_id(ADT, "SHARE0001"), timeout=5)).code == "AA"
    stop.set()
    await asyncio.wait_for(task, 10)
    ((key, value),) = sink.on(HL7_RECEIVED_IDS)
    assert key == identity_key("ADTSYS", "GENHOSP", "SHARE0001").encode()
    assert json.loads(value)["message_id"] == sink.inbound()[0].message_id
