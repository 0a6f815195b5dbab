"""MLLP listener settings from ``MEDROUTE_MLLP_*`` environment variables."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from formats.hl7.charsets import DEFAULT_FALLBACK, codec_for
from formats.hl7.errors import MessageError
from listeners.mllp.framing import DEFAULT_MAX_FRAME
from listeners.tls import server_context
from medroute.config import env_bool, env_float, env_int, env_str


@dataclass(frozen=True)
class MllpSettings:
    host: str = field(default_factory=lambda: env_str("MEDROUTE_MLLP_HOST", "127.0.0.1") or "127.0.0.1")
    port: int = field(default_factory=lambda: env_int("MEDROUTE_MLLP_PORT", 2575))
    idle_timeout: float = field(default_factory=lambda: env_float("MEDROUTE_MLLP_IDLE_TIMEOUT", 300.0))
    max_frame: int = field(default_factory=lambda: env_int("MEDROUTE_MLLP_MAX_FRAME", DEFAULT_MAX_FRAME))
    strict: bool = field(default_factory=lambda: env_bool("MEDROUTE_MLLP_STRICT"))
    dedup_window: float = field(default_factory=lambda: env_float("MEDROUTE_MLLP_DEDUP_WINDOW", 600.0))
    dedup_max: int = field(default_factory=lambda: env_int("MEDROUTE_MLLP_DEDUP_MAX", 100_000))
    # MSH-18 value assumed when a message leaves MSH-18 empty (HL7's own default is ASCII).
    default_charset: str = field(default_factory=lambda: env_str("MEDROUTE_MLLP_DEFAULT_CHARSET", "ASCII") or "ASCII")
    # Empty MSH-18 and bytes the default cannot read: UTF-8 if valid, else this (not in strict mode).
    fallback_charset: str = field(
        default_factory=lambda: env_str("MEDROUTE_MLLP_FALLBACK_CHARSET", DEFAULT_FALLBACK) or DEFAULT_FALLBACK
    )
    store_timeout: float = field(default_factory=lambda: env_float("MEDROUTE_MLLP_STORE_TIMEOUT", 5.0))
    shutdown_grace: float = field(default_factory=lambda: env_float("MEDROUTE_MLLP_SHUTDOWN_GRACE", 30.0))
    tls_cert: str | None = field(default_factory=lambda: env_str("MEDROUTE_MLLP_TLS_CERT"))
    tls_key: str | None = field(default_factory=lambda: env_str("MEDROUTE_MLLP_TLS_KEY"))
    # With a CA bundle, clients must present a certificate it signed (mutual TLS).
    tls_ca: str | None = field(default_factory=lambda: env_str("MEDROUTE_MLLP_TLS_CA"))
    # Processes sharing the port (SO_REUSEPORT): one event loop is bound to one core.
    processes: int = field(default_factory=lambda: env_int("MEDROUTE_MLLP_PROCESSES", 1))

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
