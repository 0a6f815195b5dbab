"""One association to a ``dicom`` destination and the C-STOREs sent on it, from one thread (a sender
process's, see :mod:`pipeline.forward.dicom_worker`).

The association is kept open between items and opened again when an item needs a presentation context it
lacks. For every SOP class medroute proposes the item's own transfer syntax and, in a second context,
explicit and implicit VR little endian. When the receiver accepts the original syntax the dataset bytes go
out exactly as they were received (never re-encoded): on a plain TCP association written by this thread
itself (:mod:`formats.dicom.cstore`), over TLS streamed by pynetdicom from an in-memory file. Otherwise the
dataset is decoded, decompressed if it is compressed, and sent in the uncompressed syntax the receiver
accepted.

Status: 0x0000 and the warnings (0xB000, 0xB006, 0xB007) are delivered; 0xA7xx (out of resources) is retried;
every other failure is the receiver's refusal. An association that cannot be opened (refused, rejected,
aborted) is an unreachable receiver.
"""

from __future__ import annotations

import contextlib
import io
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association

from formats.dicom import cstore
from formats.dicom.association import release_association, tune_association
from formats.dicom.cstore import dataset_offset
from formats.dicom.file_meta import FileMeta, read_file_meta
from medroute.fileio import write_all
from pipeline.forward.destinations import Destination
from pipeline.forward.errors import PermanentError, RetryableError, UnreachableError
from pipeline.forward.items import dicom_meta
from pipeline.forward.tls import client_context, connect_error

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
WARNINGS = (0xB000, 0xB006, 0xB007)
MAX_CONTEXTS = 128  # the most an association may propose

# Files passed by path are streamed as they are, not decoded and re-encoded (pynetdicom's chunked mode).
_config.STORE_SEND_CHUNKED_DATASET = True


class StoreAssociation:
    """One association to the receiver, the contexts it was opened with, and the C-STOREs sent on it."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._assoc: Association | None = None
        self._proposed: frozenset[tuple[str, str]] = frozenset()
        self._known: set[tuple[str, str]] = set()  # (SOP class, transfer syntax) seen so far
        # A context of its own, whose sockets keep why their connect (TCP, then the TLS handshake) failed:
        # pynetdicom only logs it, and a receiver whose certificate does not verify should read as such.
        self._tls = client_context(destination.tls)
        self._connect_error: OSError | None = None
        if self._tls is not None:
            self._tls.sslsocket_class = _socket_class(self)

    @property
    def is_open(self) -> bool:
        return self._assoc is not None

    def release(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            with contextlib.suppress(Exception):
                self._assoc.release()
        self._assoc = None

    def store(self, data: bytes) -> str:
        """Send one Part-10 file; returns the outcome ("0x0000 as received"); raises DeliveryError."""
        meta = read_file_meta(data) or _file_meta_by_pydicom(data)
        assoc = self._association(meta)
        context_id = _accepted(assoc, meta.sop_class_uid, meta.transfer_syntax)
        try:
            offset = dataset_offset(data) if context_id is not None and self._tls is None else None
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
            self.release()
            raise RetryableError("send_failed", f"{type(exc).__name__}: {exc}") from None
        if not assoc.is_established:
            self.release()
        code = int(getattr(status, "Status", -1)) if status else -1
        if code == -1:
            self.release()
            raise RetryableError("no_response", "no C-STORE response (timeout or the association ended)")
        comment = str(getattr(status, "ErrorComment", "") or "")
        if code == 0 or code in WARNINGS:
            return f"0x{code:04X} {how}"
        if code & 0xFF00 == 0xA700:
            raise RetryableError(f"status_0x{code:04X}", comment)
        raise PermanentError(f"status_0x{code:04X}", comment)

    def _association(self, meta: FileMeta) -> Association:
        needed = (meta.sop_class_uid, meta.transfer_syntax)
        self._known.add(needed)
        if self._assoc is not None and self._assoc.is_established and needed in self._proposed:
            return self._assoc
        self.release()
        wanted = frozenset(self._known)
        pairs = wanted if _context_count(wanted) <= MAX_CONTEXTS else frozenset({needed})
        destination = self.destination
        ae = AE(ae_title=destination.option("calling_ae", "MEDROUTE"))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout
        ae.connection_timeout = destination.timeout
        ae.maximum_pdu_size = destination.option("max_pdu", 0)
        ae.requested_contexts = list(_contexts(pairs))
        tls_args = None
        if self._tls is not None and destination.tls is not None:
            # The host is the name to verify unless server_hostname says otherwise: pynetdicom passes None on,
            # which a verifying context refuses with a ValueError that ends the association thread.
            tls_args = (self._tls, destination.tls.server_hostname or destination.option("host"))
        self._connect_error = None
        assoc = ae.associate(
            destination.option("host"),
            destination.option("port"),
            ae_title=destination.option("called_ae"),
            tls_args=tls_args,
            # Without these, each open association's two threads poll every millisecond, idle or not.
            evt_handlers=[(evt.EVT_CONN_OPEN, tune_association), (evt.EVT_CONN_CLOSE, release_association)],
        )
        if not assoc.is_established:
            if self._connect_error is not None:
                raise connect_error(self._connect_error)
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise UnreachableError("association_failed", f"association {why}")
        self._assoc, self._proposed = assoc, pairs
        return assoc


def _socket_class(owner: StoreAssociation) -> type[ssl.SSLSocket]:
    class RecordingSocket(ssl.SSLSocket):
        def connect(self, address):  # type: ignore[no-untyped-def]
            try:
                super().connect(address)
            except OSError as exc:
                owner._connect_error = exc
                raise

    return RecordingSocket


def _file_meta_by_pydicom(data: bytes) -> FileMeta:
    """For a file whose meta group :func:`read_file_meta` could not walk; PermanentError if pydicom cannot."""
    meta = dicom_meta(data)
    return FileMeta(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax)


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
        write_all(descriptor, data)
        yield Path(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)
