"""TLS where it is configured, with real clients: MLLP with ``openssl s_client``, DICOM with DCMTK's
``storescu +tls``, HTTPS with ``requests``, Kafka over SSL against the local broker with an SSL listener.
Each listener requires client certificates from the site's CA here (mutual TLS); a plaintext client and a
client whose certificate another CA signed are refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from formats.hl7.mllp import wrap
from listeners.dicom.server import DicomListener
from listeners.dicom.settings import DicomSettings
from listeners.mllp.server import MllpServer
from listeners.mllp.settings import MllpSettings
from medroute.blobstore import BlobStore
from medroute.config import DICOM_INBOUND, HL7_INBOUND
from medroute.ports import free_port
from shell import health
from tests.integration.processes import ChildProcess
from tests.tls_pki import Pki, make_pki
from tests.unit.test_dicom_store import MemoryWriter
from tests.unit.test_mllp_server import ADT, MemorySink

needs = pytest.mark.skipif


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- MLLP ------------------------------------------------------------------------------------------


async def _s_client(port: int, pki: Pki, cert: Path | None, key: Path | None, sent: bytes) -> tuple[int, bytes]:
    """What ``openssl s_client`` (verifying the server against the site's CA, presenting ``cert`` if given)
    receives after sending ``sent``."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca)]
    command += ["-verify_return_error", "-quiet", "-ign_eof"]
    if cert and key:
        command += ["-cert", str(cert), "-key", str(key)]
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await asyncio.wait_for(process.communicate(sent), 30)
    return process.returncode or 0, out


@needs(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_mllp_over_mutual_tls_with_openssl_s_client(pki: Pki) -> None:
    sink = MemorySink()
    settings = replace(
        MllpSettings(port=0, host="127.0.0.1"),
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_ca=str(pki.ca),
        idle_timeout=2.0,  # the listener closes the idle connection, which ends s_client
    )
    async with MllpServer(settings, sink) as server:
        _, trusted = await _s_client(server.port, pki, pki.client_cert, pki.client_key, wrap(ADT))
        assert b"MSA|AA|ADT000123" in trusted
        _, rogue = await _s_client(server.port, pki, pki.rogue_cert, pki.rogue_key, wrap(ADT))
        _, anonymous = await _s_client(server.port, pki, None, None, wrap(ADT))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(wrap(ADT))
        plaintext = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert b"MSA" not in rogue and b"MSA" not in anonymous and b"MSA" not in plaintext
    assert len(sink.inbound()) == 1  # only the trusted client's message was stored


# -- DICOM -----------------------------------------------------------------------------------------


def _storescu(port: int, pki: Pki, file: str, tls: tuple[Path, Path] | None) -> int:
    command = ["storescu", "-aet", "STORESCU", "-aec", "MEDROUTE"]
    if tls:
        command += ["+tls", str(tls[1]), str(tls[0]), "+cf", str(pki.ca)]
    command += ["127.0.0.1", str(port), file]
    return subprocess.run(command, capture_output=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"}).returncode


@needs(shutil.which("storescu") is None, reason="needs DCMTK's storescu")
def test_dicom_over_mutual_tls_with_storescu(pki: Pki, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    writer = MemoryWriter()
    settings = replace(
        DicomSettings(port=0, host="127.0.0.1"),
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_ca=str(pki.ca),
    )
    file = str(get_testdata_file("CT_small.dcm"))
    with DicomListener(settings, BlobStore(tmp_path / "blobs", bytes(32)), writer) as listener:
        assert _storescu(listener.port, pki, file, (pki.client_cert, pki.client_key)) == 0
        assert _storescu(listener.port, pki, file, (pki.rogue_cert, pki.rogue_key)) != 0
        assert _storescu(listener.port, pki, file, None) != 0
    assert len(writer.on(DICOM_INBOUND)) == 1


# -- HTTPS -----------------------------------------------------------------------------------------


def _start_web(pki: Pki, home: Path, **env: str) -> tuple[ChildProcess, int]:
    """``medroute web`` over HTTPS with the test PKI's server certificate, classify-only, on a free port."""
    port = free_port()
    web = ChildProcess(
        "web",
        {
            "MEDROUTE_HTTP_PORT": str(port),
            "MEDROUTE_HTTP_TLS_CERT": str(pki.server_cert),
            "MEDROUTE_HTTP_TLS_KEY": str(pki.server_key),
            "MEDROUTE_HOME": str(home),
            "MEDROUTE_WEB_KAFKA": "0",
            "USERNAME": "admin",
            "PASSWORD": "a-long-test-password",
            **env,
        },
        log_path=home / "web.log",
    )
    return web.start(port=port), port


def test_web_over_https(pki: Pki, tmp_path: Path) -> None:
    web, port = _start_web(pki, tmp_path)
    try:
        assert requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(pki.ca), timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the site's CA
            requests.get(f"https://127.0.0.1:{port}/healthz", timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # plaintext HTTP gets no page
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        login = requests.get(f"https://127.0.0.1:{port}/login", verify=str(pki.ca), timeout=10)
        cookies = login.headers.get("set-cookie", "")
        assert not cookies or "Secure" in cookies
    finally:
        web.stop()


@needs(shutil.which("openssl") is None, reason="needs the openssl command")
def test_web_requires_client_certificates_with_a_client_ca(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web, port = _start_web(pki, tmp_path, MEDROUTE_HTTP_TLS_CA=str(pki.ca))
    url = f"https://127.0.0.1:{port}/healthz"
    request = b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        trusted = requests.get(url, verify=str(pki.ca), cert=(str(pki.client_cert), str(pki.client_key)), timeout=10)
        assert trusted.status_code == 200 and trusted.json() == {"status": "ok"}
        for refused in (None, (str(pki.rogue_cert), str(pki.rogue_key))):  # no certificate; another CA's
            with pytest.raises(requests.exceptions.ConnectionError):  # SSLError, or the connection reset
                requests.get(url, verify=str(pki.ca), cert=refused, timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # plaintext HTTP gets no page
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        _, by_openssl = asyncio.run(_s_client(port, pki, pki.client_cert, pki.client_key, request))
        _, rogue = asyncio.run(_s_client(port, pki, pki.rogue_cert, pki.rogue_key, request))
        _, anonymous = asyncio.run(_s_client(port, pki, None, None, request))
        assert by_openssl.startswith(b"HTTP/1.1 200") and b'{"status":"ok"}' in by_openssl
        assert b"HTTP/" not in rogue and b"HTTP/" not in anonymous
        # `medroute health web` presents the server's own certificate (the test CA signed it), and needs it.
        for name, value in {"MEDROUTE_HTTP_PORT": str(port), "MEDROUTE_HTTP_TLS_CERT": str(pki.server_cert),
                            "MEDROUTE_HTTP_TLS_KEY": str(pki.server_key)}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        assert health.main(["web"]) == 1  # without MEDROUTE_HTTP_TLS_CA it presents none and is refused
        monkeypatch.setenv("MEDROUTE_HTTP_TLS_CA", str(pki.ca))
        assert health.main(["web"]) == 0
    finally:
        assert web.stop() == 0, web.log()[-3000:]


def test_web_refuses_a_client_ca_without_a_certificate(tmp_path: Path) -> None:
    web = ChildProcess(
        "web",
        {"MEDROUTE_HOME": str(tmp_path), "MEDROUTE_WEB_KAFKA": "0", "MEDROUTE_HTTP_TLS_CA": str(tmp_path / "ca.pem")},
        log_path=tmp_path / "web.log",
    ).start()
    assert web.process is not None and web.process.wait(timeout=60) == 2
    assert "MEDROUTE_HTTP_TLS_CA (client certificates) needs MEDROUTE_HTTP_TLS_CERT" in web.log()


# -- Kafka over SSL --------------------------------------------------------------------------------


def test_kafka_over_ssl_against_the_local_broker(pki: Pki, tmp_path: Path) -> None:
    from listeners.sink import KafkaSink, SinkUnavailable
    from medroute.config import KafkaSettings
    from medroute.kafka.client import reader_of
    from medroute.kafka.topics import ensure_topics
    from shell.broker import BrokerTls, LocalBroker

    tls = BrokerTls(port=free_port(), cert=pki.server_cert, key=pki.server_key, ca=pki.ca)
    broker = LocalBroker(data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port(), tls=tls)
    broker.start()

    def over_ssl(cert: Path, key: Path) -> KafkaSettings:
        return KafkaSettings(
            bootstrap=tls.bootstrap,
            security_protocol="SSL",
            ssl_cafile=str(pki.ca),
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            partitions=1,
        )

    async def scenario() -> None:
        trusted = over_ssl(pki.client_cert, pki.client_key)
        await ensure_topics(trusted, (HL7_INBOUND,))
        sink = KafkaSink(trusted, timeout=10)
        await sink.start()
        try:
            await sink.put(HL7_INBOUND, b"k", b"over TLS")
        finally:
            await sink.stop()
        reader = await reader_of(trusted, HL7_INBOUND)
        try:
            records = [r.value for batch in (await reader.getmany(timeout_ms=5000)).values() for r in batch]
        finally:
            await reader.stop()
        assert records == [b"over TLS"]
        for refused in (over_ssl(pki.rogue_cert, pki.rogue_key), KafkaSettings(bootstrap=tls.bootstrap)):
            sink = KafkaSink(refused, timeout=3)
            await sink.start()
            try:
                with pytest.raises(SinkUnavailable):
                    await sink.put(HL7_INBOUND, b"k", b"must not arrive")
            finally:
                await sink.stop()

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
