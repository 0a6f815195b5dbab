"""What the listener does with one C-STORE: check it, store it (blob, then record), then answer.

The order is the listener's promise: status 0x0000 is returned only after the Part-10 file is fsynced
in the blob store and Kafka has acknowledged its ``dicom.inbound`` record. Anything else gets a
failure status with an error comment, a dead letter (with the bytes received, capped) and a "reject"
audit event. This module knows nothing of sockets: it is unit-tested with fake events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pydicom.dataset import Dataset

from listeners import metrics
from listeners.dicom import events
from listeners.dicom import metrics as dicom_metrics
from listeners.dicom.dataset import DatasetError, read_header
from listeners.dicom.events import Receipt
from listeners.dicom.part10 import file_meta, file_parts
from listeners.dicom.settings import DicomSettings
from listeners.sink import SinkUnavailable
from medroute.blobstore import Blobs
from medroute.config import AUDIT_EVENTS, DICOM_DEADLETTER, DICOM_INBOUND
from medroute.logs import hash_id
from medroute.records import DeadLetter, utc_now
from medroute.sealing import BlobError

LISTENER = "dicom"
log = structlog.get_logger("listeners.dicom")

# C-STORE statuses (PS3.4 Annex B.2.3, PS3.7 Annex C).
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources": the sender should retry later
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000  # 0xCxxx: "Error: Cannot understand"; the low bits tell our reasons apart

STATUS_OF_REASON = {
    "not_dicom": CANNOT_UNDERSTAND,
    "truncated": CANNOT_UNDERSTAND | 0x001,
    "malformed_dataset": CANNOT_UNDERSTAND | 0x002,
    "missing_attribute": CANNOT_UNDERSTAND | 0x003,
    "sop_mismatch": DOES_NOT_MATCH_SOP_CLASS,
    "blob_store_unavailable": OUT_OF_RESOURCES,
    "kafka_unavailable": OUT_OF_RESOURCES,
    "internal_error": PROCESSING_FAILURE,
}
ERROR_COMMENT_MAX = 64  # Error Comment (0000,0902) is an LO


class Refused(Exception):  # noqa: N818 - a refusal, not a bug
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RecordWriter(Protocol):
    """Where records go (:class:`listeners.dicom.bridge.ThreadedSink` in production)."""

    def put(self, topic: str, key: bytes | None, value: bytes, timeout: float) -> None: ...

    def put_later(self, topic: str, key: bytes | None, value: bytes) -> None: ...


@dataclass(frozen=True)
class Received:
    """One C-STORE request as the handler sees it (built from a pynetdicom event by :func:`received`)."""

    receipt: Receipt
    dataset: bytes  # as encoded by the sender, without file meta

    def part10(self) -> tuple[bytes, bytes, bytes]:
        """The DICOM file form (preamble, file meta, the dataset as sent) in parts: what the blob store keeps."""
        r = self.receipt
        return file_parts(file_meta(r.sop_class_uid, r.sop_instance_uid, r.transfer_syntax, r.calling_ae), self.dataset)


def received_over(assoc: Any, transfer_syntax: str, sop_class: str, sop_instance: str, dataset: bytes) -> Received:
    """A C-STORE request received on pynetdicom association ``assoc``."""
    return Received(
        receipt=Receipt(
            calling_ae=assoc.requestor.ae_title,
            called_ae=assoc.acceptor.ae_title,
            peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
            transfer_syntax=transfer_syntax,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            received_at=utc_now(),
        ),
        dataset=dataset,
    )


def received(event: Any) -> Received:
    """Adapt a pynetdicom ``EVT_C_STORE`` event."""
    request = event.request
    return received_over(
        event.assoc,
        str(event.context.transfer_syntax),
        str(request.AffectedSOPClassUID or ""),
        str(request.AffectedSOPInstanceUID or ""),
        event.encoded_dataset(include_meta=False),
    )


def status_dataset(status: int, comment: str = "") -> Dataset:
    answer = Dataset()
    answer.Status = status
    if comment:
        answer.ErrorComment = comment
    return answer


class StoreHandler:
    """Stores C-STORE requests: ``handler(event)`` as pynetdicom's ``EVT_C_STORE`` handler, or
    :meth:`store` (the fast path)."""

    def __init__(self, settings: DicomSettings, blobs: Blobs, writer: RecordWriter) -> None:
        self._settings = settings
        self._blobs = blobs
        self._writer = writer
        # Associations inside this handler now: a graceful stop lets them finish, aborts the others.
        self.busy: set[object] = set()

    def __call__(self, event: Any) -> Dataset:
        """The ``EVT_C_STORE`` handler (:mod:`listeners.dicom.fastpath` calls :meth:`store` itself)."""
        started = time.perf_counter()
        try:
            item = received(event)
        except Exception as exc:  # an event pynetdicom could not give us the bytes of
            metrics.RECEIVED.labels(LISTENER).inc()
            log.error("dicom.store_event_unreadable", error=type(exc).__name__)
            return status_dataset(*self._answer(PROCESSING_FAILURE, "cannot read the C-STORE request", started))
        return status_dataset(*self.store(item, event.assoc, started))

    def store(self, item: Received, assoc: object, started: float | None = None) -> tuple[int, str]:
        """Check and store one C-STORE request received on ``assoc``: (status, error comment)."""
        started = time.perf_counter() if started is None else started
        metrics.RECEIVED.labels(LISTENER).inc()
        self.busy.add(assoc)
        try:
            return self.handle(item, started)
        finally:
            self.busy.discard(assoc)

    def handle(self, item: Received, started: float) -> tuple[int, str]:
        dicom_metrics.RECEIVED_BYTES.inc(len(item.dataset))
        try:
            self._store(item)
        except Refused as refusal:
            return self._refuse(item, refusal, started)
        except Exception as exc:
            log.exception("dicom.store_crashed", error=type(exc).__name__)
            return self._refuse(item, Refused("internal_error", f"internal error: {type(exc).__name__}"), started)
        return self._answer(SUCCESS, "", started)

    def _store(self, item: Received) -> None:
        receipt = item.receipt
        try:
            header = read_header(item.dataset, receipt.transfer_syntax)
        except DatasetError as exc:
            raise Refused(exc.reason, exc.detail) from None
        if header.sop_class_uid != receipt.sop_class_uid or header.sop_instance_uid != receipt.sop_instance_uid:
            raise Refused("sop_mismatch", "dataset SOP Class/Instance UID differs from the C-STORE request")
        part10 = item.part10()
        began = time.perf_counter()
        try:
            blob = self._blobs.put(*part10)
        except BlobError as exc:
            raise Refused("blob_store_unavailable", f"blob store: {exc}") from None
        dicom_metrics.BLOB_LATENCY.observe(time.perf_counter() - began)
        record = events.inbound_record(header, receipt, blob, sum(map(len, part10)))
        began = time.perf_counter()
        try:
            # Keyed by study so one study's instances stay in order on one partition.
            self._writer.put(
                DICOM_INBOUND, header.study_uid.encode(), record.to_json(), timeout=self._settings.store_timeout + 1
            )
        except SinkUnavailable as exc:
            raise Refused("kafka_unavailable", f"storage unavailable: {exc}") from None
        dicom_metrics.KAFKA_LATENCY.observe(time.perf_counter() - began)
        # No receive audit here: the worker writes it for every event it reads (as for HL7), and one
        # Kafka write per image less is ~10 % more images/s at 8 associations on two cores.
        log.info(
            "dicom.instance_stored",
            message_id=record.message_id,
            study=hash_id(record.study_uid),
            sop_instance=hash_id(record.sop_instance_uid),
            modality=record.modality,
            transfer_syntax=record.transfer_syntax,
            bytes=record.size,
            calling_ae=hash_id(record.calling_ae),
            peer=record.peer,
        )

    def _refuse(self, item: Received, refusal: Refused, started: float) -> tuple[int, str]:
        receipt = item.receipt
        status = STATUS_OF_REASON[refusal.reason]
        metrics.NEGATIVE.labels(LISTENER, refusal.reason).inc()
        # The dead letter keeps the Part-10 form (file meta + the dataset bytes as received), so that it
        # says its own transfer syntax and opens as a file.
        raw = b"".join(item.part10())
        dead = events.dead_letter(receipt, refusal.reason, refusal.detail, raw, self._settings.dead_letter_max_raw)
        audit = events.reject_audit(receipt, dead, status, len(item.dataset))
        if refusal.reason == "kafka_unavailable":
            # Kafka just failed us: do not make the sender wait a second time; these are written if
            # it comes back within the producer's own timeout.
            self._writer.put_later(DICOM_DEADLETTER, None, dead.to_json())
            dead_lettered = False
        else:
            dead_lettered = self._dead_letter(dead)
        self._writer.put_later(AUDIT_EVENTS, dead.message_id.encode(), audit.to_json())
        log.warning(
            "dicom.instance_refused",
            reason=refusal.reason,
            status=f"0x{status:04X}",
            detail=refusal.detail,
            sop_instance=hash_id(receipt.sop_instance_uid),
            calling_ae=hash_id(receipt.calling_ae),
            dead_letter_id=dead.message_id if dead_lettered else None,
            peer=receipt.peer,
        )
        return self._answer(status, refusal.detail, started)

    def _dead_letter(self, dead: DeadLetter) -> bool:
        try:
            self._writer.put(DICOM_DEADLETTER, None, dead.to_json(), timeout=self._settings.store_timeout + 1)
        except Exception as exc:  # the answer must still go out, whatever broke
            log.error("dicom.dead_letter_failed", reason=dead.reason, error=str(exc)[:200])
            return False
        metrics.DEAD_LETTERED.labels(LISTENER, dead.reason).inc()
        return True

    def _answer(self, status: int, comment: str, started: float) -> tuple[int, str]:
        metrics.ACKNOWLEDGED.labels(LISTENER, f"{status:04X}").inc()
        metrics.ACK_LATENCY.labels(LISTENER).observe(time.perf_counter() - started)
        return status, comment[:ERROR_COMMENT_MAX]
