"""Settings read from the environment (``MEDROUTE_*``), with secrets from env or files.

Every process (listener, worker, tools) reads the same variables, so one ``.env`` or
systemd ``EnvironmentFile`` configures a whole site.

Each variable is declared once, as a :class:`Setting` of a :class:`SettingsArea` in the module that uses
it (name, default, type, meaning, secret or not, which processes read it); the settings dataclasses read
it through the declaration (``field(default_factory=MLLP_HOST)``), ``medroute config reference`` writes
docs/CONFIGURATION.md from the declarations and ``medroute config check`` validates an environment with
them. The ``env_*`` helpers below are what a declaration reads with; nothing else calls them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Topic names are fixed: every component agrees on them without configuration.
HL7_INBOUND = "hl7.inbound"
DICOM_INBOUND = "dicom.inbound"
ROUTING_DECISIONS = "routing.decisions"
AUDIT_EVENTS = "audit.events"
HL7_DEADLETTER = "hl7.deadletter"
DICOM_DEADLETTER = "dicom.deadletter"
# Replay (tools/replay): decisions of a rerun beside the live ones, and its checkpoints (compacted).
ROUTING_DECISIONS_REPLAY = "routing.decisions.replay"
REPLAY_CHECKPOINTS = "replay.checkpoints"
# Model promotions (medroute promote): compacted, keyed by task; every worker reads all of it.
CONTROL = "medroute.control"
# Reviewers' answers to decisions routed to review (web): accepted or corrected labels, keyed by message id.
FEEDBACK = "feedback"
# Forwarding (pipeline/forward): items a destination gave up on, the delivered-ids ledger (compacted) and
# each destination's last status snapshot (compacted, keyed by destination).
FORWARD_DEADLETTER = "forward.deadletter"
FORWARD_DELIVERED = "forward.delivered"
FORWARD_STATUS = "forward.status"
# The MLLP listeners' shared duplicate window: one entry per stored message, keyed by a digest of
# MSH-3/4/10; kept for a day (the window is minutes), read from ``now - window`` at start.
HL7_RECEIVED_IDS = "hl7.received.ids"
ALL_TOPICS = (
    HL7_INBOUND,
    DICOM_INBOUND,
    ROUTING_DECISIONS,
    AUDIT_EVENTS,
    HL7_DEADLETTER,
    DICOM_DEADLETTER,
    ROUTING_DECISIONS_REPLAY,
    REPLAY_CHECKPOINTS,
    CONTROL,
    FEEDBACK,
    FORWARD_DEADLETTER,
    FORWARD_DELIVERED,
    FORWARD_STATUS,
    HL7_RECEIVED_IDS,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {value!r}") from None


def env_bool(name: str, default: bool = False) -> bool:
    value = env_str(name)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes", "on")


def env_secret(name: str) -> str | None:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (Docker/K8s secrets)."""
    path = env_str(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return env_str(name)



def named_secret(name: str) -> str | None:
    """A secret whose variable a site's own file names (a destination's ``env:NAME`` header), not a setting of
    medroute's: ``NAME``, or the file ``NAME_FILE`` names."""
    return env_secret(name)

def env_csv(name: str) -> tuple[str, ...]:
    """A comma-separated list; empty entries dropped."""
    return tuple(part.strip() for part in (env_str(name) or "").split(",") if part.strip())


# The processes a setting can be read by (``medroute config check --process``). "forward" is the forwarders
# (pipeline/forward, ``medroute forward``): their settings are declared where they live, as every area's are.
PROCESSES = ("mllp", "dicom", "worker", "forward", "web", "tools", "broker")
SERVICES = ("mllp", "dicom", "worker", "forward", "web", "tools")  # every medroute process that uses Kafka
_READERS: dict[str, Callable[[str, Any], Any]] = {
    "str": env_str,
    "int": env_int,
    "float": env_float,
    "bool": lambda name, default: env_bool(name, bool(default)),
    "csv": lambda name, default: env_csv(name) or tuple(default or ()),
}
REGISTRY: dict[str, Setting] = {}


@dataclass(frozen=True)
class Setting:
    """One environment variable: declared once, read through :meth:`value` (a setting is its own
    ``default_factory``). ``secret``: also read from the file ``NAME_FILE`` names; ``masked``: never shown
    (every secret is masked)."""

    name: str
    default: Any
    help: str
    kind: str
    area: str
    processes: tuple[str, ...]
    secret: bool = False
    minimum: int | float | None = None
    shown_default: str | None = None  # how a default computed at run time is described
    masked: bool = False

    def __call__(self) -> Any:
        return self.value()

    def value(self) -> Any:
        if self.secret:
            value = env_secret(self.name)
            return self.default if value is None else value
        value = _READERS[self.kind](self.name, self.default)
        if self.minimum is not None and value < self.minimum:
            raise SystemExit(f"{self.name} must be at least {self.minimum}, got {value}")
        return value

    def source(self) -> str:
        """Where the value comes from: the variable, its ``_FILE`` or the default."""
        if self.secret and env_str(f"{self.name}_FILE"):
            return f"{self.name}_FILE"
        return "environment" if env_str(self.name) is not None else "default"

    @property
    def names(self) -> tuple[str, ...]:
        """The variables this setting reads."""
        return (self.name, f"{self.name}_FILE") if self.secret else (self.name,)

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default == ():
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return ",".join(self.default) if isinstance(self.default, tuple) else str(self.default)


@dataclass(frozen=True)
class SettingsArea:
    """The settings of one part (a listener, the worker, ...), with the processes that read them by default.
    Calling it declares a setting: ``MLLP_PORT = AREA("MEDROUTE_MLLP_PORT", 2575, "port to listen on")``."""

    title: str
    processes: tuple[str, ...]

    def __call__(
        self,
        name: str,
        default: Any = None,
        help: str = "",
        *,
        kind: str | None = None,
        secret: bool = False,
        masked: bool = False,
        minimum: int | float | None = None,
        shown_default: str | None = None,
        processes: tuple[str, ...] | None = None,
    ) -> Setting:
        if kind is None:
            kind = "str" if default is None else "csv" if isinstance(default, tuple) else type(default).__name__
        if kind not in _READERS:
            raise ValueError(f"{name}: unknown kind {kind!r}")
        declared = Setting(name, default, help, kind, self.title, processes or self.processes, secret, minimum,
                           shown_default, masked or secret)  # fmt: skip
        if name in REGISTRY and REGISTRY[name] != declared:
            raise ValueError(f"{name} is declared twice")
        unknown = set(declared.processes) - set(PROCESSES)
        if unknown or not help:
            raise ValueError(f"{name}: needs a help text and processes among {PROCESSES}")
        REGISTRY[name] = declared
        return declared


def environment_names(prefixes: tuple[str, ...]) -> list[str]:
    """The variables of this environment whose names start with one of ``prefixes`` (``medroute config check``)."""
    return sorted(name for name in os.environ if name.startswith(prefixes))


GENERAL = SettingsArea("General", SERVICES)
HOME = GENERAL("MEDROUTE_HOME", ".medroute", "local state: broker data, logs, pid files, default secrets and blobs",
               processes=PROCESSES, shown_default="`./.medroute`")
LOG_LEVEL = GENERAL("MEDROUTE_LOG_LEVEL", "INFO", "structlog JSON log level (DEBUG, INFO, WARNING, ERROR)")
LOG_SALT = GENERAL("MEDROUTE_LOG_SALT", None, "keys the hashes that stand for identifiers in logs and audit events; "
                   "set one per site", secret=True, shown_default="a built-in salt")
METRICS_PORT = GENERAL("MEDROUTE_METRICS_PORT", 0, "Prometheus metrics port of a listener (0: off; the first "
                       "process of a listener serves it)", minimum=0, processes=("mllp", "dicom"))
METRICS_HOST = GENERAL("MEDROUTE_METRICS_HOST", "127.0.0.1", "address the metrics endpoints bind to "
                       "(`0.0.0.0` for a scraper on another host)", processes=("mllp", "dicom", "worker", "forward"))

KAFKA = SettingsArea("Kafka", SERVICES)
KAFKA_BOOTSTRAP = KAFKA("MEDROUTE_KAFKA_BOOTSTRAP", None, "Kafka cluster, `host:port[,host:port]`",
                        shown_default="unset: the local broker (`medroute kafka start`)")
KAFKA_PORT = KAFKA("MEDROUTE_KAFKA_PORT", 9092, "port of the local broker", processes=(*SERVICES, "broker"))
KAFKA_SECURITY_PROTOCOL = KAFKA("MEDROUTE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
                                "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
KAFKA_SASL_MECHANISM = KAFKA("MEDROUTE_KAFKA_SASL_MECHANISM", None, "SASL mechanism (PLAIN, SCRAM-SHA-256, "
                             "SCRAM-SHA-512)")
KAFKA_SASL_USERNAME = KAFKA("MEDROUTE_KAFKA_SASL_USERNAME", None, "SASL user")
KAFKA_SASL_PASSWORD = KAFKA("MEDROUTE_KAFKA_SASL_PASSWORD", None, "SASL password", secret=True)
KAFKA_SSL_CAFILE = KAFKA("MEDROUTE_KAFKA_SSL_CAFILE", None, "CA bundle that signed the brokers' certificates")
KAFKA_SSL_CERTFILE = KAFKA("MEDROUTE_KAFKA_SSL_CERTFILE", None, "client certificate (mutual TLS to Kafka)")
KAFKA_SSL_KEYFILE = KAFKA("MEDROUTE_KAFKA_SSL_KEYFILE", None, "client key (mutual TLS to Kafka)")
TOPIC_PARTITIONS = KAFKA("MEDROUTE_TOPIC_PARTITIONS", 4, "partitions of the topics medroute creates (the most "
                         "workers of one pool that get work)", minimum=1)
TOPIC_REPLICATION = KAFKA("MEDROUTE_TOPIC_REPLICATION", 1, "replication factor of the topics medroute creates "
                          "(3 on a production cluster)", minimum=1)

# The blob store of received DICOM datasets (medroute.blobstore, medroute.blobstore_s3, medroute.sealing).
BLOBS = SettingsArea("Blob store", ("dicom", "worker", "web", "tools"))
BLOB_DIR = BLOBS("MEDROUTE_BLOB_DIR", None, "directory of the encrypted, content-addressed blob store",
                 shown_default="`$MEDROUTE_HOME/blobs`")
BLOB_URL = BLOBS("MEDROUTE_BLOB_URL", None, "`s3://bucket[/prefix]`: keep the blobs in an S3-compatible object "
                 "store instead (`pip install 'medroute[s3]'`)")
BLOB_KEY = BLOBS("MEDROUTE_BLOB_KEY", None, "AES-256-GCM key of the blob store (64 hex characters or base64); "
                 "prefer `MEDROUTE_BLOB_KEY_FILE`", masked=True)
BLOB_KEY_FILE = BLOBS("MEDROUTE_BLOB_KEY_FILE", None, "file holding the blob key (a Docker or Kubernetes secret); "
                      "without it or the key, a key is created once at this default path",
                      shown_default="`$MEDROUTE_HOME/secrets/blob.key`")
S3_ENDPOINT = BLOBS("MEDROUTE_S3_ENDPOINT", None, "S3 endpoint (MinIO, Ceph, ... on site)",
                    shown_default="unset: AWS for the region")
S3_REGION = BLOBS("MEDROUTE_S3_REGION", "us-east-1", "S3 region")
EC2_METADATA_DISABLED = BLOBS("AWS_EC2_METADATA_DISABLED", True, "keep the instance-metadata address out of the "
                              "S3 credential chain (credentials come from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` "
                              "or `AWS_SHARED_CREDENTIALS_FILE`, read by boto3)")

# Building model bundles (tools/modelling): the reproducible-builds convention.
BLOB_OLD_KEYS = BLOBS("MEDROUTE_BLOB_OLD_KEYS", None, "earlier blob keys, comma-separated (64 hex characters or "
                      "base64 each): blobs sealed under them stay readable after a key rotation, until "
                      "`medroute blobs rekey` has re-sealed them", secret=True)
SOURCE_DATE_EPOCH = SettingsArea("Model building", ("tools",))(
    "SOURCE_DATE_EPOCH", None, "seconds since 1970 stamped as a bundle's build time (reproducible builds)",
    shown_default="unset: now")


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment for a child process: this one's, with ``overrides`` (e.g. the Kafka it must use)."""
    return {**os.environ, **overrides}


def disable_library_telemetry() -> None:
    """ONNX Runtime (1.32 on Linux too) sends usage events to Microsoft (``mobile.events.data.microsoft.com``)
    unless ``ORT_DISABLE_TELEMETRY`` is set before it is imported; medroute promises no outbound connection.
    Called when ``medroute`` and ``models`` are imported; children inherit it (tests/integration/test_privacy.py)."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"


def home_dir() -> Path:
    """Where local state lives (broker data, logs, pid files): ``MEDROUTE_HOME`` or ``./.medroute``."""
    return Path(HOME()).resolve()


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka. ``bootstrap`` None means: the local broker that medroute manages."""

    bootstrap: str | None = field(default_factory=KAFKA_BOOTSTRAP)
    local_port: int = field(default_factory=KAFKA_PORT)
    security_protocol: str = field(default_factory=KAFKA_SECURITY_PROTOCOL)
    sasl_mechanism: str | None = field(default_factory=KAFKA_SASL_MECHANISM)
    sasl_username: str | None = field(default_factory=KAFKA_SASL_USERNAME)
    sasl_password: str | None = field(default_factory=KAFKA_SASL_PASSWORD)
    ssl_cafile: str | None = field(default_factory=KAFKA_SSL_CAFILE)
    ssl_certfile: str | None = field(default_factory=KAFKA_SSL_CERTFILE)
    ssl_keyfile: str | None = field(default_factory=KAFKA_SSL_KEYFILE)
    partitions: int = field(default_factory=TOPIC_PARTITIONS)
    replication: int = field(default_factory=TOPIC_REPLICATION)

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"127.0.0.1:{self.local_port}"

    @property
    def is_local(self) -> bool:
        return self.bootstrap is None
