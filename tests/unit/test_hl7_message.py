"""Fast-path parse: delimiters, header fields, PID-3, structure errors, line endings."""

from __future__ import annotations

from pathlib import Path

import pytest

from formats.hl7 import charsets
from formats.hl7.delimiters import Delimiters
from formats.hl7.errors import MessageError
from formats.hl7.message import MshHeader, read_header, read_message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"

ADT = (
    "MSH|^~\\&|ADTSYS|GENHOSP^1.2.3^ISO|MEDROUTE|GENHOSP|20240301083015||ADT^A01^ADT_A01|CTRL1|P|2.5.1|||AL|NE||8859/1\r"
    "EVN|A01|20240301083000\r"
    "PID|1||MRN1^^^HOSP^MR~ALT2^^^NHS^NH||TEST^ALICE\r"
    "ZPI|custom\\F\\escape\r"
)


def refused(text: str) -> MessageError:
    with pytest.raises(MessageError) as info:
        read_message(text)
    return info.value


def test_header_fields() -> None:
    message = read_message(ADT)
    h = message.header
    assert h.delimiters == Delimiters()
    assert (h.sending_application, h.sending_facility) == ("ADTSYS", "GENHOSP^1.2.3^ISO")
    assert (h.receiving_application, h.receiving_facility) == ("MEDROUTE", "GENHOSP")
    assert h.message_type == "ADT^A01^ADT_A01" and h.message_code == "ADT" and h.trigger_event == "A01"
    assert (h.control_id, h.processing_id, h.version, h.version_id) == ("CTRL1", "P", "2.5.1", "2.5.1")
    assert (h.accept_ack_type, h.application_ack_type, h.charset) == ("AL", "NE", "8859/1")
    assert h.enhanced_mode
    assert message.patient_id == "MRN1"
    assert [s[:3] for s in message.segments] == ["MSH", "EVN", "PID", "ZPI"]


def test_escape_sequences_left_intact() -> None:
    message = read_message(ADT)
    assert message.segments[3] == "ZPI|custom\\F\\escape"


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_segment_endings(ending: str) -> None:
    message = read_message(ADT.replace("\r", ending))
    assert message.patient_id == "MRN1" and len(message.segments) == 4
    assert message.normalized() == ADT


def test_custom_delimiters() -> None:
    text = (
        "MSH#$%*!#LAB#HOSP#MR#HOSP#20240101##ORU$R01#C9#P#2.5\r"
        "PID#1##ID7$$$AUTH%ID8#|not^a~separator\r"
        "NTE#1##escaped *F* text\r"
    )
    message = read_message(text)
    d = message.header.delimiters
    assert (d.field, d.component, d.repetition, d.escape, d.subcomponent) == ("#", "$", "%", "*", "!")
    assert d.encoding_characters == "$%*!"
    assert message.header.message_code == "ORU" and message.header.trigger_event == "R01"
    assert message.patient_id == "ID7"
    assert message.segments[2].endswith("*F* text")


def test_truncation_character() -> None:
    message = read_message("MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|C1|P|2.7\r")
    assert message.header.delimiters.truncation == "#"
    assert message.header.delimiters.encoding_characters == "^~\\&#"


def test_patient_id_absent_or_empty() -> None:
    assert read_message("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\r").patient_id is None
    assert read_message("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rPID|1\r").patient_id is None
    assert read_message("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rPID|1||~SECOND\r").patient_id is None


def test_repetitions_take_the_first() -> None:
    text = "MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rPID|1||FIRST^^^A~SECOND^^^B\r"
    assert read_message(text).patient_id == "FIRST"


