"""``medroute hl7 validate``: files of HL7 messages checked as the listener's strict mode would, no PHI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hl7apy.exceptions import MaxLengthReached

from formats.hl7.validate import describe
from shell.cli import main
from shell.hl7_validate import split_messages
from tests.unit.test_pipeline_support import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
ADT = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|{id}|P|2.5.1\rEVN|A01|20240101\rPID|1||X||N^J||{birth}\rPV1|1|I\r"
GOOD = ADT.format(id="OK1", birth="19800101")
BAD = ADT.format(id="BAD2", birth="SECRETDATE")  # PID-7 is not a date: hl7apy quotes the value


def write(tmp_path: Path, data: bytes, name: str = "messages.hl7") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_valid_fixture_through_the_command_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "shell.cli", "hl7", "validate", str(FIXTURES / "adt_a01.hl7")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{FIXTURES / 'adt_a01.hl7'} #1 ADT000123 ADT^A01^ADT_A01: valid\n"


def test_every_message_of_a_framed_file_is_reported_without_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two MLLP frames, LF segment endings in the second.
    data = b"\x0b" + GOOD.encode() + b"\x1c\r\x0b" + BAD.replace("\r", "\n").encode() + b"\x1c\r"
    path = write(tmp_path, data)
    assert main(["hl7", "validate", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{path} #1 OK1 ADT^A01^ADT_A01: valid",
        f"{path} #2 BAD2 ADT^A01^ADT_A01: not_conformant: hl7apy ValueError: is not an HL7 valid date value",
    ]


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, (GOOD + BAD).encode())
    assert main(["hl7", "validate", "--json", path]) == 1
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first == {
        "file": path,
        "message": 1,
        "control_id": "OK1",
        "message_type": "ADT^A01^ADT_A01",
        "findings": [],
        "valid": True,
    }
    assert second["valid"] is False and second["control_id"] == "BAD2"
    assert second["findings"] == [
        {"reason": "not_conformant", "detail": "hl7apy ValueError: is not an HL7 valid date value"}
    ]
    assert "SECRETDATE" not in json.dumps(second)


def test_missing_file_is_unreadable_and_the_others_are_still_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.hl7")
    assert main(["hl7", "validate", missing, str(FIXTURES / "mdm_t02.hl7")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"medroute hl7 validate: {missing}: unreadable: No such file or directory\n"
    assert captured.out.endswith("MDM30001 MDM^T02^MDM_T02: valid\n")


@pytest.mark.parametrize("data", [b"", b" \r\n\x0b\x1c\r"])
def test_file_without_a_message_is_unreadable(tmp_path: Path, data: bytes) -> None:
    assert main(["hl7", "validate", write(tmp_path, data)]) == 2


def test_listener_refusals_are_findings_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unknown_charset = GOOD.replace("2.5.1", "2.5.1||||||KLINGON").replace("OK1", "CS1")
    no_control_id = GOOD.replace("OK1", "")
    data = b"junk before\r" + unknown_charset.encode() + no_control_id.encode()
    assert main(["hl7", "validate", write(tmp_path, data)]) == 1
    verdicts = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert verdicts == [
        "no_msh: the first segment is not MSH",
        "unknown_charset: MSH-18 character set 'KLINGON' is not supported",
        "missing_control_id: MSH-10 message control id is empty",
    ]


def test_gb18030_file_is_decoded_by_its_msh_18(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hl7", "validate", str(FIXTURES / "gb18030_chinese.hl7"), str(FIXTURES / "utf8_bom.hl7")]) == 0
    assert capsys.readouterr().out.count(": valid\n") == 2


def test_split_messages_skips_batch_envelopes_and_keeps_a_byte_order_mark() -> None:
    data = b"\xef\xbb\xbfFHS|^~\\&\r\nBHS|^~\\&\r\nMSH|^~\\&|1\r\nPID|1\r\nMSH|^~\\&|2\r\nBTS|2\r\nFTS|1\r\n"
    assert split_messages(data) == [b"\xef\xbb\xbfMSH|^~\\&|1\r\nPID|1\r\n", b"MSH|^~\\&|2\r\n\r\n\r\n"]


def test_describe_takes_no_element_names_from_failures_that_quote_values() -> None:
    assert describe(MaxLengthReached("MRN_100234", 20)) == "hl7apy MaxLengthReached: exceed the max length"
    assert "MRN_1" not in describe(ValueError("MRN_1 is not an HL7 valid date value"))
