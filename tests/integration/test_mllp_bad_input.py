"""Bad input against the real listener process and the real broker.

Each case sends something wrong and checks: the protocol's answer (negative ACK code, ERR-3, MSA-2, or
what happens to the connection for pure framing errors), a dead letter on ``hl7.deadletter`` with the
raw bytes and the reason code, a reject audit event, and that the listener still answers a valid
message with AA afterwards and stores that message on ``hl7.inbound``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medroute.config import AUDIT_EVENTS, HL7_DEADLETTER, HL7_INBOUND, KafkaSettings
from medroute.kafka.client import consumer
from medroute.records import utc_now
from tests.integration.conftest import RunningListener, start_listener
from tests.integration.mllp_peers import parse_ack

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
MAX_FRAME = 64 * 1024
START, END = b"\x0b", b"\x1c\r"


class TopicCollector:
    """Reads topics from the beginning in a background thread, so each case can wait for its record
    without re-reading the topics."""

    def __init__(self, settings: KafkaSettings, topics: tuple[str, ...]) -> None:
        self._settings = settings
        self._topics = topics
        self._records: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        assert self._ready.wait(60), "consumer did not start"

    async def _run(self) -> None:
        # Without a group, a subscription is assigned every partition, read from the earliest offset.
        reader = consumer(self._settings)
        reader.subscribe(list(self._topics))
        await reader.start()
        try:
            while not self._stop.is_set():
                batches = await reader.getmany(timeout_ms=200)
                if reader.assignment():
                    self._ready.set()
                for tp, batch in batches.items():
                    with self._lock:
                        for message in batch:
                            record = json.loads(message.value)
                            record["_key"] = message.key.decode() if message.key else None
                            self._records[tp.topic].append(record)
        finally:
            await reader.stop()

    def wait_for(self, topic: str, match: Callable[[dict[str, Any]], bool], timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [r for r in self._records[topic] if match(r)]
            if found:
                time.sleep(0.3)  # let any unexpected second copy arrive too
                with self._lock:
                    return [r for r in self._records[topic] if match(r)]
            time.sleep(0.05)
        raise AssertionError(f"no matching record on {topic} within {timeout}s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def listener(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningListener]:
    running = start_listener(
        kafka.bootstrap_servers, str(tmp_path_factory.mktemp("bad-input")), MEDROUTE_MLLP_MAX_FRAME=str(MAX_FRAME)
    )
    yield running
    assert running.process.stop() == 0, running.process.log()[-3000:]  # clean SIGTERM shutdown


@pytest.fixture(scope="module")
def topics(kafka: KafkaSettings) -> Iterator[TopicCollector]:
    collector = TopicCollector(kafka, (HL7_INBOUND, HL7_DEADLETTER, AUDIT_EVENTS))
    yield collector
    collector.close()


def valid_message() -> tuple[bytes, str]:
    control_id = f"OK{uuid.uuid4().hex[:16]}"
    raw = (FIXTURES / "adt_a01.hl7").read_bytes().replace(b"|ADT000123|", f"|{control_id}|".encode())
    return raw, control_id


def msh(rest: str = "ADT^A01^ADT_A01|{cid}|P|2.5.1", delimiters: str = "|^~\\&") -> str:
    f = delimiters[0]
    return f"MSH{delimiters}{f}LAB{f}HOSP{f}MEDROUTE{f}HOSP{f}20240101120000{f}{f}" + rest.replace("|", f)


PID = "\rPID|1||MRN-BAD-1^^^HOSP^MR||INVENTED^PERSON\r"


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes  # the frame content; for "stream"/"eof" cases the exact bytes written
    reason: str  # dead-letter reason code
    code: str | None  # MSA-1 expected, None: no answer
    error: str | None = None  # ERR-3.1
    echoes_control_id: bool = True  # MSA-2 == the control id written into the payload
    mode: str = "frame"  # frame: wrapped; stream: written as is, then a valid frame on the same write;
    # eof: written as is, then the connection is half-closed
    raw: bytes | None = None  # expected dead-letter raw when it differs from payload


def hl7(text: str, encoding: str = "ascii") -> bytes:
    return text.encode(encoding)


CID = "BADCASE1"
GB_TEXT = "OBX|1|TX|CT^胸部CT^L||诊断意见：未见异常。||||||F"
_garbage = bytes(b for b in random.Random(5).randbytes(400) if b not in (0x0B, 0x1C))
_big = hl7(msh().format(cid=CID) + PID) + b"OBX|1|TX|||" + b"x" * (MAX_FRAME + 5000) + b"\r"

CASES = [
    Case("no_msh", hl7("PID|1||MRN1\rOBX|1|TX|||text\r"), "no_msh", "AR", "100", False),
    Case("non_hl7_text", b"Dear colleague, please find the report attached.", "no_msh", "AR", "100", False),
    Case("binary_garbage", _garbage, "no_msh", "AR", "100", False),
    Case("leading_space", hl7(" " + msh().format(cid=CID) + PID), "no_msh", "AR", "100", False),
    Case("empty_message", b"", "empty_message", "AR", "100", False),
    Case("blank_lines_only", b"\r\n\r\n", "empty_message", "AR", "100", False),
    Case("msh_only_3_chars", b"MSH", "bad_delimiters", "AR", "102", False),
    Case("msh_2_too_short", hl7(msh(delimiters="|^~").format(cid=CID) + PID), "bad_delimiters", "AR", "102"),
    Case("repeated_delimiter", hl7(msh(delimiters="|^^\\&").format(cid=CID) + PID), "bad_delimiters", "AR", "102"),
    Case("alphanumeric_delimiter", hl7(msh(delimiters="|a~\\&").format(cid=CID) + PID), "bad_delimiters", "AR", "102"),
    Case(
        "space_as_field_separator",
        hl7(msh(delimiters=" ^~\\&").format(cid=CID) + PID),
        "bad_delimiters",
        "AR",
        "102",
        False,
    ),
    Case("missing_msh_9", hl7(msh("|{cid}|P|2.5.1").format(cid=CID) + PID), "missing_message_type", "AR", "101"),
    Case("malformed_msh_9", hl7(msh("A01|{cid}|P|2.5.1").format(cid=CID) + PID), "bad_message_type", "AR", "102"),
    Case("missing_msh_10", hl7(msh("ADT^A01||P|2.5.1") + PID), "missing_control_id", "AR", "101", False),
    Case(
        "unsupported_version", hl7(msh("ADT^A01|{cid}|P|3.0").format(cid=CID) + PID), "unsupported_version", "AR", "203"
    ),
    Case(
        "batch_fhs",
        hl7("FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r" + msh().format(cid=CID) + PID + "BTS|1\rFTS|1\r"),
        "batch_not_supported",
        "AR",
        "200",
        False,
    ),
    Case(
        "batch_bhs",
        hl7("BHS|^~\\&|LAB\r" + msh().format(cid=CID) + PID + "BTS|1\r"),
        "batch_not_supported",
        "AR",
        "200",
        False,
    ),
    Case("batch_trailer_inside", hl7(msh().format(cid=CID) + PID + "BTS|1\r"), "batch_not_supported", "AR", "200"),
    Case("lowercase_segment", hl7(msh().format(cid=CID) + "\rpid|1||MRN1\r"), "bad_segment_name", "AR", "100"),
    Case("two_char_segment", hl7(msh().format(cid=CID) + "\rPI|1\r"), "bad_segment_name", "AR", "100"),
    Case(
        "two_messages_one_frame",
        hl7(msh().format(cid=CID) + PID + msh().format(cid="OTHER") + PID),
        "bad_segment_name",
        "AR",
        "100",
    ),
    Case(
        "unknown_charset",
        hl7(msh("ADT^A01|{cid}|P|2.5.1|||||XXX|KLINGON").format(cid=CID) + PID),
        "unknown_charset",
        "AR",
        "103",
    ),
    Case(
        "utf16_declared",
        hl7(msh("ADT^A01|{cid}|P|2.5.1|||||XXX|UNICODE UTF-16").format(cid=CID) + PID),
        "unknown_charset",
        "AR",
        "103",
    ),
    Case(
        "iso_8859_12",
        hl7(msh("ADT^A01|{cid}|P|2.5.1|||||XXX|8859/12").format(cid=CID) + PID),
        "unknown_charset",
        "AR",
        "103",
    ),
    Case(
        "utf8_declared_gb18030_bytes",
        hl7(msh("ORU^R01|{cid}|P|2.5.1|||||CHN|UNICODE UTF-8").format(cid=CID) + PID + GB_TEXT + "\r", "gb18030"),
        "undecodable",
        "AE",
        "102",
    ),
    Case(
        "bom_with_latin1_declared",
        b"\xef\xbb\xbf" + hl7(msh("ADT^A01|{cid}|P|2.5.1|||||X|8859/1").format(cid=CID)),
        "undecodable",
        "AE",
        "102",
    ),
    Case("nul_bytes", hl7(msh().format(cid=CID) + PID + "NTE|1||a\x00\x00b\r"), "control_characters", "AE", "102"),
    Case(
        "lone_file_separator", hl7(msh().format(cid=CID) + PID + "NTE|1||a\x1cb\r"), "control_characters", "AE", "102"
    ),
    Case(
        "enhanced_al_bad_segment",
        hl7(msh("ADT^A01|{cid}|P|2.5.1|||AL|NE").format(cid=CID) + "\rpid|1\r"),
        "bad_segment_name",
        "CR",
        "100",
    ),
    Case(
        "enhanced_er_content_error",
        hl7(msh("ADT^A01|{cid}|P|2.5.1|||ER|NE").format(cid=CID) + PID + "NTE|1||x\x01y\r"),
        "control_characters",
        "CE",
        "102",
    ),
    Case(
        "enhanced_ne_error_no_answer",
        hl7(msh("ADT^A01|{cid}|P|2.5.1|||NE|NE").format(cid=CID) + "\rpid|1\r"),
        "bad_segment_name",
        None,
    ),
    Case("oversize_frame", _big, "frame_too_large", "AR", "104", raw=_big[:MAX_FRAME]),
    Case(
        "junk_before_start_block",
        b"\x00\x01 junk from a confused sender ",
        "junk_before_start_block",
        None,
        mode="stream",
    ),
    Case(
        "http_request_to_mllp_port",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "junk_before_start_block",
        None,
        mode="stream",
    ),
    Case("unframed_hl7", hl7(msh().format(cid=CID) + PID), "junk_before_start_block", None, mode="stream"),
    Case(
        "truncated_by_new_start_block",
        START + hl7(msh().format(cid=CID) + "\rPID|1||MRN"),
        "truncated_frame",
        None,
        mode="stream",
        raw=hl7(msh().format(cid=CID) + "\rPID|1||MRN"),
    ),
    Case(
        "truncated_frame_at_eof",
        START + hl7(msh().format(cid=CID) + "\rPID|1||MRN"),
        "truncated_frame",
        None,
        mode="eof",
        raw=hl7(msh().format(cid=CID) + "\rPID|1||MRN"),
    ),
    Case(
        "end_block_without_cr_at_eof",
        START + hl7(msh().format(cid=CID) + PID) + b"\x1c",
        "truncated_frame",
        None,
        mode="eof",
        raw=hl7(msh().format(cid=CID) + PID) + b"\x1c",
    ),
]


def test_there_are_at_least_30_distinct_cases() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 30
    assert len({(c.payload, c.mode) for c in CASES}) == len(CASES)


async def _exchange(port: int, case: Case, valid: bytes) -> tuple[str, list[bytes], bool]:
    """Send the case (and, where framing allows, the valid message on the same connection).
    Returns the client's address (the listener's "peer"), the frames received, and whether the
    valid message was already sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host, local_port = writer.get_extra_info("sockname")[:2]
    frames: list[bytes] = []
    try:
        if case.mode == "eof":
            writer.write(case.payload)
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), 15)  # the listener closes without an answer
            assert rest == b"", rest
            return f"{host}:{local_port}", frames, False
        first = START + case.payload + END if case.mode == "frame" else case.payload
        writer.write(first + START + valid + END)
        await writer.drain()
        expected = 2 if case.code is not None else 1
        for _ in range(expected):
            frames.append(await asyncio.wait_for(reader.readuntil(END), 15))
        return f"{host}:{local_port}", frames, True
    finally:
        writer.close()


