"""DICOM listener settings from ``MEDROUTE_DICOM_*`` environment variables."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from functools import cached_property

from listeners.tls import server_context
from medroute.config import env_bool, env_float, env_int, env_str

DEFAULT_MAX_PDU = 131_072  # DCMTK's own largest receive PDU; 0 would let a peer send PDUs of any size


def _csv(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in (env_str(name) or "").split(",") if part.strip())


def parse_networks(values: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``10.1.2.3``, ``10.1.0.0/16`` or ``::1`` → networks; a bad entry stops start-up."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise SystemExit(f"MEDROUTE_DICOM_ALLOWED_PEERS: not an address or network: {value!r}") from None
    return tuple(networks)


@dataclass(frozen=True)
class DicomSettings:
    host: str = field(default_factory=lambda: env_str("MEDROUTE_DICOM_HOST", "127.0.0.1") or "127.0.0.1")
    port: int = field(default_factory=lambda: env_int("MEDROUTE_DICOM_PORT", 11112))
    ae_title: str = field(default_factory=lambda: env_str("MEDROUTE_DICOM_AE_TITLE", "MEDROUTE") or "MEDROUTE")
    # Calling AE titles allowed to associate; empty: any.
    allowed_aes: tuple[str, ...] = field(default_factory=lambda: _csv("MEDROUTE_DICOM_ALLOWED_AES"))
    # Peer addresses or networks allowed to connect; empty: any.
    allowed_peers: tuple[str, ...] = field(default_factory=lambda: _csv("MEDROUTE_DICOM_ALLOWED_PEERS"))
    # Refuse an association that calls another AE title than ours.
    require_called_ae: bool = field(default_factory=lambda: env_bool("MEDROUTE_DICOM_REQUIRE_CALLED_AE", True))
    max_associations: int = field(default_factory=lambda: env_int("MEDROUTE_DICOM_MAX_ASSOCIATIONS", 32))
    max_pdu: int = field(default_factory=lambda: env_int("MEDROUTE_DICOM_MAX_PDU", DEFAULT_MAX_PDU))
    idle_timeout: float = field(default_factory=lambda: env_float("MEDROUTE_DICOM_IDLE_TIMEOUT", 300.0))
    dimse_timeout: float = field(default_factory=lambda: env_float("MEDROUTE_DICOM_DIMSE_TIMEOUT", 60.0))
    # How long the Kafka write of one instance may take before the sender gets a failure status.
    store_timeout: float = field(default_factory=lambda: env_float("MEDROUTE_DICOM_STORE_TIMEOUT", 10.0))
    shutdown_grace: float = field(default_factory=lambda: env_float("MEDROUTE_DICOM_SHUTDOWN_GRACE", 30.0))
    # Dead letters keep at most this many bytes of a refused dataset (Kafka's default record limit is 1 MB).
    dead_letter_max_raw: int = field(default_factory=lambda: env_int("MEDROUTE_DICOM_DEADLETTER_MAX_RAW", 512 * 1024))
    tls_cert: str | None = field(default_factory=lambda: env_str("MEDROUTE_DICOM_TLS_CERT"))
    tls_key: str | None = field(default_factory=lambda: env_str("MEDROUTE_DICOM_TLS_KEY"))
    # With a CA bundle, clients must present a certificate it signed (mutual TLS).
    tls_ca: str | None = field(default_factory=lambda: env_str("MEDROUTE_DICOM_TLS_CA"))
    # Store and answer C-STOREs in the network thread (listeners.dicom.fastpath); false: pynetdicom's path.
    fast_store: bool = field(default_factory=lambda: env_bool("MEDROUTE_DICOM_FAST_STORE", True))
    # Processes serving the port: pynetdicom's threads share one core under the GIL.
    processes: int = field(default_factory=lambda: env_int("MEDROUTE_DICOM_PROCESSES", 1))

    def __post_init__(self) -> None:
        if not 1 <= len(self.ae_title) <= 16 or "\\" in self.ae_title or not self.ae_title.isascii():
            raise SystemExit("MEDROUTE_DICOM_AE_TITLE must be 1 to 16 ASCII characters without a backslash")
        for title in self.allowed_aes:
            if len(title) > 16 or not title.isascii():
                raise SystemExit(f"MEDROUTE_DICOM_ALLOWED_AES: not an AE title: {title!r}")
        parse_networks(self.allowed_peers)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SystemExit("MEDROUTE_DICOM_TLS_CERT and MEDROUTE_DICOM_TLS_KEY must be set together")
        if self.processes < 1:
            raise SystemExit("MEDROUTE_DICOM_PROCESSES must be at least 1")
        if self.max_associations < 1:
            raise SystemExit("MEDROUTE_DICOM_MAX_ASSOCIATIONS must be at least 1")
        if self.max_pdu != 0 and self.max_pdu < 4096:
            raise SystemExit("MEDROUTE_DICOM_MAX_PDU must be 0 (no limit) or at least 4096")
        if self.store_timeout <= 0:
            raise SystemExit("MEDROUTE_DICOM_STORE_TIMEOUT must be positive")

    def peer_allowed(self, address: str) -> bool:
        """Whether a connection from ``address`` may associate (always, without an allowlist)."""
        if not self.allowed_peers:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    @cached_property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return parse_networks(self.allowed_peers)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server TLS context (TLS 1.2+) when a certificate is configured, else None."""
        return server_context(self.tls_cert, self.tls_key, self.tls_ca)
