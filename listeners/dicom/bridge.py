"""A :class:`~listeners.sink.RecordSink` for threads: pynetdicom calls its handlers in one thread per
association, while the Kafka producer is asyncio. One event loop runs in a background thread with one
sink on it; handler threads hand it coroutines and wait for the outcome with a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from listeners.sink import RecordSink, SinkUnavailable
from medroute import eventloop

log = structlog.get_logger("listeners.dicom")


class ThreadedSink:
    """Runs ``make_sink()`` (called on the loop) and its ``start``/``stop`` if it has them."""

    def __init__(self, make_sink: Callable[[], RecordSink]) -> None:
        factory = eventloop.loop_factory()
        self._loop = factory() if factory is not None else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dicom-kafka", daemon=True)
        self._make_sink = make_sink
        self._sink: RecordSink | None = None
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._thread.start()
        self._run(self._start(), timeout=None)

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self._run(self._stop(), timeout=timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            log.warning("dicom.sink_stop_timeout")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def put(self, topic: str, key: bytes | None, value: bytes, timeout: float) -> None:
        """Return once the record is stored; raise :class:`SinkUnavailable` otherwise."""
        try:
            self._run(self._put(topic, key, value), timeout=timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise SinkUnavailable(f"Kafka did not confirm the write within {timeout:g}s") from None

    def put_later(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write without waiting (audit events after the answer); a failure is logged."""
        self._loop.call_soon_threadsafe(self._spawn, topic, key, value)

    def _spawn(self, topic: str, key: bytes | None, value: bytes) -> None:
        task = self._loop.create_task(self._put_logged(topic, key, value))
        self._background.add(task)  # a reference, or the task may be collected mid-flight
        task.add_done_callback(self._background.discard)

    def _run(self, coroutine: Coroutine[Any, Any, None], timeout: float | None) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    async def _start(self) -> None:
        self._sink = self._make_sink()
        start = getattr(self._sink, "start", None)
        if start is not None:
            await start()

    async def _stop(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        stop = getattr(self._sink, "stop", None)
        if stop is not None:
            await stop()

    async def _put(self, topic: str, key: bytes | None, value: bytes) -> None:
        if self._sink is None:
            raise SinkUnavailable("sink is not started")
        await self._sink.put(topic, key, value)

    async def _put_logged(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            await self._put(topic, key, value)
        except SinkUnavailable as exc:
            log.warning("dicom.background_write_failed", topic=topic, error=str(exc))
