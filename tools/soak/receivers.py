"""The soak's destinations, in its own process: an EHR that ACKs every HL7 message AA and a PACS that stores
every image (status 0x0000), each recording every item it received (MSH-10 or SOP Instance UID) and when, so
that the soak can count items missing at a destination and items received twice.

The MLLP receiver is a few lines over medroute's frame decoder (python-hl7 stays in the tests); the PACS is a
pynetdicom SCP that counts C-STORE requests, not files (a file store would overwrite a second copy)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

from pynetdicom import AE, AllStoragePresentationContexts, evt

from formats.hl7.mllp import wrap
from tools.benchmarks.common import answer_each_frame


class Receipts:
    """Every receipt of every item: id -> monotonic times (thread-safe)."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, item_id: str) -> None:
        with self._lock:
            self._times[item_id].append(time.monotonic())

    def snapshot(self) -> dict[str, list[float]]:
        with self._lock:
            return {key: list(times) for key, times in self._times.items()}

    def __len__(self) -> int:
        with self._lock:
            return sum(len(times) for times in self._times.values())


def control_id(message: bytes) -> str:
    """MSH-10 of an HL7 message (the field separator is MSH-1, the fourth byte)."""
    header = message.split(b"\r", 1)[0].decode("latin-1")
    return header.split(header[3])[9]


def ack_for(message: bytes) -> bytes:
    return wrap(f"MSH|^~\\&|SOAKEHR|SOAK|||{time.strftime('%Y%m%d%H%M%S')}||ACK|A{control_id(message)}|P|2.5\r"
                f"MSA|AA|{control_id(message)}\r".encode())  # fmt: skip


class MllpReceiver:
    """An EHR on 127.0.0.1:port in a thread of its own; every message is recorded, then answered AA."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.receipts = Receipts()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="soak-ehr", daemon=True)

    def start(self) -> MllpReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the soak's MLLP receiver did not start")
        return self

    def _serve(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._connected, "127.0.0.1", self.port))
        self._ready.set()
        loop.run_forever()
        server.close()
        connections = asyncio.all_tasks(loop)
        for task in connections:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*connections, return_exceptions=True))
        loop.close()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_each_frame(reader, writer, self._answer)

    def _answer(self, message: bytes) -> bytes:
        self.receipts.add(control_id(message))
        return ack_for(message)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class DicomReceiver:
    """A PACS (pynetdicom C-STORE SCP) on 127.0.0.1:port; every C-STORE request is recorded, then answered
    0x0000."""

    def __init__(self, port: int, ae_title: str = "SOAKPACS") -> None:
        self.port = port
        self.ae_title = ae_title
        self.receipts = Receipts()
        self._server = None

    def start(self) -> DicomReceiver:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.maximum_associations = 16

        def stored(event: evt.Event) -> int:
            self.receipts.add(str(event.request.AffectedSOPInstanceUID))
            return 0x0000

        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, stored)])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
