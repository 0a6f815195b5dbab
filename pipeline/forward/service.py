"""``medroute forward``: a forwarder per destination of the destinations file, in one process.

The file is checked again every ``MEDROUTE_FORWARD_RELOAD_SECONDS``: a changed file that reads cleanly is
applied (new destinations start, removed ones stop after their current attempts, changed ones restart),
one that does not is refused and the running destinations stay as they were; either way a ``reload``
audit event says what happened. Several processes may run the same file: each destination's consumer
group shares its partitions among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from medroute import blobstore, eventloop
from medroute.config import AUDIT_EVENTS, METRICS_HOST, KafkaSettings
from medroute.kafka.client import durable_producer
from medroute.kafka.topics import ensure_topics
from medroute.logs import configure_logging
from medroute.metrics import start_metrics_server
from medroute.records import AuditEvent
from medroute.sealing import BlobError
from pipeline.forward import status
from pipeline.forward.destinations import Destination, Destinations, DestinationsError, load_destinations
from pipeline.forward.forwarder import ACTOR, Forwarder, Sender
from pipeline.forward.items import BlobSource, InboundRecords, ItemSource
from pipeline.forward.ledger import DeliveredLedger
from pipeline.forward.metrics import ForwardCollector
from pipeline.forward.senders import make_sender
from pipeline.forward.settings import ForwardSettings
from pipeline.watch import FileWatch

log = structlog.get_logger(__name__)

EXIT_CONFIG = 2
RESTART_SECONDS = 5.0
AUDIT_LINGER_MS = 20


@dataclass
class _Running:
    destination: Destination
    forwarder: Forwarder
    sender: Sender
    task: asyncio.Task


class ForwardService:
    def __init__(self, kafka: KafkaSettings, settings: ForwardSettings, destinations: Destinations,
                 blobs: BlobSource | None) -> None:  # fmt: skip
        self._kafka = kafka
        self._settings = settings
        self._destinations = destinations
        self._inbound = InboundRecords(kafka)
        self._items = ItemSource(blobs, self._inbound)
        self._running: dict[str, _Running] = {}
        # Kept across restarts of a destination's forwarder (a crash, a changed entry): what it delivered
        # stays known to this process even when the ledger's Kafka topic had not stored it yet.
        self._ledgers: dict[str, DeliveredLedger] = {}
        self._stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._audit_producer: AIOKafkaProducer | None = None

    @property
    def forwarders(self) -> list[Forwarder]:
        # list() first: the metrics endpoint's thread reads this while the loop may start or stop a forwarder.
        return [running.forwarder for running in list(self._running.values())]

    async def run(self) -> None:
        await ensure_topics(self._kafka)
        # No linger: a ledger entry must reach Kafka as soon as the receiver has acknowledged its item (the
        # window between the two is the one double delivery a crash can cause; a 5 ms linger widened it).
        self._producer = durable_producer(self._kafka)
        await self._producer.start()
        # Audit events are waited for only before a commit, which runs beside the next batch: they may
        # linger and travel in few requests (one per item had been half the broker's produce requests).
        self._audit_producer = durable_producer(self._kafka, linger_ms=AUDIT_LINGER_MS)
        await self._audit_producer.start()
        await self._inbound.start()
        try:
            for destination in self._destinations:
                self._start(destination)
            watch = FileWatch(self._settings.destinations)
            tick = min(x for x in (self._settings.reload_seconds, self._settings.status_seconds, 1.0) if x > 0)
            since_status = 0.0
            self._settings.heartbeat.parent.mkdir(parents=True, exist_ok=True)
            while not self._stopping.is_set():
                self._settings.heartbeat.touch()  # alive: `medroute health forward` reads its age
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), tick)
                since_status += tick
                if since_status >= self._settings.status_seconds:
                    since_status = 0.0
                    await status.publish(self._producer, self.forwarders)
                if self._settings.reload_seconds > 0 and watch.changed():
                    await self.reload()
                await self._restart_crashed()
        finally:
            forwarders = self.forwarders
            await asyncio.gather(*(self._stop(name) for name in list(self._running)))
            await status.publish(self._producer, forwarders, stopped=True)
            await self._inbound.stop()
            await self._audit_producer.stop()
            await self._producer.stop()

    def stop(self) -> None:
        self._stopping.set()

    def _start(self, destination: Destination) -> None:
        assert self._producer is not None and self._audit_producer is not None
        sender = make_sender(destination, self._producer)
        ledger = self._ledgers.get(destination.name)
        if ledger is None:
            ledger = DeliveredLedger(destination.name, self._kafka, self._producer, self._settings.ledger_lookback)
            self._ledgers[destination.name] = ledger
        forwarder = Forwarder(destination, self._kafka, sender, self._producer, self._items, ledger,
                              self._audit_producer)  # fmt: skip
        task = asyncio.create_task(forwarder.run(), name=f"forward-{destination.name}")
        self._running[destination.name] = _Running(destination, forwarder, sender, task)

    async def _stop(self, name: str) -> None:
        running = self._running.pop(name)
        running.forwarder.stop()
        with contextlib.suppress(Exception):
            await running.task
        await running.sender.close()

    async def _restart_crashed(self) -> None:
        for name, running in list(self._running.items()):
            if running.task.done() and not self._stopping.is_set():
                error = running.task.exception() if not running.task.cancelled() else None
                log.error("forwarder_crashed", destination=name, error=type(error).__name__ if error else None,
                          detail=str(error)[:300] if error else None)  # fmt: skip
                await self._stop(name)
                await asyncio.sleep(RESTART_SECONDS)
                self._start(running.destination)

    async def reload(self) -> bool:
        """Apply the destinations file as it is now, or refuse it and keep the running ones."""
        path = self._settings.destinations
        try:
            new = load_destinations(path)
        except DestinationsError as exc:
            log.error("destinations_refused", error=str(exc))
            await self._audit_reload({"outcome": "refused", "error": str(exc)[:500]})
            return False
        old = {d.name: d for d in self._destinations}
        fresh = {d.name: d for d in new}
        removed = sorted(set(old) - set(fresh))
        added = sorted(set(fresh) - set(old))
        changed = sorted(name for name in set(old) & set(fresh) if _settings_of(old[name]) != _settings_of(fresh[name]))
        for name in (*removed, *changed):
            if name in self._running:
                await self._stop(name)
        for name in removed:
            self._ledgers.pop(name, None)
        for name in (*added, *changed):
            self._start(fresh[name])
        self._destinations = new
        log.info("destinations_reloaded", added=added, removed=removed, changed=changed)
        await self._audit_reload({"outcome": "applied", "added": added, "removed": removed, "changed": changed})
        return True

    async def _audit_reload(self, details: dict) -> None:
        assert self._producer is not None
        details = {"what": "destinations", "file": str(self._settings.destinations), **details}
        event = AuditEvent(action="reload", actor=ACTOR, message_id=None, details=details)
        await self._producer.send_and_wait(AUDIT_EVENTS, event.to_json())


def _settings_of(destination: Destination) -> Destination:
    """A destination's settings apart from where its entry starts in the file."""
    from dataclasses import replace

    return replace(destination, line=0)


def open_blobs(destinations: Destinations) -> BlobSource | None:
    """The blob store, when a destination takes DICOM items."""
    if not any("dicom" in d.kinds for d in destinations):
        return None
    return blobstore.from_env()


def main() -> int:
    configure_logging("forward")
    settings = ForwardSettings()
    try:
        destinations = load_destinations(settings.destinations)
        blobs = open_blobs(destinations)
    except (DestinationsError, BlobError) as exc:
        log.error("startup_refused", error=str(exc))
        print(f"medroute forward: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    service = ForwardService(KafkaSettings(), settings, destinations, blobs)
    if settings.metrics_port:
        REGISTRY.register(ForwardCollector(lambda: service.forwarders))
        start_metrics_server(settings.metrics_port, METRICS_HOST())

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stop)
        await service.run()

    log.info("forward_starting", destinations=[d.name for d in destinations], file=str(settings.destinations))
    eventloop.run(serve())
    return 0
