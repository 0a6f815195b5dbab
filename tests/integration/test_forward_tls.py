"""The network destinations over TLS, against receivers this project did not write, each requiring a client
certificate from the test CA (mutual TLS):

* mllp: python-hl7's ``hl7.mllp.start_hl7_server``, which passes ``ssl=`` on to ``loop.create_server``
  (run in a thread of the test; it keeps each raw MLLP block it got and answers AA);
* dicom: DCMTK ``storescp +tls`` in bit-preserving mode (``-rc``: a client certificate is required);
* http: Python's ``http.server`` on a socket wrapped with an ``ssl.SSLContext`` with ``CERT_REQUIRED``.

Each forwarder gets three destinations pointing at the same receiver: one whose ``ca`` trusts the receiver's
certificate (everything arrives, byte for byte), one whose ``ca`` is another CA, and one whose
``server_hostname`` is a name the receiver's certificate does not carry. The last two deliver nothing: the
forwarder treats a failed verification as an unreachable receiver (the item stays pending, however many
``attempts`` are configured; nothing is dead-lettered and nothing is sent in plaintext instead).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hl7
import pydicom
import pytest
from hl7.mllp import start_hl7_server

from medroute.blobstore import BlobStore
from medroute.config import AUDIT_EVENTS, FORWARD_DEADLETTER, KafkaSettings
from medroute.ports import free_port
from tests.integration.conftest import DICOM_TEST_BLOB_KEY
from tests.integration.dicom_peers import renumbered_copies, sample_file, split_part10
from tests.integration.forward_peers import (
    StoreScp,
    dicom_decision,
    hl7_decision,
    hl7_message,
    publish_sync,
    start_forwarder,
    wait_until,
)
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic_sync
from tests.tls_pki import Pki, make_pki

ATTEMPTS = 2  # of the destinations that must not deliver: they are tried more often than this, never dead-lettered
RETRY = "attempts: 2, backoff: {initial: 0.2, maximum: 0.5}, breaker: {failures: 100}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the receivers present."""
    return make_pki(tmp_path_factory.mktemp("other-pki")).ca


def server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: a client certificate from the test CA
    return context


def tls_entry(ca: Path, pki: Pki, server_hostname: str | None = None) -> str:
    hostname = f", server_hostname: {server_hostname}" if server_hostname else ""
    return f"tls: {{ca: '{ca}', cert: '{pki.client_cert}', key: '{pki.client_key}'{hostname}}}"


def start_tls_forwarder(
    kafka: KafkaSettings, home: Path, tag: str, network: str, pki: Pki, other_ca: Path
) -> ChildProcess:
    """``medroute forward`` with ``trusted-``, ``untrusted-`` and ``misnamed-{tag}``, each ``{network}`` plus its
    TLS section."""
    destinations = home / "destinations.yaml"
    destinations.write_text(
        "destinations:\n"
        f"  trusted-{tag}: {{{network}, {tls_entry(pki.ca, pki)}}}\n"
        f"  untrusted-{tag}: {{{network}, {RETRY}, {tls_entry(other_ca, pki)}}}\n"
        f"  misnamed-{tag}: {{{network}, {RETRY}, {tls_entry(pki.ca, pki, 'elsewhere.invalid')}}}\n"
    )
    return start_forwarder(kafka, home, destinations)


def publish_hl7_to_each(kafka: KafkaSettings, tag: str, first: int) -> tuple[list[bytes], set[str]]:
    """Three messages for ``trusted-{tag}`` and two each for ``untrusted-`` and ``misnamed-{tag}`` (numbered from
    ``first``): returns the trusted messages and the ids of the decisions that must be held."""
    trusted = [hl7_message(first + n, f"T{n:03d}") for n in range(3)]
    untrusted = [hl7_message(first + 100 + n, f"U{n:03d}") for n in range(2)]
    misnamed = [hl7_message(first + 200 + n, f"M{n:03d}") for n in range(2)]
    held = [hl7_decision(raw, [f"untrusted-{tag}"]) for raw in untrusted]
    held += [hl7_decision(raw, [f"misnamed-{tag}"]) for raw in misnamed]
    publish_sync(kafka, [*held, *(hl7_decision(raw, [f"trusted-{tag}"]) for raw in trusted)])
    return trusted, {d.message_id for d in held}


