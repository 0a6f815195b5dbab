"""MLLP listener settings from ``MEDROUTE_MLLP_*`` environment variables."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from formats.hl7.charsets import DEFAULT_FALLBACK, codec_for
from formats.hl7.errors import MessageError
from formats.hl7.mllp import DEFAULT_MAX_FRAME
from listeners.tls import server_context
from medroute.config import SettingsArea

MLLP = SettingsArea("MLLP listener", ("mllp",))
MLLP_HOST = MLLP("MEDROUTE_MLLP_HOST", "127.0.0.1", "address to listen on (`0.0.0.0`: take traffic from other "
                 "machines)")
MLLP_PORT = MLLP("MEDROUTE_MLLP_PORT", 2575, "port to listen on", processes=("mllp", "tools"))
MLLP_IDLE_TIMEOUT = MLLP("MEDROUTE_MLLP_IDLE_TIMEOUT", 300.0, "seconds an idle connection is kept")
MLLP_MAX_FRAME = MLLP("MEDROUTE_MLLP_MAX_FRAME", DEFAULT_MAX_FRAME, "largest frame in bytes (AR above it)")
MLLP_STRICT = MLLP("MEDROUTE_MLLP_STRICT", False, "validate every message with hl7apy and answer AE on "
                   "non-conformance (slow: ~80 msg/s)")
MLLP_DEDUP_WINDOW = MLLP("MEDROUTE_MLLP_DEDUP_WINDOW", 600.0, "seconds within which a resent MSH-3/MSH-4/MSH-10 "
                         "is acknowledged without a second copy")
MLLP_DEDUP_MAX = MLLP("MEDROUTE_MLLP_DEDUP_MAX", 100_000, "message ids the duplicate window keeps")
MLLP_DEFAULT_CHARSET = MLLP("MEDROUTE_MLLP_DEFAULT_CHARSET", "ASCII", "charset assumed when MSH-18 is empty")
MLLP_FALLBACK_CHARSET = MLLP("MEDROUTE_MLLP_FALLBACK_CHARSET", DEFAULT_FALLBACK, "with MSH-18 empty, bytes the "
                             "default charset cannot read are read as UTF-8 when valid, else as this (not in "
                             "strict mode, which refuses them)")
MLLP_STORE_TIMEOUT = MLLP("MEDROUTE_MLLP_STORE_TIMEOUT", 5.0, "seconds a Kafka write may take before the sender "
                          "gets AR")
MLLP_SHUTDOWN_GRACE = MLLP("MEDROUTE_MLLP_SHUTDOWN_GRACE", 30.0, "seconds open connections get to finish at stop")
MLLP_TLS_CERT = MLLP("MEDROUTE_MLLP_TLS_CERT", None, "certificate file: TLS on the listener (with `_TLS_KEY`)")
MLLP_TLS_KEY = MLLP("MEDROUTE_MLLP_TLS_KEY", None, "private key file of the TLS certificate")
MLLP_TLS_CA = MLLP("MEDROUTE_MLLP_TLS_CA", None, "CA bundle: clients must present a certificate it signed")
MLLP_PROCESSES = MLLP("MEDROUTE_MLLP_PROCESSES", 1, "listener processes sharing the port (SO_REUSEPORT)")


@dataclass(frozen=True)
class MllpSettings:
    host: str = field(default_factory=MLLP_HOST)
    port: int = field(default_factory=MLLP_PORT)
    idle_timeout: float = field(default_factory=MLLP_IDLE_TIMEOUT)
    max_frame: int = field(default_factory=MLLP_MAX_FRAME)
    strict: bool = field(default_factory=MLLP_STRICT)
    dedup_window: float = field(default_factory=MLLP_DEDUP_WINDOW)
    dedup_max: int = field(default_factory=MLLP_DEDUP_MAX)
    # MSH-18 value assumed when a message leaves MSH-18 empty (HL7's own default is ASCII).
    default_charset: str = field(default_factory=MLLP_DEFAULT_CHARSET)
    # Empty MSH-18 and bytes the default cannot read: UTF-8 if valid, else this (not in strict mode).
    fallback_charset: str = field(default_factory=MLLP_FALLBACK_CHARSET)
    store_timeout: float = field(default_factory=MLLP_STORE_TIMEOUT)
    shutdown_grace: float = field(default_factory=MLLP_SHUTDOWN_GRACE)
    tls_cert: str | None = field(default_factory=MLLP_TLS_CERT)
    tls_key: str | None = field(default_factory=MLLP_TLS_KEY)
    # With a CA bundle, clients must present a certificate it signed (mutual TLS).
    tls_ca: str | None = field(default_factory=MLLP_TLS_CA)
    # Processes sharing the port (SO_REUSEPORT): one event loop is bound to one core.
    processes: int = field(default_factory=MLLP_PROCESSES)

    def __post_init__(self) -> None:
        for name, value in (("DEFAULT", self.default_charset), ("FALLBACK", self.fallback_charset)):
            try:
                codec_for(value)
            except MessageError as exc:
                raise SystemExit(f"MEDROUTE_MLLP_{name}_CHARSET: {exc.detail}") from None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SystemExit("MEDROUTE_MLLP_TLS_CERT and MEDROUTE_MLLP_TLS_KEY must be set together")
        if self.processes < 1:
            raise SystemExit("MEDROUTE_MLLP_PROCESSES must be at least 1")
        if self.max_frame < 16:
            raise SystemExit("MEDROUTE_MLLP_MAX_FRAME is too small")

    @property
    def charset_fallback(self) -> str | None:
        """What :func:`formats.hl7.charsets.decode` falls back to; None (refuse) in strict mode."""
        return None if self.strict else self.fallback_charset

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server TLS context (TLS 1.2+) when a certificate is configured, else None."""
        return server_context(self.tls_cert, self.tls_key, self.tls_ca)