async def _send_valid(port: int, valid: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(START + valid + END)
        return await asyncio.wait_for(reader.readuntil(END), 15)
    finally:
        writer.close()


def _raw(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["raw"])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, listener: RunningListener, topics: TopicCollector) -> None:
    valid, valid_id = valid_message()
    started = utc_now()  # a client port is reused in a long session: the peer alone names no connection
    peer, frames, valid_sent = asyncio.run(_exchange(listener.port, case, valid))
    if not valid_sent:  # the connection is gone (EOF case): the listener must serve a new one
        frames.append(asyncio.run(_send_valid(listener.port, valid)))

    # The answer to the bad input, then AA for the valid message.
    if case.code is None:
        assert len(frames) == 1
    else:
        assert len(frames) == 2
        code, control_id = parse_ack(frames[0])
        assert code == case.code
        assert control_id == (CID if case.echoes_control_id else "")
        err = [s for s in frames[0].split(b"\r") if s.startswith(b"ERR")]
        assert err and err[0].split(b"|")[3].split(b"^")[0].decode() == case.error
        assert frames[0].startswith(b"\x0bMSH|^~\\&|")  # a well-formed HL7 ACK even for garbage
    assert parse_ack(frames[-1]) == ("AA", valid_id)

    # The dead letter: raw bytes and reason, from this connection.
    (dead,) = topics.wait_for(HL7_DEADLETTER, lambda r: r["peer"] == peer and r["received_at"] >= started)
    assert dead["reason"] == case.reason and dead["source"] == "mllp"
    assert _raw(dead) == (case.raw if case.raw is not None else case.payload)
    assert dead["detail"] and "INVENTED" not in dead["detail"] and "MRN-BAD" not in dead["detail"]

    # The reject audit event, tied to the dead letter, without PHI.
    (audit,) = topics.wait_for(AUDIT_EVENTS, lambda r: r.get("message_id") == dead["message_id"])
    assert audit["action"] == "reject" and audit["actor"] == "listener.mllp"
    assert audit["details"]["reason"] == case.reason
    assert "INVENTED" not in json.dumps(audit) and "MRN-BAD" not in json.dumps(audit)

    # The valid message after it was stored, once, keyed by patient.
    (stored,) = topics.wait_for(HL7_INBOUND, lambda r: r["control_id"] == valid_id)
    assert stored["_key"] == "MRN100234" and base64.b64decode(stored["raw"]) == valid


def test_listener_log_has_no_phi(listener: RunningListener) -> None:
    log = listener.process.log()
    assert "mllp.frame_rejected" in log
    for phi in ("INVENTED", "MRN-BAD", "MRN100234", "TESTPATIENT", "诊断"):
        assert phi not in log