def test_z_segments_and_digits_in_names() -> None:
    text = "MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rPV1|1\rZB1|x\rIN1|1\r"
    assert len(read_message(text).segments) == 4


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty_message"),
        ("\r\n  \r", "empty_message"),
        ("PID|1||X\r", "no_msh"),
        (" MSH|^~\\&|A\r", "no_msh"),
        ("Hello, world", "no_msh"),
        ("FHS|^~\\&|A\rBHS|^~\\&\rMSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rBTS|1\rFTS|1\r", "batch_not_supported"),
        ("BHS|^~\\&|A\r", "batch_not_supported"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rBTS|1\r", "batch_not_supported"),
        ("MSH", "bad_delimiters"),
        ("MSH|^~\\", "bad_delimiters"),
        ("MSH|^~|A|B|C|D|1||ADT^A01|C1|P|2.5\r", "bad_delimiters"),
        ("MSH|^~\\&$%|A|B|C|D|1||ADT^A01|C1|P|2.5\r", "bad_delimiters"),
        ("MSH|^^\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\r", "bad_delimiters"),
        ("MSHA^~\\&AAA\r", "bad_delimiters"),
        ("MSH|a~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\r", "bad_delimiters"),
        ("MSH ^~\\& A B\r", "bad_delimiters"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rpid|1||X\r", "bad_segment_name"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rPI|1\r", "bad_segment_name"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rPIDX|1\r", "bad_segment_name"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rMSH|^~\\&|A|B|C|D|1||ADT^A01|C2|P|2.5\r", "bad_segment_name"),
        ("MSH|^~\\&|A|B|C|D|1|||C1|P|2.5\r", "missing_message_type"),
        ("MSH|^~\\&|A|B|C|D|1||^^|C1|P|2.5\r", "missing_message_type"),
        ("MSH|^~\\&|A|B|C|D|1\r", "missing_message_type"),
        ("MSH|^~\\&|A|B|C|D|1||A01|C1|P|2.5\r", "bad_message_type"),
        ("MSH|^~\\&|A|B|C|D|1||adt^A01|C1|P|2.5\r", "bad_message_type"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r", "missing_control_id"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|  |P|2.5\r", "missing_control_id"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|3.0\r", "unsupported_version"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|v2\r", "unsupported_version"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rPID|1||X\x00Y\r", "control_characters"),
        ("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5\rOBX|1|TX|||a\x1cb\r", "control_characters"),
    ],
)
def test_refusals(text: str, code: str) -> None:
    assert refused(text).reason.code == code


def test_refusal_locations() -> None:
    assert refused("MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r").location == "MSH^1^10"
    assert refused("MSH|^~\\&|A|B|C|D|1|||C1|P|2.5\r").location == "MSH^1^9"


def test_version_may_be_absent_or_have_components() -> None:
    assert read_message("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P\r").header.version_id == ""
    assert read_message("MSH|^~\\&|A|B|C|D|1||ADT^A01|C1|P|2.5^DEU\r").header.version_id == "2.5"


def test_ack_message_type_without_trigger() -> None:
    header = read_message("MSH|^~\\&|A|B|C|D|1||ACK|C1|P|2.3\rMSA|AA|X\r").header
    assert header.message_code == "ACK" and header.trigger_event == ""


def test_read_header_never_raises() -> None:
    assert read_header("") == MshHeader()
    assert read_header("garbage") == MshHeader()
    header = read_header("MSH|^^|APP|FAC|||1||ADT^A01|C77|P|2.4\r")
    assert header.control_id == "C77" and header.sending_application == "APP"
    assert header.delimiters.encoding_characters == "^~\\&"  # invalid MSH-2: defaults
    assert read_header("MSH#$%*!#A#B#C#D#1##ADT$A01#C8\r").delimiters.field == "#"


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.hl7")))
def test_every_fixture_parses(name: str) -> None:
    decoded = charsets.decode((FIXTURES / name).read_bytes())
    message = read_message(decoded.text)
    assert message.header.control_id and message.header.message_code
    assert message.patient_id and message.patient_id.startswith("MRN")


def test_speed() -> None:
    import time

    text = (FIXTURES / "oru_r01_radiology.hl7").read_text()
    began = time.perf_counter()
    for _ in range(2000):
        read_message(text)
    assert 2000 / (time.perf_counter() - began) > 2000  # thousands per second, with room on slow CI
