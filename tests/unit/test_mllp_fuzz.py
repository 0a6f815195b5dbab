"""Property tests with fixed seeds: mutated messages never crash the parsers, and the framing decoder
never loses a valid frame whatever junk and read boundaries surround it."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

from formats.hl7 import charsets
from formats.hl7.ack import build_ack
from formats.hl7.errors import MessageError, Outcome, Reason
from formats.hl7.message import read_header, read_message
from formats.hl7.mllp import Frame, FrameError, MllpDecoder, wrap
from listeners.mllp.intake import Intake
from listeners.mllp.settings import MllpSettings
from medroute.config import HL7_DEADLETTER, HL7_INBOUND

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
SEEDS = sorted(p.read_bytes() for p in FIXTURES.glob("*.hl7"))
INTERESTING = [
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\x0b",
    b"\x1c",
    b"MSH",
    b"PID|",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\x80",
    b"\x1b$B",
    b"FHS|",
    b"#",
    b" ",
    b"8859/1",
    b"UNICODE UTF-8",
]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a byte
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:  # insert an interesting token
            data[pos:pos] = rng.choice(INTERESTING)
        elif op == 2 and data:  # delete a run
            del data[pos : pos + rng.randint(1, 20)]
        elif op == 3:  # truncate
            del data[pos:]
        elif op == 4 and data:  # duplicate a run
            end = min(len(data), pos + rng.randint(1, 40))
            data[end:end] = data[pos:end]
        elif op == 5:  # change segment endings
            data = bytearray(bytes(data).replace(b"\r", rng.choice([b"\n", b"\r\n", b""])))
        elif op == 6 and len(data) > 8:  # change a delimiter in MSH-1/MSH-2
            data[rng.randrange(3, 8)] = rng.randrange(32, 127)
        else:  # random bytes
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
    return bytes(data)


def test_mutated_messages_raise_only_message_error() -> None:
    outcomes = {"accepted": 0, "refused": 0}
    for seed in range(6000):
        rng = random.Random(seed)
        raw = mutate(rng, rng.choice(SEEDS))
        try:
            decoded = charsets.decode(raw, rng.choice(["ASCII", "UNICODE UTF-8", "8859/1"]))
            message = read_message(decoded.text)
        except MessageError as exc:
            assert isinstance(exc.reason, Reason) and exc.detail
            outcomes["refused"] += 1
            header = read_header(raw.decode("latin-1"))
            ack = build_ack(header, exc.reason.outcome, exc.reason, exc.detail, exc.location)
        else:
            outcomes["accepted"] += 1
            assert message.header.control_id and message.header.message_code
            header = message.header
            ack = build_ack(header, Outcome.ACCEPT)
        assert ack.startswith("MSH") and "\rMSA" in ack and ack.endswith("\r")
    assert outcomes["accepted"] > 500 and outcomes["refused"] > 500  # the mutations exercise both paths


def test_random_text_raises_only_message_error() -> None:
    rng = random.Random(7)
    alphabet = "MSH|^~\\&\r\nPID0123ABCxyz \x00\x1b€中"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        if rng.random() < 0.5:
            text = "MSH" + text
        with contextlib.suppress(MessageError):
            read_message(text)
        read_header(text)


def test_framing_never_loses_a_valid_frame() -> None:
    for seed in range(1500):
        rng = random.Random(seed)
        payloads = [
            bytes(rng.choice(b"MSH|^~\\&\rPID123 abc\n\xc3\xa9") for _ in range(rng.randint(0, 300)))
            for _ in range(rng.randint(1, 6))
        ]
        stream = bytearray()
        for payload in payloads:
            if rng.random() < 0.4:  # junk between frames: anything without a start block
                stream += bytes(b for b in rng.randbytes(rng.randint(1, 30)) if b != 0x0B)
            stream += wrap(payload)
        decoder = MllpDecoder(max_frame=rng.choice([300, 1000, 16 * 1024 * 1024]))
        events: list[Frame | FrameError] = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 64)
            events += decoder.feed(bytes(stream[pos : pos + step]))
            pos += step
        events += decoder.close()
        frames = [e.payload for e in events if isinstance(e, Frame)]
        assert frames == payloads, seed
        errors = [e for e in events if isinstance(e, FrameError)]
        assert all(e.reason.code == "junk_before_start_block" for e in errors)


def test_framing_with_broken_frames_still_delivers_later_valid_ones() -> None:
    for seed in range(1000):
        rng = random.Random(seed)
        valid = b"MSH|^~\\&|OK|" + str(seed).encode()
        broken = rng.choice([b"\x0bMSH|cut", b"\x0b" + b"x" * 400 + b"\x1c\r", b"\x1c\r", b"\x1c", b"junk\x00"])
        stream = broken + wrap(valid)
        decoder = MllpDecoder(max_frame=200)
        events: list[Frame | FrameError] = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 50)
            events += decoder.feed(stream[pos : pos + step])
            pos += step
        events += decoder.close()
        assert [e.payload for e in events if isinstance(e, Frame)][-1:] == [valid], (seed, broken)


class _Sink:
    def __init__(self) -> None:
        self.topics: list[str] = []

    async def put(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.topics.append(topic)


def test_intake_answers_every_mutated_frame() -> None:
    async def run() -> None:
        sink = _Sink()
        intake = Intake(sink, MllpSettings(port=0, dedup_window=0))
        for seed in range(1500):
            rng = random.Random(10_000 + seed)
            raw = mutate(rng, rng.choice(SEEDS))
            before = len(sink.topics)
            ack = await intake.handle_frame(raw, "127.0.0.1:1")
            written = sink.topics[before:]
            assert (HL7_INBOUND in written) != (HL7_DEADLETTER in written)  # stored xor dead-lettered
            if ack is not None:  # None only when enhanced mode asked for no accept ack
                assert ack.startswith(b"MSH") and b"MSA" in ack

    asyncio.run(run())
