"""DICOM listener settings from ``MEDROUTE_DICOM_*`` environment variables."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from functools import cached_property

from listeners.tls import server_context
from medroute.config import SettingsArea

DEFAULT_MAX_PDU = 131_072  # DCMTK's own largest receive PDU; 0 would let a peer send PDUs of any size

DICOM = SettingsArea("DICOM listener", ("dicom",))
DICOM_HOST = DICOM("MEDROUTE_DICOM_HOST", "127.0.0.1", "address to listen on (`0.0.0.0`: other machines)")
DICOM_PORT = DICOM("MEDROUTE_DICOM_PORT", 11112, "port to listen on", processes=("dicom", "tools"))
DICOM_AE_TITLE = DICOM("MEDROUTE_DICOM_AE_TITLE", "MEDROUTE", "the listener's AE title", processes=("dicom", "tools"))
DICOM_ALLOWED_AES = DICOM("MEDROUTE_DICOM_ALLOWED_AES", (), "comma-separated calling AE titles allowed to associate",
                          shown_default="unset: any")
DICOM_ALLOWED_PEERS = DICOM("MEDROUTE_DICOM_ALLOWED_PEERS", (), "comma-separated addresses or networks allowed to "
                            "connect", shown_default="unset: any")
DICOM_REQUIRE_CALLED_AE = DICOM("MEDROUTE_DICOM_REQUIRE_CALLED_AE", True, "refuse an association that calls "
                                "another AE title than ours")
DICOM_MAX_ASSOCIATIONS = DICOM("MEDROUTE_DICOM_MAX_ASSOCIATIONS", 32, "concurrent associations")
DICOM_MAX_PDU = DICOM("MEDROUTE_DICOM_MAX_PDU", DEFAULT_MAX_PDU, "largest PDU received (0: no limit)")
DICOM_IDLE_TIMEOUT = DICOM("MEDROUTE_DICOM_IDLE_TIMEOUT", 300.0, "seconds an idle association is kept")
DICOM_DIMSE_TIMEOUT = DICOM("MEDROUTE_DICOM_DIMSE_TIMEOUT", 60.0, "seconds a DIMSE message may take")
DICOM_STORE_TIMEOUT = DICOM("MEDROUTE_DICOM_STORE_TIMEOUT", 10.0, "seconds a Kafka write may take before the "
                            "sender gets 0xA700")
DICOM_SHUTDOWN_GRACE = DICOM("MEDROUTE_DICOM_SHUTDOWN_GRACE", 30.0, "seconds open associations get to finish at stop")
DICOM_DEADLETTER_MAX_RAW = DICOM("MEDROUTE_DICOM_DEADLETTER_MAX_RAW", 512 * 1024, "bytes of a refused dataset kept "
                                 "in its dead letter")
DICOM_TLS_CERT = DICOM("MEDROUTE_DICOM_TLS_CERT", None, "certificate file: TLS on the listener (with `_TLS_KEY`)")
DICOM_TLS_KEY = DICOM("MEDROUTE_DICOM_TLS_KEY", None, "private key file of the TLS certificate")
DICOM_TLS_CA = DICOM("MEDROUTE_DICOM_TLS_CA", None, "CA bundle: clients must present a certificate it signed")
DICOM_FAST_STORE = DICOM("MEDROUTE_DICOM_FAST_STORE", True, "store and answer C-STOREs in the association's network "
                         "thread; false: pynetdicom's DIMSE path (same checks, slower)")
DICOM_PROCESSES = DICOM("MEDROUTE_DICOM_PROCESSES", 1, "listener processes; the first hands each association to the "
                        "least busy one")


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
    host: str = field(default_factory=DICOM_HOST)
    port: int = field(default_factory=DICOM_PORT)
    ae_title: str = field(default_factory=DICOM_AE_TITLE)
    # Calling AE titles allowed to associate; empty: any.
    allowed_aes: tuple[str, ...] = field(default_factory=DICOM_ALLOWED_AES)
    # Peer addresses or networks allowed to connect; empty: any.
    allowed_peers: tuple[str, ...] = field(default_factory=DICOM_ALLOWED_PEERS)
    # Refuse an association that calls another AE title than ours.
    require_called_ae: bool = field(default_factory=DICOM_REQUIRE_CALLED_AE)
    max_associations: int = field(default_factory=DICOM_MAX_ASSOCIATIONS)
    max_pdu: int = field(default_factory=DICOM_MAX_PDU)
    idle_timeout: float = field(default_factory=DICOM_IDLE_TIMEOUT)
    dimse_timeout: float = field(default_factory=DICOM_DIMSE_TIMEOUT)
    # How long the Kafka write of one instance may take before the sender gets a failure status.
    store_timeout: float = field(default_factory=DICOM_STORE_TIMEOUT)
    shutdown_grace: float = field(default_factory=DICOM_SHUTDOWN_GRACE)
    # Dead letters keep at most this many bytes of a refused dataset (Kafka's default record limit is 1 MB).
    dead_letter_max_raw: int = field(default_factory=DICOM_DEADLETTER_MAX_RAW)
    tls_cert: str | None = field(default_factory=DICOM_TLS_CERT)
    tls_key: str | None = field(default_factory=DICOM_TLS_KEY)
    # With a CA bundle, clients must present a certificate it signed (mutual TLS).
    tls_ca: str | None = field(default_factory=DICOM_TLS_CA)
    # Store and answer C-STOREs in the network thread (listeners.dicom.fastpath); false: pynetdicom's path.
    fast_store: bool = field(default_factory=DICOM_FAST_STORE)
    # Processes serving the port: pynetdicom's threads share one core under the GIL.
    processes: int = field(default_factory=DICOM_PROCESSES)

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