def assert_held_not_sent(kafka: KafkaSettings, ids: set[str], forwarder: ChildProcess) -> list[dict[str, Any]]:
    """The items in ``ids`` were tried more than ``ATTEMPTS`` times, each try failing before anything was
    handed over, and none was dead-lettered. Returns the failed attempts' audit events."""

    def failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["action"] == "forward" and e["message_id"] in ids]

    def tried_enough(events: list[dict[str, Any]]) -> bool:
        found = failures(events)
        return all(sum(e["message_id"] == i for e in found) > ATTEMPTS for i in ids)

    def settled(events: list[dict[str, Any]]) -> bool:
        return tried_enough(events) or any(e["details"]["outcome"] != "unreachable" for e in failures(events))

    events = failures(read_topic_sync(kafka, AUDIT_EVENTS, until=settled, timeout=40))
    assert {e["details"]["outcome"] for e in events} == {"unreachable"}  # never delivered, no attempt used up
    assert tried_enough(events), forwarder.log()[-3000:]
    letters = [r for r in read_topic_sync(kafka, FORWARD_DEADLETTER, timeout=2) if r["message_id"] in ids]
    assert letters == []  # held for when the TLS settings are fixed, not given up
    return events


# --- MLLP --------------------------------------------------------------------------------------------------


class Hl7TlsReceiver:
    """python-hl7's MLLP server with ``ssl=``: each block as received, each answered AA."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.port = free_port()
        self.received: list[bytes] = []
        self.peer_certificates: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _connected(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        self.peer_certificates.append(writer.get_extra_info("peercert"))
        try:
            while not writer.is_closing():
                block = await reader.readblock()
                self.received.append(block)
                writer.writemessage(hl7.parse(block.decode()).create_ack("AA"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def start(self) -> Hl7TlsReceiver:
        self._thread.start()
        serving = start_hl7_server(self._connected, "127.0.0.1", self.port, ssl=self.context)
        self._server = asyncio.run_coroutine_threadsafe(serving, self._loop).result(10)  # type: ignore[arg-type]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_mllp_over_mutual_tls_delivers_only_to_a_verified_receiver(
    kafka: KafkaSettings, pki: Pki, other_ca: Path, tmp_path: Path
) -> None:
    receiver = Hl7TlsReceiver(server_context(pki)).start()
    tag = uuid.uuid4().hex[:8]
    network = f"type: mllp, host: 127.0.0.1, port: {receiver.port}"
    forwarder = start_tls_forwarder(kafka, tmp_path, tag, network, pki, other_ca)
    try:
        trusted, held = publish_hl7_to_each(kafka, tag, first=0)

        assert wait_until(lambda: len(receiver.received) >= len(trusted), 30), forwarder.log()[-3000:]
        events = assert_held_not_sent(kafka, held, forwarder)
        assert {e["details"]["code"] for e in events} == {"tls_verify_failed"}  # the reason: the certificate
    finally:
        forwarder.stop()
        receiver.stop()
    assert sorted(receiver.received) == sorted(trusted)  # byte for byte, once each, and nothing else
    assert receiver.peer_certificates and all(receiver.peer_certificates)  # the forwarder presented its certificate


# --- DICOM -------------------------------------------------------------------------------------------------


def tls_storescp(directory: Path, pki: Pki) -> StoreScp:
    """DCMTK storescp with TLS, bit-preserving (+B), requiring a client certificate the test CA signed (-rc)."""
    tls = ("+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca), "-rc")
    return StoreScp(directory, options=tls)


def test_dicom_over_mutual_tls_delivers_only_to_a_verified_receiver(
    kafka: KafkaSettings, pki: Pki, other_ca: Path, tmp_path: Path
) -> None:
    storescp = tls_storescp(tmp_path / "storescp", pki).start()
    blobs = BlobStore(tmp_path / "blobs", DICOM_TEST_BLOB_KEY)
    tag = uuid.uuid4().hex[:8]
    # storescp serves one association at a time
    network = f"type: dicom, host: 127.0.0.1, port: {storescp.port}, called_ae: STORESCP, concurrency: 1"
    files = renumbered_copies(sample_file("CT_small.dcm"), tmp_path / "ct", 5)
    trusted, untrusted, misnamed = files[:3], files[3:4], files[4:]
    forwarder = start_tls_forwarder(kafka, tmp_path, tag, network, pki, other_ca)
    try:
        held = [dicom_decision(path, blobs, [f"untrusted-{tag}"]) for path in untrusted]
        held += [dicom_decision(path, blobs, [f"misnamed-{tag}"]) for path in misnamed]
        publish_sync(kafka, [*held, *(dicom_decision(path, blobs, [f"trusted-{tag}"]) for path in trusted)])

        assert wait_until(lambda: len(storescp.files()) >= len(trusted), 30), forwarder.log()[-3000:]
        events = assert_held_not_sent(kafka, {d.message_id for d in held}, forwarder)
        assert {e["details"]["code"] for e in events} == {"tls_verify_failed"}  # the reason: the certificate
    finally:
        forwarder.stop()
        storescp.stop()
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in trusted}
    stored = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in storescp.files()}
    assert set(stored) == set(sent) and len(storescp.files()) == len(trusted)  # nothing from the other two
    for uid, path in sent.items():  # the dataset byte for byte as medroute received it
        assert split_part10(stored[uid].read_bytes())[1] == split_part10(path.read_bytes())[1]


# --- HTTP --------------------------------------------------------------------------------------------------


class TlsIntake(ThreadingHTTPServer):
    """``http.server`` behind ``ssl.SSLContext.wrap_socket``: the handshake happens on accept; its failures
    are kept (the TLS alert the client sent says why it gave up)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", free_port()), IntakeHandler)
        self.context = context
        self.received: list[tuple[str, bytes, dict[str, Any]]] = []
        self.handshake_errors: list[str] = []

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(10)
        try:
            return self.context.wrap_socket(sock, server_side=True), address
        except OSError as exc:
            self.handshake_errors.append(getattr(exc, "reason", None) or type(exc).__name__)
            sock.close()
            raise


