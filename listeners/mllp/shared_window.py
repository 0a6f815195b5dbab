"""The duplicate window shared by every MLLP listener process, across restarts, through Kafka.

Right after a message is stored on ``hl7.inbound`` the listener writes one small record (its ACK does not
wait for it) to ``hl7.received.ids``: key = the digest of (MSH-3, MSH-4, MSH-10), value = when it was stored and
its record's message id. Each listener process reads that topic from ``now - window`` when it starts,
before it opens its port, and then follows it, so a resend stored by any process or before a restart
is answered AA without a second copy.

What remains (stated in docs/RELIABILITY.md): a resend that reaches another process before the entry is
written and read there (a few ms plus the follow lag, ~100 ms) or while the first copy is still being stored is
stored twice; so is a message whose entry could not be written (Kafka gone between the two writes). The
worker's decisions are keyed by message, so a second copy is decided again, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from listeners.mllp.dedup import RecentMessages
from medroute.config import HL7_RECEIVED_IDS, KafkaSettings
from medroute.kafka.client import consumer, topic_partitions

log = structlog.get_logger("listeners.mllp")
FOLLOW_WAIT_MS = 100  # the follow lag: how long a fetch waits for new entries
RETRY_SECONDS = 1.0


class SharedWindow:
    """Feeds ``recent`` with the entries every listener process writes; ``start`` returns once the
    entries of the last ``recent.window`` seconds are in (or after ``catch_up_timeout``, Kafka absent)."""

    def __init__(self, settings: KafkaSettings, recent: RecentMessages, catch_up_timeout: float = 10.0) -> None:
        self._settings = settings
        self._recent = recent
        self._catch_up_timeout = catch_up_timeout
        self._caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            await asyncio.wait_for(self._caught_up.wait(), self._catch_up_timeout)
        except TimeoutError:
            log.warning("mllp.shared_window_not_ready", waited_s=self._catch_up_timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except (KafkaError, OSError, LookupError) as exc:  # Kafka away or topic missing: keep trying
                log.warning("mllp.shared_window_unavailable", error=type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)

    async def _follow(self) -> None:
        partitions = await topic_partitions(self._settings, HL7_RECEIVED_IDS)
        reader = consumer(self._settings, fetch_max_wait_ms=FOLLOW_WAIT_MS)
        await reader.start()
        try:
            reader.assign(partitions)
            await self._seek_to_window(reader, partitions)
            ends = await reader.end_offsets(partitions)
            while True:
                for records in (await reader.getmany(timeout_ms=FOLLOW_WAIT_MS)).values():
                    for record in records:
                        self._take(record.key, record.value)
                if not self._caught_up.is_set() and all(await _positions_reached(reader, ends)):
                    self._caught_up.set()
                    log.info("mllp.shared_window_ready", entries=len(self._recent))
        finally:
            await reader.stop()

    async def _seek_to_window(self, reader: AIOKafkaConsumer, partitions: list) -> None:
        since_ms = int((time.time() - self._recent.window) * 1000)
        found = await reader.offsets_for_times({tp: since_ms for tp in partitions})
        for tp in partitions:
            if found.get(tp) is None:
                await reader.seek_to_end(tp)
            else:
                reader.seek(tp, found[tp].offset)

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        try:
            stored_at = float(orjson.loads(value or b"")["at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return  # not an entry of ours: ignore rather than stop following
        if key:
            self._recent.add(key.decode("ascii", "replace"), stored_at)


async def _positions_reached(reader: AIOKafkaConsumer, ends: dict) -> list[bool]:
    return [await reader.position(tp) >= end for tp, end in ends.items()]
