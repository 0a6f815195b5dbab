"""Senders for integration tests: python-hl7's ``mllp_send`` (a client this project did not
write) and a reading of ACKs that does not reuse the listener's own code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

START, END = b"\x0b", b"\x1c\x0d"


def parse_ack(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK, framed or not, whatever its delimiters."""
    body = ack.strip(b"\x0b\x1c\r\n")
    field_sep = body[3:4].decode("latin-1")
    for segment in body.decode("latin-1").replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            fields = segment.split(field_sep)
            return fields[1], fields[2] if len(fields) > 2 else ""
    raise ValueError(f"no MSA segment in {ack[:200]!r}")


def mllp_send_file(messages: list[bytes], port: int, work_dir: Path) -> list[tuple[str, str]]:
    """Send ``messages`` with python-hl7's ``mllp_send`` command; returns each ACK's (MSA-1, MSA-2)."""
    path = work_dir / "messages.mllp"
    path.write_bytes(b"".join(START + m + END for m in messages))
    command = shutil.which("mllp_send", path=str(Path(sys.executable).parent)) or "mllp_send"
    result = subprocess.run(
        [command, "--port", str(port), "--file", str(path), "127.0.0.1"],
        capture_output=True,
        timeout=300,
        check=True,
    )
    frames = [chunk for chunk in result.stdout.split(START) if chunk.strip()]
    return [parse_ack(frame) for frame in frames]
