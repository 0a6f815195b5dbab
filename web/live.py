"""What the web server knows of the running system, followed from Kafka by one background consumer.

Read without a consumer group (nothing is committed, the worker's group is untouched):

* ``routing.decisions``: the latest ``MEDROUTE_WEB_RECENT`` per partition at start, then every new one;
  new decisions are pushed to the live view's subscribers (server-sent events);
* ``audit.events``: the same window, for the audit log page;
* ``feedback``: all of it (reviewers' answers: an answered item leaves the review queue);
* ``hl7.inbound`` and ``dicom.inbound``: where each recent record sits (message id -> topic, partition,
  offset; nothing else is kept), so that a reviewer can open the item a decision is about;
* ``medroute.control``: promotions, so that the API classifies with the model the workers run;
* ``forward.status``: all of it (compacted): each destination's latest snapshot from its forwarder.

When Kafka goes away the follower reconnects by itself and starts over; ``/readyz`` says so meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition

from medroute.config import (
    AUDIT_EVENTS,
    CONTROL,
    DICOM_INBOUND,
    FEEDBACK,
    FORWARD_STATUS,
    HL7_INBOUND,
    ROUTING_DECISIONS,
    KafkaSettings,
)
from medroute.kafka.client import consumer, topic_partitions
from medroute.kafka.topics import ensure_topics
from medroute.records import DicomRecord, Feedback, Hl7Record, ModelPromotion, message_id_of

log = structlog.get_logger(__name__)

REVIEW_DESTINATION = "review-queue"
FOLLOWED = (ROUTING_DECISIONS, AUDIT_EVENTS, FEEDBACK, HL7_INBOUND, DICOM_INBOUND, CONTROL, FORWARD_STATUS)
FROM_BEGINNING = frozenset({FEEDBACK, CONTROL, FORWARD_STATUS})
RETRY_SECONDS = 2.0
SUBSCRIBER_QUEUE = 256

class Live:
    def __init__(
        self,
        settings: KafkaSettings | None,
        recent: int,
        on_promotion: Callable[[ModelPromotion], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.recent = recent
        self.on_promotion = on_promotion
        self.connected = False
        self._reset()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._promotions: set[asyncio.Task[None]] = set()

    def _reset(self) -> None:
        self.decisions: deque[dict[str, Any]] = deque(maxlen=self.recent)
        self.latest: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.audit: deque[dict[str, Any]] = deque(maxlen=self.recent)
        self.feedback: dict[str, dict[str, Any]] = {}
        self.locations: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self.destinations: dict[str, dict[str, Any]] = {}  # destination -> its forwarder's latest snapshot

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings is not None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("kafka_follow_failed", error=type(exc).__name__, retry_s=RETRY_SECONDS)
            self.connected = False
            await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self) -> None:
        assert self.settings is not None
        await ensure_topics(self.settings)
        reader = consumer(self.settings)
        await reader.start()
        try:
            partitions: list[TopicPartition] = []
            for topic in FOLLOWED:
                partitions += await topic_partitions(self.settings, topic)
            reader.assign(partitions)
            beginning = await reader.beginning_offsets(partitions)
            end = await reader.end_offsets(partitions)
            for tp in partitions:
                start = beginning[tp] if tp.topic in FROM_BEGINNING else max(beginning[tp], end[tp] - self.recent)
                reader.seek(tp, start)
            self._reset()
            self.connected = True
            log.info("kafka_following", topics=list(FOLLOWED))
            while True:
                batches = await reader.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        self._take(record, fresh=record.offset >= end[tp])
        finally:
            self.connected = False
            await reader.stop()

    # -- records ---------------------------------------------------------------------------------------

    def _take(self, record: ConsumerRecord, fresh: bool) -> None:
        topic = record.topic
        if topic in (HL7_INBOUND, DICOM_INBOUND):
            message_id = message_id_of(record.value)
            if message_id:
                self.locations[message_id] = (topic, record.partition, record.offset)
                self.locations.move_to_end(message_id)
                if len(self.locations) > 4 * self.recent:
                    self.locations.popitem(last=False)
            return
        try:
            value = json.loads(record.value)
        except (TypeError, ValueError):
            return
        if not isinstance(value, dict):
            return
        if topic == ROUTING_DECISIONS:
            self._decision(value, fresh)
        elif topic == AUDIT_EVENTS:
            self.audit.append(value)
        elif topic == FEEDBACK and isinstance(value.get("message_id"), str):
            self.feedback[value["message_id"]] = value
        elif topic == FORWARD_STATUS and record.key and isinstance(value.get("at"), int | float):
            self.destinations[record.key.decode("utf-8", "replace")] = value
        elif topic == CONTROL and self.on_promotion is not None:
            try:
                promotion = ModelPromotion.from_dict(value)
            except TypeError:
                return
            task = asyncio.create_task(self.on_promotion(promotion))
            self._promotions.add(task)
            task.add_done_callback(self._promotions.discard)

    def _decision(self, decision: dict[str, Any], fresh: bool) -> None:
        message_id = decision.get("message_id")
        if not isinstance(message_id, str) or decision.get("redrive_id"):
            return  # a redrive sends a decision made before again: not a decision of its own
        self.decisions.append(decision)
        self.latest[message_id] = decision
        self.latest.move_to_end(message_id)
        if len(self.latest) > self.recent:
            self.latest.popitem(last=False)
        if fresh:
            for queue in list(self._subscribers):
                if queue.full():  # a slow client loses the oldest, never blocks the follower
                    queue.get_nowait()
                queue.put_nowait(decision)

    def answered(self, feedback: Feedback) -> None:
        """An answer stored just now leaves the review queue at once, before the topic echoes it."""
        self.feedback[feedback.message_id] = feedback.to_dict()

    # -- the live view ---------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    # -- queries ---------------------------------------------------------------------------------------

    def find_decisions(
        self,
        label: str | None = None,
        destination: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first; ``since``/``until`` compare ISO-8601 UTC times (``decided_at``)."""
        found = []
        for decision in reversed(self.decisions):
            decided_at = str(decision.get("decided_at", ""))
            if label is not None and decision.get("label") != label:
                continue
            if destination is not None and destination not in (decision.get("destinations") or ()):
                continue
            if (since is not None and decided_at < since) or (until is not None and decided_at >= until):
                continue
            found.append(decision)
            if len(found) >= limit:
                break
        return found

    def counts(self, minutes: int = 60) -> list[dict[str, Any]]:
        """Decisions per minute (UTC, oldest first) of the last ``minutes`` that saw any, by label and destination."""
        buckets: dict[str, tuple[Counter[str], Counter[str]]] = {}
        for decision in self.decisions:
            minute = str(decision.get("decided_at", ""))[:16]
            labels, destinations = buckets.setdefault(minute, (Counter(), Counter()))
            labels[decision.get("label") or "(no label)"] += 1
            destinations.update(decision.get("destinations") or ())
        return [
            {"minute": minute, "total": sum(labels.values()), "labels": dict(labels), "destinations": dict(dests)}
            for minute, (labels, dests) in sorted(buckets.items())[-minutes:]
        ]

    def review_queue(self, limit: int = 200) -> list[dict[str, Any]]:
        """Latest decisions routed to review that no reviewer has answered, newest first."""
        pending = []
        for message_id, decision in reversed(self.latest.items()):
            if REVIEW_DESTINATION in (decision.get("destinations") or ()) and message_id not in self.feedback:
                pending.append(decision)
                if len(pending) >= limit:
                    break
        return pending

    def audit_events(self, action: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return _newest(self.audit, limit, lambda event: action is None or event.get("action") == action)

    async def fetch_record(self, message_id: str) -> Hl7Record | DicomRecord | None:
        """The inbound record a decision is about, read back from its topic (None: not among the recent)."""
        location = self.locations.get(message_id)
        if location is None or self.settings is None:
            return None
        topic, partition, offset = location
        tp = TopicPartition(topic, partition)
        reader = consumer(self.settings)
        await reader.start()
        try:
            reader.assign([tp])
            reader.seek(tp, offset)
            record = await asyncio.wait_for(reader.getone(tp), timeout=10)
        finally:
            await reader.stop()
        kind = Hl7Record if topic == HL7_INBOUND else DicomRecord
        return kind.from_json(record.value)


def _newest(
    items: Iterable[dict[str, Any]], limit: int, keep: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    found = []
    for item in reversed(list(items)):
        if keep(item):
            found.append(item)
            if len(found) >= limit:
                break
    return found
