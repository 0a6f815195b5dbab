"""The project's MLLP client: ACK reading, timeouts, reconnects."""

from __future__ import annotations

import asyncio

import pytest

from formats.hl7.mllp_client import AckSummary, MllpClient, MllpConnectionError, parse_ack

ACK = b"MSH|^~\\&|B|B|A|A|20240101||ACK^A01^ACK|X1|P|2.5.1\rMSA|AE|C1|Bad\rERR||MSH^1^10|101^Required^HL70357|E\r"


def test_parse_ack() -> None:
    assert parse_ack(ACK) == AckSummary("AE", "C1", "Bad", "101")
    assert parse_ack(b"\x0b" + ACK + b"\x1c\r").code == "AE"
    assert parse_ack(b"MSH#$%*!#B#B\rMSA#CA#Z9\r") == AckSummary("CA", "Z9", "", "")
    assert parse_ack(ACK.replace(b"\r", b"\n")).control_id == "C1"
    with pytest.raises(ValueError):
        parse_ack(b"MSH|^~\\&|x\rPID|1\r")
    with pytest.raises(ValueError):
        parse_ack(b"nonsense")


async def _server(handler) -> tuple[asyncio.Server, int]:  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_send_receives_split_ack_and_reconnects_after_close() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\x1c\r")
        for part in (b"\x0b" + ACK[:10], ACK[10:] + b"\x1c", b"\r"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()  # one message per connection: the client must reconnect

    server, port = await _server(handler)
    async with server:
        client = MllpClient("127.0.0.1", port)
        assert await client.send("MSH|^~\\&|A", timeout=5) == ACK
        with pytest.raises(MllpConnectionError):
            await client.send("MSH|^~\\&|A", timeout=5)  # the server closed the connection
        assert not client.connected
        assert await client.send("MSH|^~\\&|A", timeout=5) == ACK  # reconnected
        await client.close()
    assert connections == 2


async def test_timeout_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    server, port = await _server(handler)
    async with server:
        client = MllpClient("127.0.0.1", port)
        with pytest.raises(TimeoutError):
            await client.send(b"MSH|^~\\&|A", timeout=0.2)
        assert not client.connected  # a late ACK must not be read as the next message's
        await client.close()


async def test_connect_refused() -> None:
    server, port = await _server(lambda r, w: None)
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await MllpClient("127.0.0.1", port).connect()
