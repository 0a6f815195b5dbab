"""The Faust agents on ``hl7.inbound`` and ``dicom.inbound``: thin glue around the feeds
(:mod:`pipeline.hl7_feed`, :mod:`pipeline.dicom_feed`). Both agents are one :class:`BatchHandler` over a
different :class:`~pipeline.feed.Feed`, with the same guarantees; each has its own worker thread and its
own ``decided`` table.

Per micro-batch (``MEDROUTE_BATCH_SIZE`` records or ``MEDROUTE_BATCH_MS``, whichever comes first):

1. read each record; skip ids the ``decided`` table already holds (a redelivery) or that occur
   twice in the batch;
2. extract (or fetch and decode the image), classify (one ``predict`` call) and decide in a worker
   thread, so the event loop keeps heartbeating to Kafka while the model runs;
3. publish decisions, dead letters and audit events and wait until Kafka has stored all of them;
4. only then record the ids in the ``decided`` table, and wait until its changelog records are stored;
5. only then acknowledge the source events, so their offsets may be committed.

Why this order: a crash before 3 completes leaves nothing marked and nothing committed, so the
batch is processed again (at-least-once). A crash between 3 and 4 can publish a decision twice,
with the same message id as key, so consumers recognise it. A crash after 4 but before the offset
commit (the common case: commits are periodic) redelivers the batch, and the table, restored from
its changelog, turns every record into a skip: no second decision. Marking before publishing would
instead lose the decision of a crash in between, which is worse than a duplicate.

A failure that is not one record's fault (the model, Kafka) acknowledges nothing and crashes the
worker (exit status 1); systemd or Kubernetes restarts it and the batch is redelivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import faust
import structlog
from faust.types import AgentT, EventT, StreamT

from medroute.logs import hash_id
from pipeline import metrics
from pipeline.feed import Feed
from pipeline.ledger import DecidedTable, create_ledger, table_name
from pipeline.outcomes import Outcome, Rejected
from pipeline.publish import FaustPublisher, Publisher, messages_for

log = structlog.get_logger(__name__)


def agent_name(feed: Feed) -> str:
    return f"classify-{feed.kind}"


class BatchHandler:
    """Steps 1 to 4 of the module docstring for one micro-batch of events."""

    def __init__(self, feed: Feed, publisher: Publisher, ledger: DecidedTable, executor: Executor) -> None:
        self.feed = feed
        self.publisher = publisher
        self.ledger = ledger
        self.executor = executor

    async def handle(self, events: Sequence[EventT]) -> None:
        # Each outcome is kept with its source partition, the identity the ledger knows it by and its place.
        outcomes: list[tuple[int, str, Outcome, str]] = []
        fresh: list[tuple[int, Any, str]] = []
        seen: set[str] = set()
        for event in events:
            message = event.message
            item = self.feed.read(event.value)
            # An unreadable payload has no message id: its place in the topic identifies it.
            identity = item.message_id or f"{message.topic}:{message.partition}:{message.offset}"
            if identity in seen or identity in self.ledger:
                metrics.DUPLICATES.inc()
                log.info("duplicate_skipped", message=hash_id(identity), partition=message.partition)
                continue
            seen.add(identity)
            place = f"{message.topic}:{message.partition}:{message.offset}"
            if isinstance(item, Rejected):
                outcomes.append((message.partition, identity, item, place))
            else:
                fresh.append((message.partition, item, place))
        if fresh:
            loop = asyncio.get_running_loop()
            decided = await loop.run_in_executor(self.executor, self._process, [r for _, r, _ in fresh])
            outcomes.extend((p, r.message_id, o, at) for (p, r, at), o in zip(fresh, decided, strict=True))
        if not outcomes:
            return
        await self.publisher.publish([m for _, _, outcome, at in outcomes for m in messages_for(outcome, at)])
        await self.publisher.publish(self.ledger.record([(i, o, p) for p, i, o, _ in outcomes]))
        now = datetime.now(UTC)
        for _, _, outcome, _ in outcomes:
            _observe(outcome, now)

    def _process(self, records: list[Any]) -> list[Outcome]:
        return self.feed.process(records)


def _observe(outcome: Outcome, now: datetime) -> None:
    if isinstance(outcome, Rejected):
        metrics.DEAD_LETTERED.labels(outcome.dead_letter.reason).inc()
        return
    decision = outcome.decision
    metrics.DECISIONS.labels(decision.rule).inc()
    if outcome.classification is not None:
        metrics.CLASSIFIED.labels(outcome.classification.model, outcome.classification.label).inc()
    received = _parse_time(outcome.record.received_at)
    if received is not None:
        metrics.END_TO_END_LATENCY.observe(max(0.0, (now - received).total_seconds()))


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def install(
    app: faust.App,
    feed: Feed,
    *,
    batch_size: int,
    batch_seconds: float,
    publisher: Publisher | None = None,
) -> AgentT:
    """Add the feed's ``decided`` table and agent to ``app``; returns the agent."""
    name = agent_name(feed)
    ledger = create_ledger(app, table_name(feed.kind))
    # A thread per feed: a batch of large images being decoded does not hold up HL7 reports.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    handler = BatchHandler(feed, publisher or FaustPublisher(app), ledger, executor)
    inbound = app.topic(feed.topic, key_serializer="raw", value_serializer="raw")

    @app.agent(inbound, name=name)
    async def classify(stream: StreamT) -> None:
        # noack_take: events are acknowledged here, after their batch is published and marked.
        async for events in stream.noack_take(batch_size, within=batch_seconds):
            try:
                await handler.handle(events)
            except Exception as exc:
                # Not one record's fault: stop without acknowledging, so the batch comes back.
                log.error("batch_failed", agent=name, error=type(exc).__name__, events=len(events))
                await app.crash(exc)
                return
            for event in events:
                await stream.ack(event)

    return classify
