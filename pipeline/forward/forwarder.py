"""One destination's forwarder: its own consumer group on ``routing.decisions``, delivering what names it.

1. Decisions that do not name this destination, or whose ids the ledger holds, are finished at once.
2. The rest join a lane per Kafka key (the patient or study): a lane delivers its items one after the
   other in offset order; lanes run side by side, at most ``concurrency`` deliveries in flight. Lanes
   outlive a fetch: a patient with many messages holds up only their own lane, never the next decisions.
   HL7 records are read with their batch; DICOM blobs ahead of their turn: the next one of each lane while
   the one before it goes, and up to ``concurrency`` more while every slot is busy (except for a ``dicom``
   destination, whose sender processes read each blob themselves).
3. A delivery that fails is retried with exponential backoff and jitter; the breaker holds every delivery
   while the receiver keeps failing; a refusal, or a retryable failure on the last attempt, puts the
   decision on ``forward.deadletter`` with the last error.
4. A finished item (delivered or dead-lettered) is handed to the ledger's producer at once (not awaited
   one by one: the lane goes on while the entry travels).
5. Beside the deliveries, offsets are committed up to each partition's first unfinished decision, once
   Kafka has stored the ledger entries handed over until then.

While many decisions wait (a receiver that is down can hold them for hours) fetching pauses and polling
goes on, so the group does not take this member for dead. On stop or on a rebalance, deliveries stop
between attempts and what finished is committed; the rest comes back (to this or another member).

The one window for a double delivery: the receiver has acknowledged, and the process dies before the
ledger entry reaches Kafka (the entry is sent the moment the ACK is read; one acks=all round trip, about
1-3 ms on a LAN). DICOM receivers store by SOP Instance UID and overwrite; an MLLP or HTTP receiver may see
that message twice. Messages the receiver took but had not acknowledged when the forwarder died are sent
again, as MLLP prescribes after a lost ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from medroute.config import AUDIT_EVENTS, FORWARD_DEADLETTER, ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import consumer
from medroute.logs import hash_id
from medroute.records import AuditEvent, ForwardDeadLetter, RoutingDecision
from pipeline.forward.destinations import Destination
from pipeline.forward.errors import (
    DeliveryError,
    PermanentError,
    RetryableError,
    SourceUnavailableError,
    UnreachableError,
)
from pipeline.forward.items import Item, ItemSource
from pipeline.forward.ledger import DEADLETTER, DELIVERED, DeliveredLedger
from pipeline.forward.policy import Breaker

log = structlog.get_logger(__name__)

ACTOR = "forwarder"
GROUP_PREFIX = "medroute-forward-"


class Sender(Protocol):
    """A destination type's delivery. One whose class sets ``reads_blobs = True`` reads a DICOM item's blob
    itself and is handed the item unread (``Item.data`` None); one with an ``async def start()`` is started
    before its first delivery."""

    async def send(self, item: Item) -> str:
        """Deliver one item; returns a short outcome ("AA", "0x0000 as received"); raises DeliveryError."""

    async def close(self) -> None: ...


def group_id(destination: str) -> str:
    return f"{GROUP_PREFIX}{destination}"


@dataclass
class ForwardStats:
    """What ``medroute forward status`` shows of a running forwarder (counts since it started)."""

    delivered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    retrying: int = 0  # items waiting to be tried again now
    in_flight: int = 0
    last_error: str | None = None
    last_delivered_at: float | None = None
    started_at: float = field(default_factory=time.time)


@dataclass
class _Entry:
    record: ConsumerRecord
    decision: RoutingDecision | None  # None: not for this destination, already finished or unreadable
    done: bool = False
    read_ahead: asyncio.Task[Item] | None = None  # its item, read while the one before it in its lane goes


class Forwarder:
    def __init__(
        self,
        destination: Destination,
        kafka: KafkaSettings,
        sender: Sender,
        producer: AIOKafkaProducer,
        items: ItemSource,
        ledger: DeliveredLedger,
        audit_producer: AIOKafkaProducer,
        max_batch: int = 500,
    ) -> None:
        self.destination = destination
        self.name = destination.name
        self._name_json = orjson.dumps(destination.name)  # as it appears in a decision's destinations
        self._kafka = kafka
        self._sender = sender
        self._producer = producer
        self._audit_producer = audit_producer
        self._items = items
        self._sender_reads_blobs = bool(getattr(sender, "reads_blobs", False))
        self.ledger = ledger
        self._max_batch = max_batch
        settings = destination.breaker
        self.breaker = Breaker(settings.failures, settings.open_seconds, settings.max_open_seconds)
        self.stats = ForwardStats()
        self._slots = asyncio.Semaphore(destination.concurrency)  # deliveries at the receiver at once
        # Blobs read (up to an image's size in memory each) and in a slot or next in line for one: the next are
        # read while the slots are busy, and no more than this many are held. (An HL7 item is read with its
        # batch: ahead already, and small.)
        self._staged = asyncio.Semaphore(2 * destination.concurrency)
        self._reads_ahead = 0  # blobs read for the lanes' next entries, not yet taken (see _read_ahead)
        self._stopping = asyncio.Event()
        self._abort = asyncio.Event()  # stop between attempts: stop() or a rebalance
        self._max_pending = max_batch * 8  # decisions admitted and not yet finished, at most
        self._pending: dict[int, deque[_Entry]] = defaultdict(deque)  # per partition, in offset order
        self._lanes: dict[tuple[int, bytes | None], deque[_Entry]] = {}  # per key, what waits to go
        self._lane_tasks: set[asyncio.Task] = set()
        self._progress = asyncio.Event()  # set as items finish
        self._crash: BaseException | None = None
        self._settling: asyncio.Task | None = None  # the commit in flight
        self._loaded: set[int] = set()  # decision partitions whose ledger entries are read back
        self._consumer: AIOKafkaConsumer | None = None
        self._pending_audit: list[asyncio.Future] = []

    # -- lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until :meth:`stop`."""
        if (start_sender := getattr(self._sender, "start", None)) is not None:
            await start_sender()
        await self.ledger.start()
        self._consumer = consumer(
            self._kafka,
            group_id=group_id(self.name),
            max_poll_records=self._max_batch,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        await self._consumer.start()
        self._consumer.subscribe([ROUTING_DECISIONS], listener=_Rebalance(self))
        log.info("forwarder_started", destination=self.name, type=self.destination.type)
        try:
            while not self._stopping.is_set():
                if self._crash is not None:
                    raise self._crash
                records = await self._next_records()
                if records:
                    await self._admit(records)
                self._settle_soon()
        finally:
            await self._halt()
            await self._consumer.stop()
            log.info("forwarder_stopped", destination=self.name)

    def stop(self) -> None:
        self._stopping.set()
        self._abort.set()

    async def _next_records(self) -> list[ConsumerRecord]:
        """The next decisions, from every assigned partition. While ``max_pending`` wait in the lanes (a
        receiver that is down can hold them for hours) the partitions are paused, and polling goes on so
        that the group does not take this member for dead."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        if sum(map(len, self._lanes.values())) >= self._max_pending:  # admitted and not yet finished
            self._consumer.pause(*assigned)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 1.0)
            self._progress.clear()
            batch = await self._consumer.getmany(timeout_ms=0)  # only partitions assigned meanwhile
        else:
            self._consumer.resume(*assigned)
            batch = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
            # getmany fills a batch from one partition first; what the others hold joins it at once, so
            # that the lanes of more keys (patients, studies) fill side by side.
            for tp in self._consumer.assignment() - set(batch):
                batch.update(await self._consumer.getmany(tp, timeout_ms=0, max_records=self._max_batch))
        return [r for tp in sorted(batch, key=lambda t: t.partition) for r in batch[tp]]

    # -- lanes: one per key, each delivering its items in order --------------------------------------

    async def _admit(self, records: Sequence[ConsumerRecord]) -> None:
        await self._load_ledgers(records)
        admitted = []
        for record in records:
            entry = _Entry(record, self._relevant(record))
            self._pending[record.partition].append(entry)
            if entry.decision is None:
                entry.done = True
            else:
                admitted.append(entry)
        await self._items.prefetch(entry.decision for entry in admitted if entry.decision)
        for entry in admitted:
            key = (entry.record.partition, entry.record.key)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = deque()
                task = asyncio.create_task(self._lane(key, lane))
                self._lane_tasks.add(task)
                task.add_done_callback(self._lane_ended)
            lane.append(entry)

    async def _lane(self, key: tuple[int, bytes | None], lane: deque[_Entry]) -> None:
        """One key's items, in offset order, as they are admitted; stops at the first that does not finish
        (stop, rebalance), leaving it and the rest to :meth:`_halt`."""
        try:
            while lane:
                entry, following = lane[0], (lane[1] if len(lane) > 1 else None)
                if following is not None:
                    self._read_ahead(following)
                next_blob = following.decision.blob if following is not None and following.decision else None
                entry.done = await self._finish(entry, next_blob)
                if not entry.done:
                    return
                lane.popleft()
                self._progress.set()
        finally:
            if not lane and self._lanes.get(key) is lane:
                del self._lanes[key]

    def _lane_ended(self, task: asyncio.Task) -> None:
        self._lane_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()  # raised by run(): the service restarts this forwarder

    async def _finish(self, entry: _Entry, next_blob: str | None) -> bool:
        decision = entry.decision
        assert decision is not None
        read_ahead = self._take_read_ahead(entry)
        if decision.delivery_id in self.ledger:  # published twice: finished by the first
            self.stats.duplicates += 1
            if read_ahead is not None:
                read_ahead.cancel()
            return True
        try:
            return await self._deliver(entry.record, decision, read_ahead, next_blob)
        finally:
            if read_ahead is not None and not read_ahead.done():
                read_ahead.cancel()  # stopped before its first try

    def _read_ahead(self, entry: _Entry) -> None:
        """Start reading the blob that is next in its lane (from disk or S3, then decrypted): a study goes out in
        order, one image at a time, and each would otherwise wait for its own read. At most ``concurrency``
        are held so. (A task per item would cost HL7 items, read with their batch, more than it saves.)"""
        if self._sender_reads_blobs or entry.decision is None or not entry.decision.blob or entry.read_ahead:
            return
        if self._reads_ahead < self.destination.concurrency:
            self._reads_ahead += 1
            entry.read_ahead = task = asyncio.create_task(self._items.item(entry.decision))
            task.add_done_callback(_retrieved)  # one that is never awaited (stop, rebalance) fails quietly

    def _take_read_ahead(self, entry: _Entry) -> asyncio.Task[Item] | None:
        task, entry.read_ahead = entry.read_ahead, None
        if task is not None:
            self._reads_ahead -= 1
        return task

    async def _halt(self) -> None:
        """Stop between attempts (stop, rebalance) and commit what finished; each partition's first
        unfinished decision is read again next (here, or by the member its partition goes to)."""
        assert self._consumer is not None
        self._abort.set()
        await asyncio.gather(*self._lane_tasks, return_exceptions=True)
        await self._settled()
        await self._settle(self._finished_offsets())
        for partition, entries in self._pending.items():
            tp = TopicPartition(ROUTING_DECISIONS, partition)
            if entries and not self._stopping.is_set() and tp in self._consumer.assignment():
                self._consumer.seek(tp, entries[0].record.offset)
        for entries in self._pending.values():
            for entry in entries:
                if (task := self._take_read_ahead(entry)) is not None:
                    task.cancel()
        self._lanes.clear()
        self._pending.clear()
        if not self._stopping.is_set():
            self._abort.clear()

    async def _load_ledgers(self, records: Sequence[ConsumerRecord]) -> None:
        oldest: dict[int, int] = {}
        for record in records:
            if record.partition not in self._loaded:
                oldest[record.partition] = min(oldest.get(record.partition, record.timestamp), record.timestamp)
        for partition, timestamp in oldest.items():
            count = await self.ledger.load(partition, timestamp)
            self._loaded.add(partition)
            log.info("ledger_loaded", destination=self.name, partition=partition, entries=count)

    def _relevant(self, record: ConsumerRecord) -> RoutingDecision | None:
        if self._name_json not in (record.value or b""):
            return None  # names another destination: most decisions, not worth decoding
        try:
            decision = RoutingDecision.from_json(record.value or b"")
        except (ValueError, TypeError) as exc:
            log.warning("decision_unreadable", destination=self.name, partition=record.partition,
                        offset=record.offset, error=type(exc).__name__)  # fmt: skip
            return None
        if self.name not in decision.destinations:
            return None
        if decision.delivery_id in self.ledger:
            self.stats.duplicates += 1
            log.info("already_forwarded", destination=self.name, message=hash_id(decision.message_id))
            return None
        return decision  # one of a kind this destination does not take is refused in _deliver, with a reason

    async def _deliver(
        self,
        record: ConsumerRecord,
        decision: RoutingDecision,
        read_ahead: asyncio.Task[Item] | None,
        next_blob: str | None = None,
    ) -> bool:
        """True when the item is finished (delivered or dead-lettered and in the ledger). ``read_ahead``: its
        item, if already being read (used by the first try only; a retry reads it again); ``next_blob``: the
        blob of the item that follows it in its lane, for a sender that reads blobs itself to read ahead."""
        attempt = 0  # attempts that reached the receiver
        tries = 0  # every try, for the backoff while the receiver cannot be reached
        while not self._abort.is_set():
            if not await self._breaker_allows():
                return False
            tries += 1
            started = time.monotonic()
            staged = bool(decision.blob) and not self._sender_reads_blobs
            async with self._staged if staged else contextlib.nullcontext():
                try:
                    if decision.kind not in self.destination.kinds:
                        why = f"a {self.destination.type} destination takes no {decision.kind} items"
                        raise PermanentError("unsupported_kind", why)
                    reading, read_ahead = read_ahead, None
                    # A blob is read before a slot is free, while the slots are busy with others.
                    item = await (reading or self._items.item(decision)) if staged else None
                    outcome = await self._send(decision, item, next_blob)
                except UnreachableError as exc:
                    self.breaker.failure()
                    self._attempt(decision, attempt, "unreachable", exc.code, started)
                    error: DeliveryError | None = exc
                except SourceUnavailableError as exc:  # medroute's own storage: not the receiver's doing
                    self._attempt(decision, attempt, "source_unavailable", exc.code, started)
                    error = exc
                except (RetryableError, TimeoutError) as exc:
                    exc = exc if isinstance(exc, RetryableError) else RetryableError("timeout", "no outcome in time")
                    self.breaker.failure()
                    attempt += 1
                    if attempt >= self.destination.attempts:
                        self._attempt(decision, attempt, "failed", exc.code, started)
                        return await self._dead_letter(record, decision, "attempts_exhausted", exc, attempt)
                    self._attempt(decision, attempt, "retry", exc.code, started)
                    error = exc
                except PermanentError as exc:
                    self.breaker.success()  # the receiver answered: it is up
                    attempt += 1
                    self._attempt(decision, attempt, "refused", exc.code, started)
                    return await self._dead_letter(record, decision, "refused", exc, attempt)
                except BaseException:
                    self.breaker.abandon()
                    raise
                else:
                    self.breaker.success()
                    await self.ledger.record(decision.delivery_id, DELIVERED, record.partition, record.offset)
                    self._attempt(decision, attempt + 1, "delivered", outcome, started)
                    self.stats.delivered += 1
                    self.stats.last_delivered_at = time.time()
                    return True
            self.stats.last_error = error.code
            await self._pause(self.destination.backoff.delay(max(attempt, tries)))
        return False

    async def _send(self, decision: RoutingDecision, item: Item | None, next_blob: str | None) -> str:
        """One attempt at the receiver, in one of the destination's ``concurrency`` slots."""
        async with self._slots:
            self.stats.in_flight += 1
            try:
                if item is None:  # an HL7 record (in memory already, read with its batch), or a blob left unread
                    item = await self._items.item(decision, with_blob=not self._sender_reads_blobs)
                    item.next_blob = next_blob
                async with asyncio.timeout(self.destination.timeout * 2 + 5):
                    return await self._sender.send(item)
            finally:
                self.stats.in_flight -= 1

    async def _breaker_allows(self) -> bool:
        while (wait := self.breaker.wait_time()) > 0:
            if not await self._pause(wait):
                return False
        return not self._abort.is_set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, counted as retrying; False when stopped meanwhile."""
        self.stats.retrying += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._abort.wait(), seconds)
        finally:
            self.stats.retrying -= 1
        return not self._abort.is_set()

    async def _dead_letter(
        self, record: ConsumerRecord, decision: RoutingDecision, reason: str, error: DeliveryError, attempts: int
    ) -> bool:
        letter = ForwardDeadLetter(
            destination=self.name,
            message_id=decision.message_id,
            kind=decision.kind,
            reason=reason,
            detail=f"{error.code}: {error.detail}"[:2000],
            attempts=attempts,
            decision=decision.to_dict(),
        )
        await self._producer.send_and_wait(FORWARD_DEADLETTER, letter.to_json(), key=decision.message_id.encode())
        await self.ledger.record(decision.delivery_id, DEADLETTER, record.partition, record.offset)
        self._audit(decision, {"outcome": "deadletter", "reason": reason, "code": error.code, "attempts": attempts})
        self.stats.dead_lettered += 1
        self.stats.last_error = error.code
        log.warning("forward_dead_lettered", destination=self.name, message=hash_id(decision.message_id),
                    reason=reason, code=error.code, attempts=attempts)  # fmt: skip
        return True

    # -- audit and commit ----------------------------------------------------------------------------

    def _attempt(self, decision: RoutingDecision, attempt: int, outcome: str, code: str, started: float) -> None:
        details = {"outcome": outcome, "code": code, "attempt": attempt,
                   "ms": round((time.monotonic() - started) * 1000, 1)}  # fmt: skip
        self._audit(decision, details)
        if outcome != "delivered":
            log.info("forward_attempt_failed", destination=self.name, message=hash_id(decision.message_id), **details)

    def _audit(self, decision: RoutingDecision, details: dict[str, Any]) -> None:
        """An audit event without PHI: codes, counts and names only (receivers' free text stays out)."""
        about = {"destination": self.name, "type": self.destination.type, "kind": decision.kind}
        if decision.redrive_id:
            about["redrive_id"] = decision.redrive_id
        event = AuditEvent(action="forward", actor=ACTOR, message_id=decision.message_id, details={**about, **details})
        self._pending_audit.append(
            asyncio.ensure_future(
                self._audit_producer.send(AUDIT_EVENTS, event.to_json(), key=decision.message_id.encode())
            )
        )

    async def _flush_audit(self) -> None:
        pending, self._pending_audit = self._pending_audit, []
        deliveries = await asyncio.gather(*pending)
        await asyncio.gather(*deliveries)

    def _finished_offsets(self) -> dict[int, int]:
        """Per partition, the offset after its finished prefix, where that prefix grew since last time."""
        offsets = {}
        for partition, entries in self._pending.items():
            while entries and entries[0].done:
                offsets[partition] = entries.popleft().record.offset + 1
        return offsets

    def _settle_soon(self) -> None:
        """Commit what finished since the last commit, beside the deliveries, unless a commit is running."""
        if self._settling is not None:
            if not self._settling.done():
                return
            self._settling.result()  # a ledger entry Kafka did not store: nothing may be committed
            self._settling = None
        offsets = self._finished_offsets()
        if offsets:
            self._settling = asyncio.create_task(self._settle(offsets))

    async def _settled(self) -> None:
        settling, self._settling = self._settling, None
        if settling is not None:
            await settling

    async def _settle(self, offsets: dict[int, int]) -> None:
        """Commit ``offsets`` once Kafka has stored every ledger entry and audit event handed over so far
        (those of the finished decisions among them)."""
        assert self._consumer is not None
        await self.ledger.flush()
        await self._flush_audit()
        assigned = self._consumer.assignment()
        owned = {tp: OffsetAndMetadata(offset, "") for partition, offset in offsets.items()
                 if (tp := TopicPartition(ROUTING_DECISIONS, partition)) in assigned}  # fmt: skip
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:  # a rebalance took them: they come back
            log.warning("commit_failed", destination=self.name, error=type(exc).__name__)

    async def on_revoked(self) -> None:
        """Before partitions move: stop between attempts, commit what finished."""
        await self._halt()
        self._loaded.clear()  # another member may have delivered meanwhile: read the ledger again


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._forwarder.on_revoked()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


def _retrieved(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
