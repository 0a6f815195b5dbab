"""The DICOM listener: a pynetdicom C-STORE/C-ECHO SCP that stores each instance before it says success.

pynetdicom runs each association in its own thread and calls :class:`~listeners.dicom.store.StoreHandler`
there; the Kafka producer runs on an event loop in one background thread (:mod:`listeners.dicom.bridge`).
Connections from addresses outside ``MEDROUTE_DICOM_ALLOWED_PEERS`` are closed before any association;
calling AE titles outside ``MEDROUTE_DICOM_ALLOWED_AES`` are rejected (A-ASSOCIATE-RJ, "calling AE title
not recognized"). On SIGTERM the listener stops accepting, lets open associations finish (up to
``MEDROUTE_DICOM_SHUTDOWN_GRACE`` seconds), aborts the rest, then stops the producer.
"""

from __future__ import annotations

import signal
import socket
import socketserver
import ssl
import threading
import time
from functools import partial
from typing import Any

import structlog
from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from listeners import metrics
from listeners.dicom import metrics as dicom_metrics
from listeners.dicom.bridge import ThreadedSink
from listeners.dicom.contexts import supported_contexts
from listeners.dicom.settings import DicomSettings
from listeners.dicom.store import LISTENER, RecordWriter, StoreHandler
from listeners.dicom.transport import release_association, tune_association
from listeners.processes import sibling_processes
from listeners.sink import KafkaSink
from medroute.blobstore import BlobStore
from medroute.config import KafkaSettings, env_int, env_str
from medroute.logs import configure_logging, hash_id

log = structlog.get_logger("listeners.dicom")
# With 8+ associations opening at once the default backlog of 5 overflows and a sender waits ~1 s.
LISTEN_BACKLOG = 128
TLS_HANDSHAKE_TIMEOUT = 30.0


class _AssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with SO_REUSEPORT, a peer allowlist, and TLS handshakes moved into
    the connection's own thread (pynetdicom shakes hands in the accept loop, where one silent client
    would stall every other)."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, *args: Any, settings: DicomSettings, **kwargs: Any) -> None:
        self.settings = settings
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.settings.processes > 1:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, before pynetdicom creates an association for it.
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(TLS_HANDSHAKE_TIMEOUT)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                dicom_metrics.ASSOCIATIONS_REFUSED.labels("tls_handshake_failed").inc()
                log.warning("dicom.tls_handshake_failed", error=type(exc).__name__, peer=str(client_address[0]))
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.settings.peer_allowed(client_address[0]):
            return True
        dicom_metrics.ASSOCIATIONS_REFUSED.labels("peer_not_allowed").inc()
        log.warning("dicom.peer_refused", peer=f"{client_address[0]}:{client_address[1]}")
        return False

    def shutdown(self) -> None:
        # Our own server is not in the AE's list, which pynetdicom's shutdown() edits.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _on_open(event: Any) -> None:
    tune_association(event)
    metrics.CONNECTIONS.labels(LISTENER).inc()


def _on_close(event: Any) -> None:
    release_association(event)
    metrics.CONNECTIONS.labels(LISTENER).dec()


def _on_rejected(event: Any) -> None:
    assoc = event.assoc
    dicom_metrics.ASSOCIATIONS_REFUSED.labels("association_rejected").inc()
    log.warning(
        "dicom.association_rejected",
        calling_ae=hash_id(assoc.requestor.ae_title),
        called_ae=assoc.acceptor.ae_title,
        peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
    )


class DicomListener:
    """``with DicomListener(settings, blobs, writer) as listener:`` serves on ``listener.port``."""

    def __init__(self, settings: DicomSettings, blobs: BlobStore, writer: RecordWriter) -> None:
        self.settings = settings
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_associations = settings.max_associations
        self.ae.maximum_pdu_size = settings.max_pdu
        self.ae.network_timeout = settings.idle_timeout
        self.ae.acse_timeout = 30
        self.ae.dimse_timeout = settings.dimse_timeout
        self.ae.require_calling_aet = list(settings.allowed_aes)
        self.ae.require_called_aet = settings.require_called_ae
        self.handler = StoreHandler(settings, blobs, writer)
        self._server: _AssociationServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("listener is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        # pynetdicom's "standard" handlers format a debug line for every PDU and DIMSE message even when
        # nothing logs them: several % of a core under load. Our own events log what matters.
        _config.LOG_HANDLER_LEVEL = "none"
        handlers = [
            (evt.EVT_C_STORE, self.handler),
            (evt.EVT_CONN_OPEN, _on_open),
            (evt.EVT_CONN_CLOSE, _on_close),
            (evt.EVT_REJECTED, _on_rejected),
        ]
        factory = partial(_AssociationServer, settings=self.settings)
        self._server = factory(
            self.ae,
            (self.settings.host, self.settings.port),
            self.settings.ae_title,
            supported_contexts(),
            ssl_context=self.settings.ssl_context(),
            evt_handlers=handlers,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="dicom-accept", daemon=True)
        self._thread.start()
        log.info(
            "dicom.listening",
            host=self.settings.host,
            port=self.port,
            ae_title=self.settings.ae_title,
            tls=bool(self.settings.tls_cert),
            allowed_aes=len(self.settings.allowed_aes),
            allowed_peers=len(self.settings.allowed_peers),
        )

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting; let C-STOREs in progress finish within ``grace`` seconds; abort every
        association then (an idle or half-open one would otherwise hold the stop until its timeout)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        deadline = time.monotonic() + (self.settings.shutdown_grace if grace is None else grace)
        while self.handler.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            assoc.abort()
        log.info("dicom.stopped")

    def __enter__(self) -> DicomListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=5)


def serve(settings: DicomSettings | None = None, stop: threading.Event | None = None) -> None:
    """Run the listener with the environment's blob store and Kafka until SIGTERM/SIGINT (or ``stop``)."""
    settings = settings or DicomSettings()
    stop = stop or threading.Event()
    blobs = BlobStore.from_env()
    kafka = KafkaSettings()
    writer = ThreadedSink(lambda: KafkaSink(kafka, timeout=settings.store_timeout))
    writer.start()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    listener = DicomListener(settings, blobs, writer)
    listener.start()
    try:
        stop.wait()
        log.info("dicom.shutting_down")
    finally:
        listener.stop()
        writer.stop()


def _serve_sibling() -> None:
    """A further listener process on the same port (see :mod:`listeners.processes`)."""
    configure_logging("listener.dicom")
    serve()


def main() -> int:
    """Entry point of ``medroute listen dicom`` and ``python -m listeners.dicom``.

    With ``MEDROUTE_DICOM_PROCESSES`` > 1 the further processes share the port through SO_REUSEPORT
    and the kernel spreads associations over them. Only this first process serves the metrics port.
    """
    configure_logging("listener.dicom")
    settings = DicomSettings()
    metrics_port = env_int("MEDROUTE_METRICS_PORT", 0)
    if metrics_port:
        metrics.start_metrics_server(metrics_port, env_str("MEDROUTE_METRICS_HOST", "127.0.0.1") or "127.0.0.1")
    with sibling_processes(settings.processes - 1, _serve_sibling, settings.shutdown_grace):
        serve(settings)
    return 0
