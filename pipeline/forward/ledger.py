"""The delivered-ids ledger: which decisions a destination has finished (delivered or dead-lettered).

Each entry goes to the compacted topic ``forward.delivered`` (key ``<destination>:<delivery id>``: the message id,
with ``~<redrive id>`` for a dead-lettered decision that ``medroute redrive`` sent again) right after
the receiver acknowledged and before the decision's offset is committed; the forwarder then skips any
decision the ledger holds. So a decision delivered again after a crash, a rebalance or a worker that
published it twice is not delivered twice.

Entries are written to the ledger partition of the decision's partition (``p % ledger partitions``), so that
a forwarder given partition p of ``routing.decisions`` reads back only ledger partition p, and only from a
little before the oldest decision it is about to handle (``lookback``): a ledger entry is always written
after its decision, so nothing it needs is older.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition

from medroute.config import FORWARD_DELIVERED, KafkaSettings
from medroute.kafka.client import consumer, topic_partitions
from medroute.records import utc_now

DELIVERED, DEADLETTER = "delivered", "deadletter"


@dataclass(frozen=True)
class _Entry:
    partition: int
    key: bytes
    value: bytes


class DeliveredLedger:
    """One destination's finished message ids: in memory, backed by ``forward.delivered``."""

    def __init__(
        self,
        destination: str,
        kafka: KafkaSettings,
        producer: AIOKafkaProducer,
        lookback_seconds: float = 24 * 3600,
        max_entries: int = 1_000_000,
    ) -> None:
        self.destination = destination
        self._kafka = kafka
        self._producer = producer
        self._lookback = lookback_seconds
        self._max_entries = max_entries
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._partitions = 0
        self._unconfirmed: list[tuple[asyncio.Future, _Entry]] = []
        self._failed: list[_Entry] = []  # handed over, then lost (the broker restarting): sent again by start()

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._entries

    def key(self, message_id: str) -> bytes:
        return f"{self.destination}:{message_id}".encode()

    async def start(self) -> None:
        """Also at each restart of the destination's forwarder in this process, which keeps its ledger: the
        entries in memory stay (a crash does not make this process deliver them again) and the ones Kafka did
        not store are sent again (nor another process, after a rebalance)."""
        self._partitions = len(await topic_partitions(self._kafka, FORWARD_DELIVERED))
        failed, self._failed = self._failed, []
        for n, entry in enumerate(failed):
            try:
                await self._send(entry)
            except Exception:
                self._failed.extend(failed[n + 1 :])  # this one is back in the list already
                raise

    async def record(self, message_id: str, outcome: str, decision_partition: int, offset: int) -> None:
        """Hand one entry to the producer at once (it is on its way to Kafka before the next delivery starts);
        :meth:`flush` waits until Kafka has every entry handed over (acks=all)."""
        value = json.dumps({"outcome": outcome, "at": utc_now(), "offset": f"{decision_partition}:{offset}"})
        self._remember(message_id, outcome)
        await self._send(_Entry(decision_partition % self._partitions, self.key(message_id), value.encode()))

    async def _send(self, entry: _Entry) -> None:
        try:
            delivery = await self._producer.send(
                FORWARD_DELIVERED, entry.value, key=entry.key, partition=entry.partition
            )
        except Exception:
            self._failed.append(entry)
            raise
        self._unconfirmed.append((delivery, entry))

    async def flush(self) -> None:
        """Wait until Kafka has stored every entry recorded so far; raises if it has not (then nothing may be
        committed: the decisions come back; what is lost is kept for :meth:`start` to send again)."""
        pending, self._unconfirmed = self._unconfirmed, []
        outcomes = await asyncio.gather(*(delivery for delivery, _ in pending), return_exceptions=True)
        errors = [(entry, error) for (_, entry), error in zip(pending, outcomes, strict=True)
                  if isinstance(error, BaseException)]  # fmt: skip
        self._failed.extend(entry for entry, _ in errors)
        if errors:
            raise errors[0][1]

    async def load(self, decision_partition: int, oldest_timestamp_ms: int) -> int:
        """Read back this destination's entries for ``decision_partition`` written since a lookback before
        ``oldest_timestamp_ms``; returns how many were read."""
        partition = TopicPartition(FORWARD_DELIVERED, decision_partition % self._partitions)
        reader = consumer(self._kafka)
        await reader.start()
        try:
            reader.assign([partition])
            since = max(0, oldest_timestamp_ms - int(self._lookback * 1000))
            found = (await reader.offsets_for_times({partition: since}))[partition]
            end = (await reader.end_offsets([partition]))[partition]
            if found is None:
                return 0  # nothing written since then
            reader.seek(partition, found.offset)
            prefix = f"{self.destination}:".encode()
            count = 0
            while await reader.position(partition) < end:
                batches = await reader.getmany(partition, timeout_ms=1000)
                for record in batches.get(partition, []):
                    if record.key and record.key.startswith(prefix) and record.value:
                        self._remember(record.key[len(prefix) :].decode(), json.loads(record.value)["outcome"])
                        count += 1
            return count
        finally:
            await reader.stop()

    def _remember(self, message_id: str, outcome: str) -> None:
        self._entries[message_id] = outcome
        self._entries.move_to_end(message_id)
        while len(self._entries) > self._max_entries:  # the oldest go first; they are long committed
            self._entries.popitem(last=False)
