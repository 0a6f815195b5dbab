"""ACK builder: original and enhanced mode, MSH swap, ERR contents, broken input, other charsets."""

from __future__ import annotations

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from formats.hl7 import charsets
from formats.hl7.ack import ack_code, build_ack, should_answer
from formats.hl7.delimiters import Delimiters
from formats.hl7.errors import MISSING_CONTROL_ID, STORAGE_UNAVAILABLE, UNDECODABLE, Outcome
from formats.hl7.escapes import escape
from formats.hl7.message import MshHeader, read_header, read_message

INCOMING = (
    "MSH|^~\\&|RIS|GENHOSP^1.2^ISO|MEDROUTE|DEST|20240302101500||ORU^R01^ORU_R01|RAD1|P|2.5.1{modes}\rPID|1||MRN1\r"
)


def header(modes: str = "") -> MshHeader:
    return read_message(INCOMING.format(modes=modes)).header


def segments(ack: str) -> dict[str, list[str]]:
    assert ack.endswith("\r")
    return {s[:3]: s.split("|") for s in ack.rstrip("\r").split("\r")}


def test_positive_original_mode() -> None:
    ack = build_ack(header(), Outcome.ACCEPT)
    seg = segments(ack)
    msh = seg["MSH"]
    assert msh[1] == "^~\\&"
    assert (msh[2], msh[3], msh[4], msh[5]) == ("MEDROUTE", "DEST", "RIS", "GENHOSP^1.2^ISO")
    assert msh[8] == "ACK^R01^ACK"
    assert msh[9] and msh[9] != "RAD1" and len(msh[9]) <= 20
    assert (msh[10], msh[11]) == ("P", "2.5.1")
    assert seg["MSA"] == ["MSA", "AA", "RAD1", "Message accepted"]
    assert "ERR" not in seg


def test_new_control_id_each_time() -> None:
    first, second = (segments(build_ack(header(), Outcome.ACCEPT))["MSH"][9] for _ in range(2))
    assert first != second


@pytest.mark.parametrize(
    ("outcome", "enhanced", "code"),
    [
        (Outcome.ACCEPT, False, "AA"),
        (Outcome.ERROR, False, "AE"),
        (Outcome.REJECT, False, "AR"),
        (Outcome.ACCEPT, True, "CA"),
        (Outcome.ERROR, True, "CE"),
        (Outcome.REJECT, True, "CR"),
    ],
)
def test_codes(outcome: Outcome, enhanced: bool, code: str) -> None:
    assert ack_code(outcome, enhanced) == code


def test_negative_has_err_with_code_severity_location_and_message() -> None:
    ack = build_ack(header(), Outcome.REJECT, MISSING_CONTROL_ID, "MSH-10 is empty", "MSH^1^10")
    seg = segments(ack)
    assert seg["MSA"][:3] == ["MSA", "AR", "RAD1"]
    assert seg["MSA"][3] == MISSING_CONTROL_ID.text
    err = seg["ERR"]
    assert err[2] == "MSH^1^10"
    assert err[3] == "101^Required field missing^HL70357"
    assert err[4] == "E"
    assert err[8] == "MSH-10 is empty"


def test_storage_unavailable_is_ar_207() -> None:
    seg = segments(build_ack(header(), Outcome.REJECT, STORAGE_UNAVAILABLE, "storage unavailable: timeout"))
    assert seg["MSA"][1] == "AR" and seg["ERR"][3].startswith("207^")


def test_content_error_is_ae() -> None:
    seg = segments(build_ack(header(), Outcome.ERROR, UNDECODABLE, "byte 40 is not valid"))
    assert seg["MSA"][1] == "AE" and seg["ERR"][3].startswith("102^")