class IntakeHandler(BaseHTTPRequestHandler):
    server: TlsIntake

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, body, self.request.getpeercert()))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def intake(pki: Pki) -> Iterator[TlsIntake]:
    server = TlsIntake(server_context(pki))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_http_over_mutual_tls_delivers_only_to_a_verified_receiver(
    kafka: KafkaSettings, pki: Pki, other_ca: Path, intake: TlsIntake, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    network = f"type: http, url: 'https://127.0.0.1:{intake.server_port}/fhir/Binary', body: raw"
    forwarder = start_tls_forwarder(kafka, tmp_path, tag, network, pki, other_ca)
    try:
        trusted, held = publish_hl7_to_each(kafka, tag, first=300)

        assert wait_until(lambda: len(intake.received) >= len(trusted), 30), forwarder.log()[-3000:]
        events = assert_held_not_sent(kafka, held, forwarder)
        assert {e["details"]["code"] for e in events} == {"tls_verify_failed"}  # the reason: the certificate
    finally:
        forwarder.stop()
    assert sorted(body for _, body, _ in intake.received) == sorted(trusted)  # byte for byte, nothing else
    assert {path for path, _, _ in intake.received} == {"/fhir/Binary"}
    assert all(peer for _, _, peer in intake.received)  # the forwarder presented its client certificate
    # The forwarder refused the receiver's certificate itself (a TLS alert, "unknown CA" or "bad certificate"),
    # mid-handshake: it never sent an HTTP request in plaintext (that would read as WRONG_VERSION_NUMBER or
    # HTTP_REQUEST here).
    assert intake.handshake_errors, "no refused handshake seen by the receiver"
    assert {e for e in intake.handshake_errors if "ALERT" not in e} == set(), intake.handshake_errors
