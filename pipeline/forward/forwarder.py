"""One destination's forwarder: its own consumer group on ``routing.decisions``, delivering what names it.

Per batch of decisions (``getmany``):

1. decisions that do not name this destination, or whose ids the ledger holds, are done at once;
2. the rest are grouped by their Kafka key (the patient or study): one key's items go one after the other,
   in offset order, different keys side by side, at most ``concurrency`` deliveries in flight;
3. a delivery that fails is retried with exponential backoff and jitter; the breaker holds every delivery
   while the receiver keeps failing; a refusal, or a retryable failure on the last attempt, puts the
   decision on ``forward.deadletter`` with the last error;
4. a finished item (delivered or dead-lettered) is handed to the ledger's producer at once (not awaited
   one by one: the chain goes on while the entry travels), and
5. when the batch is done and Kafka has stored every ledger entry, offsets are committed up to the first
   unfinished decision of each partition (while the next batch is already being delivered).

While a batch runs (a receiver that is down can hold it for hours) the consumer keeps polling with its
partitions paused, so the group does not take it for dead. On stop or on a rebalance, deliveries stop
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
from collections import defaultdict
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
from pipeline.forward.errors import DeliveryError, PermanentError, RetryableError, UnreachableError
from pipeline.forward.items import Item, ItemSource
from pipeline.forward.ledger import DEADLETTER, DELIVERED, DeliveredLedger
from pipeline.forward.policy import Breaker

log = structlog.get_logger(__name__)

ACTOR = "forwarder"
GROUP_PREFIX = "medroute-forward-"


class Sender(Protocol):
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
        self.ledger = ledger
        self._max_batch = max_batch
        settings = destination.breaker
        self.breaker = Breaker(settings.failures, settings.open_seconds, settings.max_open_seconds)
        self.stats = ForwardStats()
        self._slots = asyncio.Semaphore(destination.concurrency)
        self._stopping = asyncio.Event()
        self._abort = asyncio.Event()  # stop between attempts: stop() or a rebalance
        self._batch: asyncio.Task | None = None
        self._settling: asyncio.Task | None = None  # the last batch's commit
        self._loaded: set[int] = set()  # decision partitions whose ledger entries are read back
        self._consumer: AIOKafkaConsumer | None = None
        self._pending_audit: list[asyncio.Future] = []

    # -- lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until :meth:`stop`."""
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
                batch = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
                # getmany fills a batch from one partition first; what the others hold now joins it, so
                # that more keys (patients, studies) can be delivered side by side.
                for tp in self._consumer.assignment() - set(batch):
                    batch.update(await self._consumer.getmany(tp, timeout_ms=0, max_records=self._max_batch))
                records = [r for tp in sorted(batch, key=lambda t: t.partition) for r in batch[tp]]
                if records:
                    await self._run_batch(records)
        finally:
            await self._finish_batch()
            await self._consumer.stop()
            log.info("forwarder_stopped", destination=self.name)

    def stop(self) -> None:
        self._stopping.set()
        self._abort.set()

    async def _run_batch(self, records: Sequence[ConsumerRecord]) -> None:
        assert self._consumer is not None
        if not self._stopping.is_set():
            self._abort.clear()
        task = self._batch = asyncio.create_task(self._process(records))
        self._consumer.pause(*self._consumer.assignment())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=1.0)
                if task.done():
                    break
                # Polling keeps this member in its group while a receiver holds the batch up.
                stray = await self._consumer.getmany(timeout_ms=0)
                for tp, recs in stray.items():  # from partitions assigned meanwhile: read them next time
                    self._consumer.seek(tp, recs[0].offset)
        finally:
            await self._finish_batch()
            self._consumer.resume(*self._consumer.assignment())

    async def _finish_batch(self, wait: bool = False) -> None:
        """Wait for the batch in flight (if any), and commit what it finished. The commit runs while the next
        batch is delivered (it waits for the batch's ledger entries first, a round trip or two); with
        ``wait``, and before the next commit, it is waited for."""
        task, self._batch = self._batch, None
        if task is not None:
            entries = await asyncio.shield(task)
            self._seek_back(entries)  # before the next fetch: what did not finish comes next
            await self._settled()
            self._settling = asyncio.create_task(self._settle(entries))
        if wait:
            await self._settled()

    async def _settled(self) -> None:
        """Wait for the commit in flight; its failure (a ledger entry Kafka did not store) is raised here."""
        settling, self._settling = self._settling, None
        if settling is not None:
            await settling

    async def _settle(self, entries: Sequence[_Entry]) -> None:
        await self.ledger.flush()  # every finished item's entry stored before any offset moves
        await self._flush_audit()
        await self._commit(entries)

    # -- one batch -----------------------------------------------------------------------------------

    async def _process(self, records: Sequence[ConsumerRecord]) -> list[_Entry]:
        await self._load_ledgers(records)
        entries = [_Entry(record, self._relevant(record)) for record in records]
        chains: dict[tuple[int, bytes | None], list[_Entry]] = defaultdict(list)
        for entry in entries:
            if entry.decision is None:
                entry.done = True
            else:
                chains[(entry.record.partition, entry.record.key)].append(entry)
        await self._items.prefetch(e.decision for chain in chains.values() for e in chain if e.decision)
        await asyncio.gather(*(self._chain(chain) for chain in chains.values()))
        return entries

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
        if decision.message_id in self.ledger:
            self.stats.duplicates += 1
            log.info("already_forwarded", destination=self.name, message=hash_id(decision.message_id))
            return None
        if decision.kind not in self.destination.kinds:
            return decision  # refused in _deliver, with a dead letter that says why
        return decision

    async def _chain(self, chain: list[_Entry]) -> None:
        """One key's items, in order; stops at the first that does not finish (stop, rebalance)."""
        seen: set[str] = set()
        for entry in chain:
            decision = entry.decision
            assert decision is not None
            if decision.message_id in seen or decision.message_id in self.ledger:  # twice in one batch
                self.stats.duplicates += 1
                entry.done = True
                continue
            seen.add(decision.message_id)
            entry.done = await self._deliver(entry.record, decision)
            if not entry.done:
                return

    async def _deliver(self, record: ConsumerRecord, decision: RoutingDecision) -> bool:
        """True when the item is finished (delivered or dead-lettered and in the ledger)."""
        attempt = 0  # attempts that reached the receiver
        tries = 0  # every try, for the backoff while the receiver cannot be reached
        while not self._abort.is_set():
            if not await self._breaker_allows():
                return False
            tries += 1
            started = time.monotonic()
            async with self._slots:
                self.stats.in_flight += 1
                try:
                    if decision.kind not in self.destination.kinds:
                        why = f"a {self.destination.type} destination takes no {decision.kind} items"
                        raise PermanentError("unsupported_kind", why)
                    item = await self._items.item(decision)
                    async with asyncio.timeout(self.destination.timeout * 2 + 5):
                        outcome = await self._sender.send(item)
                except UnreachableError as exc:
                    self.breaker.failure()
                    self._attempt(decision, attempt, "unreachable", exc.code, started)
                    error: DeliveryError | None = exc
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
                    await self.ledger.record(decision.message_id, DELIVERED, record.partition, record.offset)
                    self._attempt(decision, attempt + 1, "delivered", outcome, started)
                    self.stats.delivered += 1
                    self.stats.last_delivered_at = time.time()
                    return True
                finally:
                    self.stats.in_flight -= 1
            self.stats.last_error = error.code
            await self._pause(self.destination.backoff.delay(max(attempt, tries)))
        return False

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
        await self.ledger.record(decision.message_id, DEADLETTER, record.partition, record.offset)
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
        event = AuditEvent(
            action="forward",
            actor=ACTOR,
            message_id=decision.message_id,
            details={"destination": self.name, "type": self.destination.type, "kind": decision.kind, **details},
        )
        self._pending_audit.append(
            asyncio.ensure_future(
                self._audit_producer.send(AUDIT_EVENTS, event.to_json(), key=decision.message_id.encode())
            )
        )

    async def _flush_audit(self) -> None:
        pending, self._pending_audit = self._pending_audit, []
        deliveries = await asyncio.gather(*pending)
        await asyncio.gather(*deliveries)

    def _seek_back(self, entries: Sequence[_Entry]) -> None:
        """Each partition's first unfinished decision is read again next."""
        assert self._consumer is not None
        blocked: set[int] = set()
        for entry in entries:  # in offset order per partition
            if entry.done or entry.record.partition in blocked:
                continue
            blocked.add(entry.record.partition)
            tp = TopicPartition(entry.record.topic, entry.record.partition)
            if not self._stopping.is_set() and tp in self._consumer.assignment():
                self._consumer.seek(tp, entry.record.offset)

    async def _commit(self, entries: Sequence[_Entry]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        blocked: set[int] = set()
        for entry in entries:  # in offset order per partition
            tp = TopicPartition(entry.record.topic, entry.record.partition)
            if entry.record.partition in blocked:
                continue
            if entry.done:
                offsets[tp] = entry.record.offset + 1
            else:
                blocked.add(entry.record.partition)
        assigned = self._consumer.assignment()
        owned = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if tp in assigned}
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:  # a rebalance took them: they come back
            log.warning("commit_failed", destination=self.name, error=type(exc).__name__)

    async def on_revoked(self) -> None:
        """Before partitions move: stop between attempts, commit what finished."""
        if self._batch is not None:
            self._abort.set()
        await self._finish_batch(wait=True)
        self._loaded.clear()  # another member may have delivered meanwhile: read the ledger again


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._forwarder.on_revoked()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
