"""medroute's own asyncio MLLP client: send one message, wait for its ACK.

Used by the forwarders, ``medroute send``, tests and the benchmark. One connection carries one message
at a time (MLLP is request/response); open several clients for throughput. After a timeout or a broken
connection the client closes the connection (a late ACK must not be read as the next message's) and the
next :meth:`MllpClient.send` connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from types import TracebackType
from typing import NamedTuple

from formats.hl7.mllp import DEFAULT_MAX_FRAME, Frame, MllpDecoder, wrap


class MllpConnectionError(ConnectionError):
    """The connection ended or broke before the ACK arrived."""


class AckSummary(NamedTuple):
    code: str  # MSA-1: AA/AE/AR/CA/CE/CR
    control_id: str  # MSA-2: the acknowledged message's MSH-10
    text: str  # MSA-3
    error_code: str  # ERR-3.1 (HL7 table 0357), "" when there is no ERR segment


def parse_ack(ack: bytes) -> AckSummary:
    """MSA-1/MSA-2/MSA-3 and ERR-3.1 of an ACK (framed or not); raises ValueError without MSA."""
    body = ack.strip(b"\x0b\x1c\r\n")
    if not body.startswith(b"MSH") or len(body) < 8:
        raise ValueError("not an HL7 message")
    text = body.decode("latin-1")  # the fields read here are ASCII in every HL7 character set
    field, component = text[3], text[4]
    msa: list[str] | None = None
    error_code = ""
    for segment in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        fields = segment.split(field)
        if fields[0] == "MSA" and msa is None:
            msa = [*fields, "", "", ""]
        elif fields[0] == "ERR" and not error_code and len(fields) > 3:
            error_code = fields[3].split(component)[0]
    if msa is None:
        raise ValueError("no MSA segment in the ACK")
    return AckSummary(msa[1], msa[2], msa[3], error_code)


class MllpClient:
    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname
        self._max_frame = max_frame
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = MllpDecoder(max_frame)
        self._pending: deque[bytes] = deque()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the connection (raises OSError / TimeoutError when the listener is not there)."""
        if self.connected:
            return
        hostname = (self.server_hostname or self.host) if self.tls else None
        async with asyncio.timeout(timeout):
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, server_hostname=hostname
            )
        self._decoder = MllpDecoder(self._max_frame)
        self._pending.clear()

    async def reconnect(self, timeout: float = 10.0) -> None:
        await self.close()
        await self.connect(timeout)

    async def send(
        self, message: bytes | str, timeout: float = 30.0, encoding: str = "utf-8", expect_reply: bool = True
    ) -> bytes:
        """Send one message and return its ACK, unframed (``b""`` when ``expect_reply`` is False,
        e.g. for enhanced mode with MSH-15 ``NE``)."""
        payload = message.encode(encoding) if isinstance(message, str) else message
        if not self.connected:
            await self.connect(timeout)
        assert self._writer is not None
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(wrap(payload))
                await self._writer.drain()
                return await self._read_frame() if expect_reply else b""
        except BaseException:
            await self.close()
            raise

    async def _read_frame(self) -> bytes:
        assert self._reader is not None
        while not self._pending:
            data = await self._reader.read(256 * 1024)
            if not data:
                raise MllpConnectionError("the listener closed the connection before answering")
            # Bytes outside frames are ignored: the answer is the next complete frame.
            self._pending.extend(e.payload for e in self._decoder.feed(data) if isinstance(e, Frame))
        return self._pending.popleft()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):  # already broken: nothing more to release
            await asyncio.wait_for(writer.wait_closed(), 5)

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
