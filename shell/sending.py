"""``medroute send``: HL7 files or generated samples over MLLP, one line per ACK on stdout."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from formats.hl7.mllp_client import MllpClient, parse_ack
from listeners.mllp.settings import MLLP_PORT
from shell.samples import sample_messages


async def send_messages(messages: list[tuple[str, bytes]], host: str, port: int | None) -> int:
    """Send each (name, raw) on one connection; returns 0 when every message got AA/CA, else 1."""
    codes: Counter[str] = Counter()
    async with MllpClient(host, port or MLLP_PORT()) as client:
        for name, raw in messages:
            ack = parse_ack(await client.send(raw, timeout=30))
            codes[ack.code] += 1
            error = f" ERR {ack.error_code}" if ack.error_code else ""
            print(f"{name}: {ack.code} {ack.control_id} {ack.text}{error}".rstrip(), flush=True)
    print("ACKs: " + ", ".join(f"{code} {count}" for code, count in sorted(codes.items())), flush=True)
    return 0 if set(codes) <= {"AA", "CA"} else 1


async def send_files(files: list[str], host: str, port: int | None) -> int:
    return await send_messages([(path, Path(path).read_bytes()) for path in files], host, port)


async def send_samples(count: int, host: str, port: int | None) -> int:
    samples = sample_messages(count, seed=1, prefix="UP")
    return await send_messages([(s.message_type.split("^")[0], s.raw) for s in samples], host, port)
