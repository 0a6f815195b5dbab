"""A single-node Apache Kafka broker in KRaft mode, for development, `medroute up` and tests.

The jars come from Maven Central through ``deploy/kafka/pom.xml``; this module writes the
server properties, formats storage once, starts the JVM in its own session (so it survives the
shell that started it, and a test can kill it), waits until it serves, and stops it cleanly.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import REPO_ROOT, KafkaSettings, SettingsArea
from medroute.ports import free_port, port_open

KAFKA_DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
LOCAL_BROKER = SettingsArea("Local broker", ("broker",))
KAFKA_LIB = LOCAL_BROKER("MEDROUTE_KAFKA_LIB", None, "directory of the Kafka jars `medroute kafka fetch` fills "
                         "and the local broker runs from", shown_default="`deploy/kafka/lib`")


class BrokerError(RuntimeError):
    pass


def jar_dir() -> Path:
    return Path(KAFKA_LIB() or KAFKA_DEPLOY_DIR / "lib")


def fetch_jars(quiet: bool = True) -> Path:
    """Download the pinned Kafka jars with Maven (once); returns the jar directory."""
    lib = jar_dir()
    if lib.is_dir() and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch Apache Kafka's jars; install it (apt-get install maven)")
    cmd = [mvn, "-B", "-f", str(KAFKA_DEPLOY_DIR / "pom.xml"), "package"]
    if quiet:
        cmd.insert(1, "-q")
    subprocess.run(cmd, check=True)
    return lib


@dataclass(frozen=True)
class BrokerTls:
    """PEM files for an SSL listener: the broker's certificate and (PKCS#8) key, and the CA whose
    certificates clients must present (``ssl.client.auth=required``)."""

    port: int
    cert: Path
    key: Path
    ca: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalBroker:
    """One KRaft broker+controller on 127.0.0.1; all its state lives under ``data_dir``. With ``tls`` it
    also serves clients over SSL on ``tls.port`` (the plaintext listener stays for the broker itself)."""

    data_dir: Path
    port: int = 9092
    controller_port: int | None = None
    heap: str = "512m"
    tls: BrokerTls | None = None
    # Used when the storage is formatted (first start); random by default.
    cluster_id: str = field(default_factory=lambda: base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if self.controller_port is None:
            self.controller_port = self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    def _write_properties(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Room for a 16 MiB HL7 frame (base64 in a JSON envelope) or a DICOM event.
            "message.max.bytes": str(32 * 1024 * 1024),
            "replica.fetch.max.bytes": str(32 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "2",
        }
        if self.tls is not None:
            props.update(self._tls_properties(self.tls))
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()), encoding="utf-8")

    def _tls_properties(self, tls: BrokerTls) -> dict[str, str]:
        keystore = self.data_dir / "keystore.pem"  # Kafka's PEM keystore: the key, then the certificate chain
        keystore.write_bytes(tls.key.read_bytes() + tls.cert.read_bytes())
        keystore.chmod(0o600)
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port},"
            f"SSL://127.0.0.1:{tls.port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},SSL://127.0.0.1:{tls.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "ssl.client.auth": "required",
        }

    def _java(self, main_class: str, *args: str, heap: str = "256m") -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java 17+ is needed to run Apache Kafka; install it (apt-get install openjdk-17-jre)")
        return [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_DEPLOY_DIR / 'log4j2.properties'}",
            "-cp",
            f"{fetch_jars()}/*",
            main_class,
            *args,
        ]

    def _format_storage(self) -> None:
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        result = subprocess.run(
            # "--cluster-id=": a base64 id may start with "-", which the tool would read as an option.
            self._java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", "-c", str(self.properties_file)
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")

    def pid(self) -> int | None:
        """The broker's pid if it is running, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        try:
            _reap(pid)
            os.kill(pid, 0)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def is_serving(self) -> bool:
        return self.pid() is not None and port_open(self.port)

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker (formatting storage the first time) and wait until it serves."""
        if self.pid() is not None:
            self.wait_until_serving(timeout)
            return
        if port_open(self.port):
            raise BrokerError(f"port {self.port} is already taken by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self._format_storage()
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.properties_file), heap=self.heap),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self.wait_until_serving(timeout)

    def wait_until_serving(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise BrokerError(f"Kafka exited during start-up; see {self.log_file}")
            if port_open(self.port) and _metadata_ready(self.bootstrap):
                return
            time.sleep(0.3)
        raise BrokerError(f"Kafka did not serve on {self.bootstrap} within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (controlled shutdown), then SIGKILL after ``timeout``. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.2)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """kill -9, for failure tests."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect an exited child of this process, so that it stops looking alive (a zombie)."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: whoever started it reaps it
        return
    if finished:
        raise ProcessLookupError(pid)


def _metadata_ready(bootstrap: str) -> bool:
    """True once the broker answers a metadata request (the port opens a little earlier)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())


def broker_unless_configured(data_dir: Path) -> tuple[LocalBroker | None, str]:
    """For benchmarks: the cluster ``MEDROUTE_KAFKA_BOOTSTRAP`` names, else a local broker on free ports
    started in ``data_dir``; returns (the started broker or None, the bootstrap address)."""
    configured = KafkaSettings().bootstrap
    if configured:
        return None, configured
    broker = LocalBroker(data_dir=data_dir, port=free_port(), controller_port=free_port())
    broker.start()
    return broker, broker.bootstrap
