"""The ``mllp`` destination: the HL7 message exactly as received, over MLLP, one connection per concurrent
delivery; the receiver's ACK decides: AA/CA delivered, AE/CE refused (permanent), AR/CR or no answer retried.

An ACK whose MSA-2 is not the message's MSH-10 answers some other message (a stale connection): the
connection is dropped and the delivery retried.
"""

from __future__ import annotations

import asyncio

from formats.hl7.mllp_client import MllpClient, MllpConnectionError, parse_ack
from pipeline.forward.destinations import Destination
from pipeline.forward.errors import PermanentError, RetryableError
from pipeline.forward.items import Item
from pipeline.forward.tls import client_context, connect_error

ACCEPTED, REFUSED, RETRY = ("AA", "CA"), ("AE", "CE"), ("AR", "CR")


class MllpSender:
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        tls = client_context(destination.tls)
        hostname = destination.tls.server_hostname if destination.tls else None
        host, port = destination.option("host"), destination.option("port")
        self._idle: asyncio.Queue[MllpClient] = asyncio.Queue()
        for _ in range(destination.concurrency):
            self._idle.put_nowait(MllpClient(host, port, tls=tls, server_hostname=hostname))

    async def send(self, item: Item) -> str:
        client = await self._idle.get()
        try:
            return await self._send(client, item)
        finally:
            self._idle.put_nowait(client)

    async def _send(self, client: MllpClient, item: Item) -> str:
        timeout = self.destination.timeout
        try:
            await client.connect(timeout)
        except OSError as exc:  # TimeoutError and ssl.SSLError among them
            raise connect_error(exc) from None
        try:
            ack = await client.send(item.content, timeout=timeout)
        except TimeoutError:
            raise RetryableError("no_answer", f"no ACK within {timeout:g} s") from None
        except (MllpConnectionError, OSError) as exc:
            raise RetryableError("connection_lost", f"{type(exc).__name__}: {exc}") from None
        try:
            summary = parse_ack(ack)
        except ValueError as exc:
            await client.close()
            raise RetryableError("bad_ack", str(exc)) from None
        if summary.control_id != item.control_id:
            await client.close()
            raise RetryableError("ack_mismatch", "the ACK's MSA-2 names another message")
        detail = f"MSA-3 {summary.text!r} ERR-3 {summary.error_code!r}"
        if summary.code in ACCEPTED:
            return summary.code
        if summary.code in REFUSED:
            raise PermanentError(summary.code, detail)
        raise RetryableError(summary.code if summary.code in RETRY else "bad_ack", detail)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()
