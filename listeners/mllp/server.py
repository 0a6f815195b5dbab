"""The MLLP listener: an asyncio TCP (optionally TLS) server that stores each HL7 message before it
acknowledges it.

Frames on one connection are handled one after the other (MLLP is request/response, and a sender's
order matters); connections are served concurrently, which is where throughput comes from. On SIGTERM
the listener stops accepting, lets frames already being handled finish (up to
``MEDROUTE_MLLP_SHUTDOWN_GRACE`` seconds), closes idle connections and then stops the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import TracebackType

import structlog

from formats.hl7.mllp import Frame, FrameError, MllpDecoder, wrap
from listeners import metrics
from listeners.mllp.intake import LISTENER, Intake
from listeners.mllp.settings import MllpSettings
from listeners.mllp.shared_window import SharedWindow
from listeners.processes import sibling_processes
from listeners.sink import KafkaSink, RecordSink
from medroute import eventloop
from medroute.config import METRICS_HOST, METRICS_PORT, KafkaSettings
from medroute.logs import configure_logging
from medroute.metrics import start_metrics_server

log = structlog.get_logger("listeners.mllp")
READ_SIZE = 256 * 1024


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class _Connection:
    """Book-keeping for graceful shutdown: an idle connection may be cancelled, a busy one finishes."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.idle = True
        self.frames = 0


class MllpServer:
    """``async with MllpServer(settings, sink) as server:`` serves on ``server.port`` until exit."""

    def __init__(self, settings: MllpSettings, sink: RecordSink) -> None:
        self.settings = settings
        self.intake = Intake(sink, settings)
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._port is None:
            raise RuntimeError("server is not started")
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection,
            self.settings.host,
            self.settings.port,
            ssl=self.settings.ssl_context(),
            backlog=256,
            reuse_port=self.settings.processes > 1,
            limit=READ_SIZE,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info(
            "mllp.listening",
            host=self.settings.host,
            port=self.port,
            tls=bool(self.settings.tls_cert),
            strict=self.settings.strict,
        )

    async def stop(self) -> None:
        """Stop accepting, let busy connections finish their frames, close the rest."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            if connection.idle:
                connection.task.cancel()
        busy = [c.task for c in self._connections]
        if busy:
            _, late = await asyncio.wait(busy, timeout=self.settings.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        log.info("mllp.stopped")

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(task)
        self._connections.add(connection)
        peer = _peer_name(writer)
        metrics.CONNECTIONS.labels(LISTENER).inc()
        log.info("mllp.connection_open", peer=peer)
        try:
            await self._serve_connection(connection, reader, writer, peer)
        except (ConnectionError, OSError) as exc:
            log.info("mllp.connection_error", peer=peer, error=type(exc).__name__)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Our own shutdown closed this connection: end quietly (asyncio reports a cancelled
            # connection task as an error).
        finally:
            self._connections.discard(connection)
            metrics.CONNECTIONS.labels(LISTENER).dec()
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 5)
            log.info("mllp.connection_closed", peer=peer, frames=connection.frames)

    async def _serve_connection(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        decoder = MllpDecoder(self.settings.max_frame)
        discarded = 0
        while not self._stopping:
            connection.idle = True
            try:
                async with asyncio.timeout(self.settings.idle_timeout):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                log.info("mllp.idle_timeout", peer=peer, in_frame=decoder.in_frame)
                data = b""
            connection.idle = False
            events: list[Frame | FrameError] = [*decoder.feed(data)] if data else [*decoder.close()]
            if decoder.discarded != discarded:
                metrics.DISCARDED_BYTES.labels(LISTENER).inc(decoder.discarded - discarded)
                discarded = decoder.discarded
            for event in events:
                if isinstance(event, Frame):
                    connection.frames += 1
                    reply = await self.intake.handle_frame(event.payload, peer)
                else:
                    reply = await self.intake.handle_frame_error(event, peer)
                if reply is not None:
                    writer.write(wrap(reply))
                    await writer.drain()
            if not data:
                break


async def serve(
    settings: MllpSettings | None = None,
    sink: RecordSink | None = None,
    kafka: KafkaSettings | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the listener until SIGTERM/SIGINT (or ``stop`` is set).

    Without ``sink`` a :class:`KafkaSink` on ``kafka`` (default: the environment's Kafka settings) is
    created, started and stopped here; a sink passed in belongs to the caller. The duplicate window is
    shared through ``kafka`` unless a sink is passed without it.
    """
    settings = settings or MllpSettings()
    stop = stop or asyncio.Event()
    owned = sink is None
    shared = settings.dedup_window > 0 and (owned or kafka is not None)  # a test's own sink: no Kafka to share
    kafka = kafka or KafkaSettings()
    if sink is None:
        sink = KafkaSink(kafka, timeout=settings.store_timeout)
        await sink.start()
    server = MllpServer(settings, sink)
    # Before the port opens: a resend stored before a restart, or by a sibling process, is known.
    window = SharedWindow(kafka, server.intake.recent) if shared else None
    if window is not None:
        await window.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread / platform
            loop.add_signal_handler(signum, stop.set)
    try:
        async with server:
            await stop.wait()
            log.info("mllp.shutting_down")
    finally:
        await server.intake.flush()
        if window is not None:
            await window.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        if owned and isinstance(sink, KafkaSink):
            await sink.stop()


def _serve_sibling() -> None:
    """A further listener process on the same port (see :mod:`listeners.processes`)."""
    configure_logging("listener.mllp")
    eventloop.run(serve())


def main() -> int:
    """Entry point of ``medroute listen mllp`` and ``python -m listeners.mllp``.

    With ``MEDROUTE_MLLP_PROCESSES`` > 1 the further processes share the port through SO_REUSEPORT
    and the kernel spreads connections over them. They share one duplicate window through Kafka
    (:mod:`listeners.mllp.shared_window`). Only this first process serves the metrics port.
    """
    configure_logging("listener.mllp")
    settings = MllpSettings()
    metrics_port = METRICS_PORT()
    if metrics_port:
        start_metrics_server(metrics_port, METRICS_HOST())
    with sibling_processes(settings.processes - 1, _serve_sibling, settings.shutdown_grace):
        eventloop.run(serve(settings))
    return 0
