"""Coverage-seeking property tests (hypothesis) of everything that reads bytes from the network: MLLP
framing, HL7 charsets, the message reader, escapes, the intake as a whole, and the DICOM dataset reader.

Each property is bounded (``max_examples``) so that the whole file runs in well under a minute on a small
CI host; ``derandomize`` keeps CI reproducible, ``FUZZ_EXAMPLES`` raises the bound for a longer local run.
Any crash hypothesis finds is pinned below it as an ``@example`` (a regression test).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
from pathlib import Path

import pydicom
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from formats.hl7 import charsets
from formats.hl7.ack import build_ack
from formats.hl7.delimiters import Delimiters
from formats.hl7.errors import MessageError, Outcome
from formats.hl7.escapes import escape, unescape
from formats.hl7.message import read_message
from formats.hl7.mllp import Frame, FrameError, MllpDecoder, wrap
from listeners.dicom.dataset import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DatasetError,
    read_header,
)
from listeners.mllp.intake import Intake
from listeners.mllp.settings import MllpSettings
from medroute.config import HL7_DEADLETTER, HL7_INBOUND
from tests.unit.test_mllp_server import MemorySink

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
SEEDS = sorted(p.read_bytes() for p in FIXTURES.glob("*.hl7"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
# CI: the same examples every run; a longer local run (FUZZ_EXAMPLES=...) explores new ones.
DERANDOMIZE = "FUZZ_EXAMPLES" not in os.environ
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow]
)
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

# -- MLLP framing ----------------------------------------------------------------------------------

payloads = st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
junk = st.binary(max_size=20).map(lambda b: b.replace(b"\x0b", b""))


def _feed(stream: bytes, cuts: list[int], max_frame: int = 1024) -> list[Frame | FrameError]:
    decoder = MllpDecoder(max_frame=max_frame)
    events: list[Frame | FrameError] = []
    bounds = [0, *sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]
    for start, end in itertools.pairwise(bounds):
        events += decoder.feed(stream[start:end])
    return events + decoder.close()


@FUZZ
@given(st.lists(st.tuples(junk, payloads), max_size=6), st.lists(st.integers(0, 5000), max_size=8))
def test_framing_recovers_every_frame_whatever_the_junk_and_reads(
    frames: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(j + wrap(p) for j, p in frames)
    events = _feed(stream, cuts)
    assert [e.payload for e in events if isinstance(e, Frame)] == [p for _, p in frames]


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 5000), max_size=8), st.integers(16, 200))
@example(b"\x0b\x1c", [1], 16)
@example(b"\x0b" + b"a" * 40 + b"\x1c\r", [20], 16)
def test_framing_is_independent_of_how_the_stream_is_split(stream: bytes, cuts: list[int], max_frame: int) -> None:
    whole = _feed(stream, [], max_frame)
    split = _feed(stream, cuts, max_frame)
    assert [e.payload for e in split if isinstance(e, Frame)] == [e.payload for e in whole if isinstance(e, Frame)]
    for event in split:
        if isinstance(event, FrameError):
            assert len(event.raw) <= max_frame + 2


# -- HL7: charsets, reader, ACK, escapes ----------------------------------------------------------

MSH18 = st.sampled_from(["", "ASCII", "UNICODE UTF-8", "8859/1", "8859/15", "GB 18030-2000", "ISO IR87", "ISO IR13"])
FIELD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def _message(msh18: str, fields: list[str], segment_end: str) -> str:
    body = segment_end.join(f"OBX|{n}|TX|||{value}" for n, value in enumerate(fields, 1))
    return f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C1|P|2.5.1|||||XXX|{msh18}{segment_end}PID|1||P1{segment_end}{body}"


def _mutations(seed: bytes, data: st.DataObject) -> bytes:
    raw = bytearray(seed)
    for _ in range(data.draw(st.integers(0, 6))):
        if not raw:
            break
        pos = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[pos:pos] = data.draw(st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\xff", b"MSH|"]))
        elif action == "delete":
            del raw[pos]
        else:
            del raw[pos:]
    return bytes(raw)


def _read_as_the_listener_does(raw: bytes, fallback: str | None) -> None:
    """Decode, read and answer: only :class:`MessageError` may come out, and what decodes round-trips."""
    try:
        decoded = charsets.decode(raw, fallback=fallback)
    except MessageError:
        return
    assert raw.decode(decoded.codec) == decoded.text  # what Hl7Record.text() does in the worker
    try:
        message = read_message(decoded.text)
    except MessageError:
        return
    charsets.encode(build_ack(message.header, Outcome.ACCEPT), decoded.codec)
    message.patient_id  # noqa: B018 - the record key is read from every accepted message


@FUZZ
@given(st.sampled_from(SEEDS), st.data(), st.sampled_from([None, charsets.DEFAULT_FALLBACK, "GB 18030-2000"]))
def test_mutated_fixtures_never_crash_the_reader(seed: bytes, data: st.DataObject, fallback: str | None) -> None:
    _read_as_the_listener_does(_mutations(seed, data), fallback)


@FUZZ
@given(
    MSH18,
    st.lists(FIELD_TEXT, max_size=4),
    st.sampled_from(["\r", "\n", "\r\n"]),
    st.sampled_from(["utf-8", "latin-1", "gb18030"]),
)
def test_generated_messages_in_any_encoding_never_crash_the_reader(
    msh18: str, fields: list[str], segment_end: str, codec: str
) -> None:
    raw = _message(msh18, fields, segment_end).encode(codec, errors="replace")
    _read_as_the_listener_does(raw, charsets.DEFAULT_FALLBACK)
    _read_as_the_listener_does(raw, None)


DELIMITERS = Delimiters(field="|", component="^", repetition="~", escape="\\", subcomponent="&", truncation="#")


@FUZZ
@given(st.text(max_size=80).map(lambda s: s.replace("\r", "").replace("\n", "")))
def test_escape_then_unescape_is_the_identity(value: str) -> None:
    escaped = escape(value, DELIMITERS)
    assert not set("|^~&#") & set(escaped.replace("\\F\\", "").replace("\\S\\", "").replace("\\R\\", ""))
    assert unescape(escaped, DELIMITERS) == value


@FUZZ
@given(st.text(alphabet=st.sampled_from("\\XFSRTEHN.brsp0123456789ABCDEFabcdefZ |^~&"), max_size=60))
@example("\\X\\")
@example("\\.sp 99999999\\")
@example("\\Xzz\\")
def test_unescape_of_anything_never_crashes(value: str) -> None:
    for encoding in ("ascii", "utf-8", "gb18030", "iso2022_jp"):
        assert isinstance(unescape(value, DELIMITERS, encoding), str)


@settings(max_examples=max(EXAMPLES // 3, 20), deadline=None, derandomize=DERANDOMIZE)
@given(st.sampled_from(SEEDS), st.data(), st.booleans())
def test_intake_answers_or_dead_letters_every_frame(seed: bytes, data: st.DataObject, strict: bool) -> None:
    """Whatever a frame holds, the intake never raises, and it ends either on hl7.inbound or on hl7.deadletter."""
    raw = _mutations(seed, data)
    sink = MemorySink()
    intake = Intake(sink, MllpSettings(port=0, dedup_window=0, strict=strict))
    answer = asyncio.run(intake.handle_frame(raw, "127.0.0.1:1"))
    assert answer is None or answer.startswith(b"MSH")
    assert len(sink.on(HL7_INBOUND)) + len(sink.on(HL7_DEADLETTER)) == 1


# -- DICOM dataset reader ------------------------------------------------------------------------


def _dataset(name: str) -> tuple[bytes, str]:
    path = get_testdata_file(name)
    assert path is not None
    raw = Path(path).read_bytes()
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return raw[132 + 12 + meta.FileMetaInformationGroupLength :], str(meta.TransferSyntaxUID)


DATASETS = [_dataset(n) for n in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm")]
SYNTAXES = [
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
]


def _read(dataset: bytes, syntax: str) -> None:
    try:
        header = read_header(dataset, syntax)
    except DatasetError as exc:
        assert exc.reason in {"not_dicom", "truncated", "malformed_dataset", "missing_attribute"}
        return
    assert header.sop_instance_uid and header.study_uid


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(SYNTAXES))
@example(b"\x08\x00\x18\x00UI\xff\xff", EXPLICIT_VR_LITTLE_ENDIAN)
@example(b"\xfe\xff\x00\xe0\xff\xff\xff\xff", IMPLICIT_VR_LITTLE_ENDIAN)
def test_dataset_reader_on_random_bytes(data: bytes, syntax: str) -> None:
    _read(data, syntax)


@FUZZ
@given(st.sampled_from(DATASETS), st.data())
def test_dataset_reader_on_mutated_datasets(sample: tuple[bytes, str], data: st.DataObject) -> None:
    dataset, syntax = sample
    raw = bytearray(dataset[:4096])  # the header region, where lengths and nesting live
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 4))
        kind = data.draw(st.sampled_from(["byte", "length", "undefined", "truncate"]))
        if kind == "byte":
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "length":
            raw[pos : pos + 4] = struct.pack("<I", data.draw(st.integers(0, 2**32 - 1)))
        elif kind == "undefined":
            raw[pos : pos + 4] = b"\xff\xff\xff\xff"
        else:
            del raw[pos:]
            break
    _read(bytes(raw) + dataset[4096:] if len(raw) == 4096 else bytes(raw), syntax)