@pytest.mark.parametrize(
    ("mode", "outcome", "answered", "code"),
    [
        ("AL", Outcome.ACCEPT, True, "CA"),
        ("AL", Outcome.REJECT, True, "CR"),
        ("AL", Outcome.ERROR, True, "CE"),
        ("NE", Outcome.ACCEPT, False, None),
        ("NE", Outcome.REJECT, False, None),
        ("ER", Outcome.ACCEPT, False, None),
        ("ER", Outcome.ERROR, True, "CE"),
        ("ER", Outcome.REJECT, True, "CR"),
        ("SU", Outcome.ACCEPT, True, "CA"),
        ("SU", Outcome.REJECT, False, None),
        ("XX", Outcome.ACCEPT, True, "CA"),
        ("", Outcome.ACCEPT, True, "CA"),  # MSH-16 only: still enhanced mode, accept ack as AL
    ],
)
def test_enhanced_mode(mode: str, outcome: Outcome, answered: bool, code: str | None) -> None:
    h = header(f"|||{mode}|AL")
    assert h.enhanced_mode
    assert should_answer(h, outcome) is answered
    if answered:
        reason = None if outcome is Outcome.ACCEPT else STORAGE_UNAVAILABLE
        seg = segments(build_ack(h, outcome, reason))
        assert seg["MSA"][1] == code and seg["MSA"][2] == "RAD1"
        assert seg["MSH"][14:16] == ["NE", "NE"]  # an acknowledgement is never acknowledged


def test_original_mode_always_answers() -> None:
    for outcome in Outcome:
        assert should_answer(header(), outcome)


def test_custom_delimiters_and_escaping() -> None:
    text = "MSH#$%*!#LAB#HOSP#MR#HOSP#20240101##ORU$R01$ORU_R01#C9#P#2.5.1\r"
    h = read_message(text).header
    ack = build_ack(h, Outcome.REJECT, MISSING_CONTROL_ID, "bad # and $ and * here")
    assert ack.startswith("MSH#$%*!#MR#HOSP#LAB#HOSP#")
    assert "#ACK$R01$ACK#" in ack
    assert "MSA#AR#C9#" in ack
    assert "bad *F* and *S* and *E* here" in ack


def test_escape_all_delimiters() -> None:
    d = Delimiters(truncation="#")
    assert escape("a|b^c~d\\e&f#g\rh", d) == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\P\\g h"


def test_charset_and_version_echoed_and_encoded() -> None:
    raw = ("MSH|^~\\&|HIS|北京医院|MEDROUTE|X|20240101||ORU^R01^ORU_R01|GB1|P|2.5.1|||||CHN|GB 18030-2000\r").encode(
        "gb18030"
    )
    decoded = charsets.decode(raw)
    h = read_message(decoded.text).header
    ack = charsets.encode(build_ack(h, Outcome.ACCEPT), decoded.codec)
    text = ack.decode("gb18030")
    assert text.split("\r")[0].endswith("|GB 18030-2000")
    assert "|MEDROUTE|X|HIS|北京医院|" in text


def test_unreadable_message_still_gets_a_valid_ack() -> None:
    ack = build_ack(read_header("\x00\x01garbage"), Outcome.REJECT, MISSING_CONTROL_ID)
    seg = segments(ack)
    assert seg["MSH"][8] == "ACK^^ACK" and seg["MSH"][11] == "2.5"
    assert seg["MSA"][:3] == ["MSA", "AR", ""]  # MSA-2 stays empty: there is no control id to echo
    parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)  # well-formed ACK


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
@pytest.mark.parametrize("negative", [False, True])
def test_acks_are_strictly_valid_per_version(version: str, negative: bool) -> None:
    h = read_message(f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|C1|P|{version}\r").header
    ack = build_ack(
        h,
        Outcome.REJECT if negative else Outcome.ACCEPT,
        MISSING_CONTROL_ID if negative else None,
        "detail",
        "MSH^1^10",
    )
    parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    parsed = hl7.parse(ack)  # python-hl7, an independent reader
    assert str(parsed.segment("MSA")[1]) == ("AR" if negative else "AA")
    assert str(parsed.segment("MSA")[2]) == "C1"


def test_old_versions_use_err_1_and_two_part_message_type() -> None:
    h = read_message("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|C1|P|2.3\r").header
    seg = segments(build_ack(h, Outcome.REJECT, MISSING_CONTROL_ID, "x", "MSH^1^10"))
    assert seg["MSH"][8] == "ACK^A01"
    assert seg["ERR"] == ["ERR", "MSH^1^10^101&Required field missing&HL70357"]


def test_v27_has_no_msa_3() -> None:
    h = read_message("MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|C1|P|2.7\r").header
    assert segments(build_ack(h, Outcome.ACCEPT))["MSA"] == ["MSA", "AA", "C1"]
