"""Traffic for the end-to-end benchmark: MLLP senders that log when each message went and was ACKed, and a
follower of Kafka that logs when each message's decision arrived.

A decision carries the listener's ``message_id``, not the sender's control id (MSH-10). The stored record
on ``hl7.inbound`` carries both, in clear, and is written before the ACK: following that topic maps one
to the other with one small JSON read per message, where the worker's audit events carry the control id
only as a keyed hash, among three other events per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer

from formats.hl7.mllp_client import MllpClient, parse_ack
from medroute.config import HL7_INBOUND, ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import consumer, topic_partitions
from tools.benchmarks.common import MessageSource

FETCH_WAIT_MS = 5


@dataclass
class SendLog:
    """Per control id, ``time.perf_counter()`` when its send began and when its ACK came."""

    began: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)

    def acked_by(self, moment: float) -> int:
        return sum(1 for at in self.acked.values() if at <= moment)

    def ack_latencies_ms(self) -> list[float]:
        return [(at - self.began[cid]) * 1000 for cid, at in self.acked.items()]


async def send_for(
    port: int, source: MessageSource, prefix: str, connections: int, seconds: float, rate: float | None = None
) -> SendLog:
    """``connections`` MLLP senders, each waiting for an ACK before its next message, for ``seconds``;
    at ``rate`` messages/s in all when given (staggered, so they do not send in bursts), else as fast as
    the ACKs come. Control ids are ``prefix`` and a running number."""
    log = SendLog()
    numbers = itertools.count()
    interval = connections / rate if rate else 0.0
    stop_at = time.perf_counter() + seconds

    async def sender(index: int) -> None:
        client = MllpClient("127.0.0.1", port)
        await client.connect()
        next_at = time.perf_counter() + interval * index / connections
        try:
            while True:
                if interval:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += interval
                began = time.perf_counter()
                if began >= stop_at:
                    return
                n = next(numbers)
                control_id = f"{prefix}{n:07d}"
                message = source.message(n, control_id)
                log.began[control_id] = began
                ack = await client.send(message, timeout=30)
                log.acked[control_id] = time.perf_counter()
                if parse_ack(ack).code != "AA":
                    raise RuntimeError(f"unexpected ACK {ack[:160]!r}")
        finally:
            await client.close()

    await asyncio.gather(*(sender(i) for i in range(connections)))
    return log


class DecisionFollower:
    """Follows ``hl7.inbound`` and ``routing.decisions`` from their ends at :meth:`start`: maps message ids
    to control ids, and keeps when the first decision for each control id reached this process."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.control_of: dict[str, str] = {}  # message_id -> control id
        self.decided: dict[str, float] = {}  # control id -> perf_counter() of its first decision's arrival
        self.duplicates = 0
        self._watches: list[set[str]] = []  # control ids that wait_for calls still wait for
        self._early: dict[str, float] = {}  # message_id -> arrival of a decision read before its record
        self._reader: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partitions = [*await topic_partitions(self.settings, HL7_INBOUND)]
        partitions += await topic_partitions(self.settings, ROUTING_DECISIONS)
        # Fetches wait up to 5 ms for 64 KiB: a decision may reach this process up to 5 ms late, for a
        # tenth of the fetch requests (at fetch.min.bytes 1 the follower cost more CPU than the senders).
        self._reader = consumer(self.settings, fetch_max_wait_ms=FETCH_WAIT_MS, fetch_min_bytes=64 * 1024)
        await self._reader.start()
        self._reader.assign(partitions)
        await self._reader.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, before anything is sent
            await self._reader.position(tp)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._reader is not None:
            await self._reader.stop()

    async def _follow(self) -> None:
        assert self._reader is not None
        while True:
            fetched = await self._reader.getmany(timeout_ms=200)
            now = time.perf_counter()
            for tp, records in fetched.items():
                if tp.topic == HL7_INBOUND:
                    for record in records:
                        stored = json.loads(record.value)
                        self.control_of[stored["message_id"]] = stored["control_id"]
                        if stored["message_id"] in self._early:
                            self._decide(stored["control_id"], self._early.pop(stored["message_id"]))
                    continue
                for record in records:
                    # Decisions are keyed by their patient's order key: the message id is in the value.
                    message_id = orjson.loads(record.value).get("message_id", "")
                    control_id = self.control_of.get(message_id)
                    if control_id is None:
                        self._early.setdefault(message_id, now)
                    else:
                        self._decide(control_id, now)

    def _decide(self, control_id: str, at: float) -> None:
        if control_id in self.decided:
            self.duplicates += 1
        else:
            self.decided[control_id] = at
            for watch in self._watches:
                watch.discard(control_id)

    def count(self, control_ids: Collection[str], by: float | None = None) -> int:
        """Decisions arrived for ``control_ids`` (by ``by``, a perf_counter() moment, when given)."""
        return sum(1 for cid in control_ids if cid in self.decided and (by is None or self.decided[cid] <= by))

    def last(self, control_ids: Collection[str]) -> float | None:
        """When the last decision for ``control_ids`` arrived (None before any)."""
        return max((self.decided[cid] for cid in control_ids if cid in self.decided), default=None)

    async def wait_for(self, control_ids: Collection[str], timeout: float, alive: Callable[[], bool]) -> bool:
        """Whether every one of ``control_ids`` was decided within ``timeout`` seconds (False as soon as
        ``alive()`` is False: the worker ended)."""
        deadline = time.perf_counter() + timeout
        remaining = {cid for cid in control_ids if cid not in self.decided}
        self._watches.append(remaining)  # emptied by _decide: no rescans while tens of thousands are pending
        try:
            while remaining:
                if self._task is not None and self._task.done():
                    self._task.result()  # the follower failed: say why
                if time.perf_counter() > deadline or not alive():
                    return False
                await asyncio.sleep(0.05)
            return True
        finally:
            self._watches = [watch for watch in self._watches if watch is not remaining]
