"""The ``dicom`` destination: C-STORE SCU (pynetdicom) to a PACS, with the dataset from the blob store.

Each concurrent delivery has its own association, kept open between items and opened again when an item
needs a presentation context it lacks. For every SOP class medroute proposes the item's own transfer syntax
and, in a second context, explicit and implicit VR little endian. When the receiver accepts the original
syntax the dataset bytes go out exactly as they were received (streamed from an in-memory file, never
re-encoded); otherwise the dataset is decoded, decompressed if it is compressed, and sent in the
uncompressed syntax the receiver accepted. On a plain TCP association the original bytes are written by
the sending thread itself (:mod:`formats.dicom.cstore`); over TLS pynetdicom streams them from an
in-memory file.

Status: 0x0000 and the warnings (0xB000, 0xB006, 0xB007) are delivered; 0xA7xx (out of resources) is retried;
every other failure is the receiver's refusal. An association that cannot be opened (refused, rejected,
aborted) is an unreachable receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association

from formats.dicom import cstore
from formats.dicom.association import release_association, tune_association
from formats.dicom.cstore import dataset_offset
from pipeline.forward.destinations import Destination, Tls
from pipeline.forward.errors import PermanentError, RetryableError, UnreachableError
from pipeline.forward.items import DicomMeta, Item
from pipeline.forward.tls import client_context, connect_error

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# An association unused this long is released: many PACS (storescp among them) serve few at a time.
IDLE_RELEASE_SECONDS = 2.0
WARNINGS = (0xB000, 0xB006, 0xB007)
MAX_CONTEXTS = 128  # the most an association may propose

# Files passed by path are streamed as they are, not decoded and re-encoded (pynetdicom's chunked mode).
_config.STORE_SEND_CHUNKED_DATASET = True


def _socket_class(slot: _Slot) -> type[ssl.SSLSocket]:
    class RecordingSocket(ssl.SSLSocket):
        def connect(self, address):  # type: ignore[no-untyped-def]
            try:
                super().connect(address)
            except OSError as exc:
                slot.connect_error = exc
                raise

    return RecordingSocket


class _Slot:
    """One association to the receiver and the contexts it was opened with."""

    def __init__(self, tls: Tls | None) -> None:
        self.assoc: Association | None = None
        self.proposed: frozenset[tuple[str, str]] = frozenset()
        self.lock = threading.Lock()  # the store thread or the idle release, not both
        self.uses = 0
        # A context of its own, whose sockets keep why their connect (TCP, then the TLS handshake) failed:
        # pynetdicom only logs it, and a receiver whose certificate does not verify should read as such.
        self.tls = client_context(tls)
        self.connect_error: OSError | None = None
        if self.tls is not None:
            self.tls.sslsocket_class = _socket_class(self)

    def release(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            with contextlib.suppress(Exception):
                self.assoc.release()
        self.assoc = None


class DicomSender:
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._executor = ThreadPoolExecutor(destination.concurrency, thread_name_prefix=f"cstore-{destination.name}")
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(destination.concurrency):
            self._slots.put_nowait(_Slot(destination.tls))
        self._known: set[tuple[str, str]] = set()  # (SOP class, transfer syntax) seen so far
        self._lock = threading.Lock()

    async def send(self, item: Item) -> str:
        slot = await self._slots.get()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._store, slot, item)
        finally:
            slot.uses += 1
            self._slots.put_nowait(slot)
            loop.call_later(IDLE_RELEASE_SECONDS, self._release_if_idle, slot, slot.uses)

    def _release_if_idle(self, slot: _Slot, uses: int) -> None:
        if slot.uses == uses and slot.assoc is not None and not self._executor._shutdown:
            self._executor.submit(self._release, slot, uses)

    def _release(self, slot: _Slot, uses: int) -> None:
        with slot.lock:
            if slot.uses == uses:
                slot.release()

    # -- in a worker thread ------------------------------------------------------------------------

    def _store(self, slot: _Slot, item: Item) -> str:
        meta = item.dicom  # parsed here, not on the event loop
        with slot.lock:
            return self._store_on(slot, item.data, meta)

    def _store_on(self, slot: _Slot, data: bytes, meta: DicomMeta) -> str:
        assoc = self._association(slot, meta)
        context_id = _accepted(assoc, meta.sop_class_uid, meta.transfer_syntax)
        try:
            offset = dataset_offset(data) if context_id is not None and slot.tls is None else None
            if offset is not None:
                dataset = memoryview(data)[offset:]
                status = cstore.send_c_store(assoc, context_id, meta.sop_class_uid, meta.sop_instance_uid, dataset)
                how = "as received"
            elif context_id is not None:
                with _memory_file(data) as path:
                    status = assoc.send_c_store(path)
                how = "as received"
            else:
                status = assoc.send_c_store(_uncompressed(data))
                how = "decompressed" if pydicom.uid.UID(meta.transfer_syntax).is_compressed else "converted"
        except (RuntimeError, ValueError, AttributeError, OSError) as exc:
            slot.release()
            raise RetryableError("send_failed", f"{type(exc).__name__}: {exc}") from None
        if not assoc.is_established:
            slot.release()
        code = int(getattr(status, "Status", -1)) if status else -1
        if code == -1:
            slot.release()
            raise RetryableError("no_response", "no C-STORE response (timeout or the association ended)")
        comment = str(getattr(status, "ErrorComment", "") or "")
        if code == 0 or code in WARNINGS:
            return f"0x{code:04X} {how}"
        if code & 0xFF00 == 0xA700:
            raise RetryableError(f"status_0x{code:04X}", comment)
        raise PermanentError(f"status_0x{code:04X}", comment)

    def _association(self, slot: _Slot, meta: DicomMeta) -> Association:
        with self._lock:
            self._known.add((meta.sop_class_uid, meta.transfer_syntax))
            wanted = frozenset(self._known)
        needed = (meta.sop_class_uid, meta.transfer_syntax)
        if slot.assoc is not None and slot.assoc.is_established and needed in slot.proposed:
            return slot.assoc
        slot.release()
        pairs = wanted if _context_count(wanted) <= MAX_CONTEXTS else frozenset({needed})
        ae = AE(ae_title=self.destination.option("calling_ae", "MEDROUTE"))
        timeout = self.destination.timeout
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        ae.maximum_pdu_size = self.destination.option("max_pdu", 0)
        ae.requested_contexts = list(_contexts(pairs))
        tls_args = None
        if slot.tls is not None and self.destination.tls is not None:
            # The host is the name to verify unless server_hostname says otherwise: pynetdicom passes None on,
            # which a verifying context refuses with a ValueError that ends the association thread.
            tls_args = (slot.tls, self.destination.tls.server_hostname or self.destination.option("host"))
        slot.connect_error = None
        assoc = ae.associate(
            self.destination.option("host"),
            self.destination.option("port"),
            ae_title=self.destination.option("called_ae"),
            tls_args=tls_args,
            # Without these, each open association's two threads poll every millisecond, idle or not.
            evt_handlers=[(evt.EVT_CONN_OPEN, tune_association), (evt.EVT_CONN_CLOSE, release_association)],
        )
        if not assoc.is_established:
            if slot.connect_error is not None:
                raise connect_error(slot.connect_error)
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise UnreachableError("association_failed", f"association {why}")
        slot.assoc, slot.proposed = assoc, pairs
        return assoc

    async def close(self) -> None:
        while not self._slots.empty():
            slot = self._slots.get_nowait()
            await asyncio.get_running_loop().run_in_executor(self._executor, slot.release)
        self._executor.shutdown(wait=False)


def _context_count(pairs: frozenset[tuple[str, str]]) -> int:
    return len(pairs) + len({sop for sop, _ in pairs})


def _contexts(pairs: frozenset[tuple[str, str]]) -> Iterator:
    """The original syntax alone in one context per pair (so the acceptor can pick exactly it), and one
    uncompressed fallback context per SOP class."""
    for sop, syntax in sorted(pairs):
        if syntax not in UNCOMPRESSED:
            yield build_context(sop, [syntax])
    for sop in sorted({sop for sop, _ in pairs}):
        yield build_context(sop, list(UNCOMPRESSED))


def _accepted(assoc: Association, sop_class: str, syntax: str) -> int | None:
    """The ID of the accepted context for the SOP class in exactly this transfer syntax, if any."""
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop_class and cx.transfer_syntax and cx.transfer_syntax[0] == syntax:
            return cx.context_id
    return None


def _uncompressed(data: bytes) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        try:
            ds.decompress(generate_instance_uid=False)  # a change of transfer syntax is the same instance
        except Exception as exc:  # a decoder that is not installed, or corrupt pixel data
            raise PermanentError("decompress_failed", f"{type(exc).__name__}: {exc}") from None
    return ds


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[Path]:
    """The Part-10 bytes as a file that lives only in memory (the decrypted dataset never touches disk)."""
    descriptor = os.memfd_create("medroute-cstore", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        yield Path(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)
