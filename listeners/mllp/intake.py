"""What the listener does with one frame: read it, store it (or dead-letter it), then answer.

The order is the listener's promise: a positive ACK is built only after ``sink.put`` of the record has
returned. A refused message is dead-lettered (raw bytes + reason) and audited before its negative ACK;
if that write fails the sender still gets the negative ACK. The "receive" audit event of a stored
message is written by the worker from the record (``pipeline/audit.py``), off the ACK path, so the
listener writes only "reject" events. This module knows nothing of sockets, so it is unit-tested with
an in-memory sink.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from formats.hl7 import charsets, validate
from formats.hl7.ack import ack_code, build_ack, should_answer
from formats.hl7.errors import STORAGE_UNAVAILABLE, MessageError, Outcome, Reason
from formats.hl7.message import Message, MshHeader, check_structure, read_header, read_message
from formats.hl7.mllp import FrameError
from formats.hl7.record import hl7_record
from listeners import metrics
from listeners.mllp.dedup import RecentMessages, identity_key, window_entry
from listeners.mllp.settings import MllpSettings
from listeners.sink import RecordSink, SinkUnavailable
from medroute.config import AUDIT_EVENTS, HL7_DEADLETTER, HL7_INBOUND, HL7_RECEIVED_IDS
from medroute.logs import hash_id
from medroute.records import AuditEvent, DeadLetter, utc_now

LISTENER = "mllp"
ACTOR = "listener.mllp"
log = structlog.get_logger("listeners.mllp")


def _salvage(payload: bytes) -> tuple[MshHeader, str]:
    """Header of a message that could not be decoded, read as Latin-1 so that fields echoed into the
    ACK come back byte for byte as the sender wrote them."""
    body = payload.removeprefix(charsets.UTF8_BOM)
    return read_header(body.decode("latin-1")), "latin-1"


def _structural_error(payload: bytes, charset_error: MessageError) -> MessageError:
    """For a message that failed decoding, a structural problem is the better answer: binary garbage
    is "no MSH" (AR), not "bad bytes for ASCII" (AE)."""
    try:
        check_structure(payload.removeprefix(charsets.UTF8_BOM).decode("latin-1"))
    except MessageError as structural:
        return structural
    return charset_error


class Intake:
    def __init__(self, sink: RecordSink, settings: MllpSettings) -> None:
        self._sink = sink
        self._settings = settings
        self.recent = RecentMessages(settings.dedup_window, settings.dedup_max)
        self._in_flight: dict[str, asyncio.Future[bool]] = {}
        self._sharing: set[asyncio.Task[None]] = set()  # entries for the shared window being written

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        """The ACK to send for one complete frame (unframed), or None when none is wanted."""
        started = time.perf_counter()
        received_at = utc_now()
        metrics.RECEIVED.labels(LISTENER).inc()
        try:
            decoded = charsets.decode(payload, self._settings.default_charset, self._settings.charset_fallback)
        except MessageError as exc:
            header, codec = _salvage(payload)
            return await self._refuse(payload, peer, header, codec, _structural_error(payload, exc), started)
        try:
            message = read_message(decoded.text)
            if self._settings.strict:
                await asyncio.to_thread(validate.validate, message)
        except MessageError as exc:
            return await self._refuse(payload, peer, read_header(decoded.text), decoded.codec, exc, started)
        return await self._store(payload, peer, decoded, message, received_at, started)

    async def handle_frame_error(self, error: FrameError, peer: str) -> bytes | None:
        """Dead-letter a framing problem; only a complete oversize frame gets an answer."""
        if error.answerable:
            metrics.RECEIVED.labels(LISTENER).inc()
        exc = MessageError(error.reason, error.detail)
        header, codec = _salvage(error.raw)
        started = time.perf_counter()
        return await self._refuse(error.raw, peer, header, codec, exc, started, answer=error.answerable)

    # -- accepted messages ---------------------------------------------------------------------

    async def _store(
        self,
        payload: bytes,
        peer: str,
        decoded: charsets.Decoded,
        message: Message,
        received_at: str,
        started: float,
    ) -> bytes | None:
        header = message.header
        identity = identity_key(header.sending_application, header.sending_facility, header.control_id)
        if await self._already_stored(identity):
            metrics.DUPLICATES.labels(LISTENER).inc()
            log.info("mllp.duplicate", control_id=hash_id(header.control_id), peer=peer)
            return self._answer(header, decoded.codec, Outcome.ACCEPT, started)
        record = hl7_record(payload, decoded, header, peer=peer, received_at=received_at)
        # Keyed by patient so one patient's messages stay in order on one partition.
        key = (message.patient_id or header.control_id).encode("utf-8")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[identity] = done
        stored, failure = False, ""
        try:
            await self._sink.put(HL7_INBOUND, key, record.to_json())
            stored = True
            self.recent.add(identity)
        except SinkUnavailable as exc:
            failure = str(exc)
        finally:
            self._in_flight.pop(identity, None)
            done.set_result(stored)  # False also when cancelled mid-put: not known to be stored
        if not stored:
            metrics.NEGATIVE.labels(LISTENER, STORAGE_UNAVAILABLE.code).inc()
            log.warning("mllp.store_failed", control_id=hash_id(header.control_id), peer=peer, error=failure)
            return self._answer(
                header, decoded.codec, Outcome.REJECT, started, STORAGE_UNAVAILABLE, f"storage unavailable: {failure}"
            )
        # Not awaited: the entry only spares a resend a second copy, and a resend comes after a sender's
        # timeout (seconds), long after the entry is written; awaiting it halved throughput (docs/RELIABILITY.md).
        sharing = asyncio.get_running_loop().create_task(self._share(identity, record.message_id))
        self._sharing.add(sharing)
        sharing.add_done_callback(self._sharing.discard)
        if decoded.assumed:
            metrics.CHARSET_ASSUMED.labels(LISTENER, decoded.assumed).inc()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        log.info(
            "mllp.frame_accepted",
            control_id=hash_id(header.control_id),
            message_type=header.message_type,
            charset_assumed=decoded.assumed,
            latency_ms=latency_ms,
            peer=peer,
        )
        return self._answer(header, decoded.codec, Outcome.ACCEPT, started)

    async def flush(self) -> None:
        """Wait (bounded by the store timeout) for the shared-window entries still being written: at a clean
        stop they must reach Kafka, or a resend after the restart would be stored again."""
        if self._sharing:
            await asyncio.wait(set(self._sharing), timeout=self._settings.store_timeout)

    async def _share(self, identity: str, message_id: str) -> None:
        """Tell every listener process (and this one after a restart) that the message is stored. A failure
        costs only a possible second copy of a resend."""
        if self._settings.dedup_window <= 0:
            return
        try:
            await self._sink.put(HL7_RECEIVED_IDS, identity.encode("ascii"), window_entry(time.time(), message_id))
        except SinkUnavailable as exc:
            log.warning("mllp.shared_window_write_failed", error=str(exc))

    async def _already_stored(self, identity: str) -> bool:
        """Stored within the window (by any listener process), or being stored right now by another
        connection of this one and succeeding."""
        if self.recent.seen(identity):
            return True
        pending = self._in_flight.get(identity)
        return pending is not None and await asyncio.shield(pending)

    async def _put_audit(self, event: AuditEvent) -> None:
        try:
            await self._sink.put(AUDIT_EVENTS, event.message_id.encode() if event.message_id else None, event.to_json())
        except SinkUnavailable as exc:
            log.warning("mllp.audit_failed", action=event.action, error=str(exc))

    # -- refused messages ----------------------------------------------------------------------

    async def _refuse(
        self,
        raw: bytes,
        peer: str,
        header: MshHeader,
        codec: str,
        error: MessageError,
        started: float,
        answer: bool = True,
    ) -> bytes | None:
        reason = error.reason
        dead = DeadLetter(source=LISTENER, reason=reason.code, detail=error.detail, raw=raw, peer=peer)
        audit = AuditEvent(
            action="reject",
            actor=ACTOR,
            message_id=dead.message_id,
            details={
                "reason": reason.code,
                "hl7_error": reason.hl7_error,
                "control_id": hash_id(header.control_id),
                "message_type": header.message_type,
                "peer": peer,
                "bytes": len(raw),
            },
        )
        metrics.NEGATIVE.labels(LISTENER, reason.code).inc()
        stored, _ = await asyncio.gather(
            self._put_dead_letter(dead),
            self._put_audit(audit),
        )
        log.warning(
            "mllp.frame_rejected",
            reason=reason.code,
            hl7_error=reason.hl7_error,
            detail=error.detail,
            control_id=hash_id(header.control_id),
            dead_letter_id=dead.message_id if stored else None,
            peer=peer,
        )
        if not answer:
            return None
        return self._answer(header, codec, reason.outcome, started, reason, error.detail, error.location)

    async def _put_dead_letter(self, dead: DeadLetter) -> bool:
        try:
            await self._sink.put(HL7_DEADLETTER, None, dead.to_json())
        except SinkUnavailable as exc:
            log.error("mllp.dead_letter_failed", reason=dead.reason, error=str(exc))
            return False
        metrics.DEAD_LETTERED.labels(LISTENER, dead.reason).inc()
        return True

    # -- answers -------------------------------------------------------------------------------

    def _answer(
        self,
        header: MshHeader,
        codec: str,
        outcome: Outcome,
        started: float,
        reason: Reason | None = None,
        detail: str = "",
        location: str = "",
    ) -> bytes | None:
        if not should_answer(header, outcome):
            return None
        text = build_ack(header, outcome, reason, detail, location)
        metrics.ACKNOWLEDGED.labels(LISTENER, ack_code(outcome, header.enhanced_mode)).inc()
        metrics.ACK_LATENCY.labels(LISTENER).observe(time.perf_counter() - started)
        return charsets.encode(text, codec)
