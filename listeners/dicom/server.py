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
from pydicom import config as pydicom_config
from pynetdicom import AE, _config, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import ThreadedAssociationServer

from formats.dicom.association import release_association, tune_association
from listeners import metrics
from listeners.dicom import metrics as dicom_metrics
from listeners.dicom.bridge import ThreadedSink
from listeners.dicom.contexts import supported_contexts
from listeners.dicom.dispatch import Dispatch
from listeners.dicom.fastpath import FastStoreDUL
from listeners.dicom.settings import DicomSettings
from listeners.dicom.store import LISTENER, RecordWriter, StoreHandler
from listeners.processes import sibling_processes
from listeners.sink import KafkaSink
from medroute import blobstore
from medroute.blobstore import Blobs
from medroute.config import METRICS_HOST, METRICS_PORT, KafkaSettings
from medroute.logs import configure_logging, hash_id
from medroute.metrics import start_metrics_server

log = structlog.get_logger("listeners.dicom")
# With 8+ associations opening at once the default backlog of 5 overflows and a sender waits ~1 s.
LISTEN_BACKLOG = 128
TLS_HANDSHAKE_TIMEOUT = 30.0


class _AssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a peer allowlist, connections spread over the listener's
    processes (:mod:`listeners.dicom.dispatch`), and TLS handshakes moved into the connection's own
    thread (pynetdicom shakes hands in the accept loop, where one silent client would stall every other).
    A sibling process "accepts" from its hand-over channel instead of a listening socket."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, *args: Any, settings: DicomSettings, dispatch: Dispatch | None, **kwargs: Any) -> None:
        self.settings = settings
        self.dispatch = dispatch
        super().__init__(*args, **kwargs)

    def _sibling_part(self) -> Dispatch | None:
        """This process's part when it is a sibling (served from its channel, not from the port)."""
        return self.dispatch if self.dispatch is not None and not self.dispatch.accepts else None

    def server_bind(self) -> None:
        sibling = self._sibling_part()
        if sibling is None:
            super().server_bind()
            return
        self.socket.close()
        self.socket = sibling.channel

    def server_activate(self) -> None:
        if self._sibling_part() is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sibling = self._sibling_part()
        if sibling is None:
            return self.socket.accept()
        client = sibling.receive()
        return client, client.getpeername()[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.dispatch is not None and self.dispatch.accepts and self.dispatch.hand_over(request):
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, before pynetdicom creates an association for it.
        if self.ssl_context:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                request.settimeout(TLS_HANDSHAKE_TIMEOUT)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                dicom_metrics.ASSOCIATIONS_REFUSED.labels("tls_handshake_failed").inc()
                log.warning("dicom.tls_handshake_failed", error=type(exc).__name__, peer=str(client_address[0]))
                self.shutdown_request(request)
                if self.dispatch is not None:
                    self.dispatch.closed()
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


def _on_open(event: Any, store: StoreHandler | None = None) -> None:
    """Before the association's threads start: with ``store``, C-STOREs take :mod:`listeners.dicom.fastpath`."""
    dul = event.assoc.dul
    if store is not None and type(dul) is DULServiceProvider:
        dul.__class__ = FastStoreDUL
        dul.store = store
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

    def __init__(
        self, settings: DicomSettings, blobs: Blobs, writer: RecordWriter, dispatch: Dispatch | None = None
    ) -> None:
        self.settings = settings
        self.dispatch = dispatch
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
        # pynetdicom makes a pydicom UID of every proposed abstract and transfer syntax (storescu proposes
        # over a hundred contexts), and pydicom matches each against a regex only to warn: ~5 % of the
        # listener's CPU. Values the listener relies on are checked where it reads them.
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        handlers = [
            (evt.EVT_C_STORE, self.handler),
            (evt.EVT_CONN_OPEN, _on_open, [self.handler if self.settings.fast_store else None]),
            (evt.EVT_CONN_CLOSE, self._on_close),
            (evt.EVT_REJECTED, _on_rejected),
        ]
        factory = partial(_AssociationServer, settings=self.settings, dispatch=self.dispatch)
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

    def _on_close(self, event: Any) -> None:
        _on_close(event)
        if self.dispatch is not None:
            self.dispatch.closed()  # one connection less in this process's load

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


def serve(
    settings: DicomSettings | None = None, stop: threading.Event | None = None, dispatch: Dispatch | None = None
) -> None:
    """Run the listener with the environment's blob store and Kafka until SIGTERM/SIGINT (or ``stop``);
    ``dispatch``: this process's part when the listener runs in several."""
    settings = settings or DicomSettings()
    stop = stop or threading.Event()
    blobs = blobstore.from_env()
    kafka = KafkaSettings()
    writer = ThreadedSink(lambda: KafkaSink(kafka, timeout=settings.store_timeout))
    writer.start()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    listener = DicomListener(settings, blobs, writer, dispatch)
    listener.start()
    try:
        stop.wait()
        log.info("dicom.shutting_down")
    finally:
        listener.stop()
        writer.stop()


def _serve_sibling(dispatch: Dispatch) -> None:
    """A further listener process, served the connections the first one hands it."""
    configure_logging("listener.dicom")
    serve(dispatch=dispatch)


def main() -> int:
    """Entry point of ``medroute listen dicom`` and ``python -m listeners.dicom``.

    With ``MEDROUTE_DICOM_PROCESSES`` > 1 this first process accepts every connection and hands each to
    the least busy process (:mod:`listeners.dicom.dispatch`). Only it serves the metrics port.
    """
    configure_logging("listener.dicom")
    settings = DicomSettings()
    metrics_port = METRICS_PORT()
    if metrics_port:
        start_metrics_server(metrics_port, METRICS_HOST())
    if settings.processes == 1:
        serve(settings)
        return 0
    ours, theirs = Dispatch.for_processes(settings.processes)
    with sibling_processes(len(theirs), _serve_sibling, settings.shutdown_grace, lambda n: (theirs[n - 1],)):
        for sibling in theirs:  # each sibling has its end now; ours must go, or a dead one looks alive
            sibling.close()
        serve(settings, dispatch=ours)
    return 0
