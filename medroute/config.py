"""Settings read from the environment (``MEDROUTE_*``), with secrets from env or files.

Every process (listener, worker, tools) reads the same variables, so one ``.env`` or
systemd ``EnvironmentFile`` configures a whole site.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    return Path(env_str("MEDROUTE_HOME", ".medroute")).resolve()


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka. ``bootstrap`` None means: the local broker that medroute manages."""

    bootstrap: str | None = field(default_factory=lambda: env_str("MEDROUTE_KAFKA_BOOTSTRAP"))
    local_port: int = field(default_factory=lambda: env_int("MEDROUTE_KAFKA_PORT", 9092))
    security_protocol: str = field(
        default_factory=lambda: env_str("MEDROUTE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") or "PLAINTEXT"
    )
    sasl_mechanism: str | None = field(default_factory=lambda: env_str("MEDROUTE_KAFKA_SASL_MECHANISM"))
    sasl_username: str | None = field(default_factory=lambda: env_str("MEDROUTE_KAFKA_SASL_USERNAME"))
    sasl_password: str | None = field(default_factory=lambda: env_secret("MEDROUTE_KAFKA_SASL_PASSWORD"))
    ssl_cafile: str | None = field(default_factory=lambda: env_str("MEDROUTE_KAFKA_SSL_CAFILE"))
    ssl_certfile: str | None = field(default_factory=lambda: env_str("MEDROUTE_KAFKA_SSL_CERTFILE"))
    ssl_keyfile: str | None = field(default_factory=lambda: env_str("MEDROUTE_KAFKA_SSL_KEYFILE"))
    partitions: int = field(default_factory=lambda: env_int("MEDROUTE_TOPIC_PARTITIONS", 4))
    replication: int = field(default_factory=lambda: env_int("MEDROUTE_TOPIC_REPLICATION", 1))

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"127.0.0.1:{self.local_port}"

    @property
    def is_local(self) -> bool:
        return self.bootstrap is None
