"""Settings of the web server (``medroute web``), read through :mod:`medroute.config`'s helpers.

Authentication is on unless ``ENABLE_AUTH`` says ``false`` (or 0/no/off) explicitly: a typo must not
open the server. ``USERNAME`` and ``PASSWORD`` (or ``PASSWORD_FILE``), the names local AI classifiers
use, create an admin account at start; further accounts live in the users file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import SettingsArea, home_dir

DEFAULT_PORT = 7860
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

WEB = SettingsArea("Web UI and REST API", ("web",))
HTTP_HOST = WEB("MEDROUTE_HTTP_HOST", "127.0.0.1", "address to serve on (`0.0.0.0`: other machines)")
HTTP_PORT = WEB("MEDROUTE_HTTP_PORT", DEFAULT_PORT, "port to serve on")
HTTP_MAX_UPLOAD = WEB("MEDROUTE_HTTP_MAX_UPLOAD", 64 * 1024 * 1024, "largest request body in bytes (413 above it)",
                      minimum=1)
HTTP_TLS_CERT = WEB("MEDROUTE_HTTP_TLS_CERT", None, "certificate file: HTTPS (session cookies are then `Secure`)")
HTTP_TLS_KEY = WEB("MEDROUTE_HTTP_TLS_KEY", None, "private key file of the HTTPS certificate")
HTTP_TLS_CA = WEB("MEDROUTE_HTTP_TLS_CA", None, "CA bundle: clients must present a certificate it signed (mutual "
                  "TLS; needs `MEDROUTE_HTTP_TLS_CERT`)")
ENABLE_AUTH = WEB("ENABLE_AUTH", "true", "`false` (or 0/no/off) turns login off; any other value that is not true "
                  "stops start-up")
USERNAME = WEB("USERNAME", None, "an admin account created at start (with `PASSWORD`)")
PASSWORD = WEB("PASSWORD", None, "the password of `USERNAME`", secret=True)
WEB_USERS_FILE = WEB("MEDROUTE_WEB_USERS_FILE", None, "accounts, one `name:role:argon2-hash` a line",
                     shown_default="`$MEDROUTE_HOME/web/users`")
WEB_TOKENS_FILE = WEB("MEDROUTE_WEB_TOKENS_FILE", None, "API tokens (SHA-256 of each)",
                      shown_default="`$MEDROUTE_HOME/web/tokens`")
WEB_SESSION_SECONDS = WEB("MEDROUTE_WEB_SESSION_SECONDS", 8 * 3600, "how long a login lasts", minimum=1)
WEB_LOGIN_ATTEMPTS = WEB("MEDROUTE_WEB_LOGIN_ATTEMPTS", 5, "failed logins per client address and per name before "
                         "429 ...", minimum=1)
WEB_LOGIN_WINDOW = WEB("MEDROUTE_WEB_LOGIN_WINDOW", 300, "... within this many seconds", minimum=1)
WEB_RECENT = WEB("MEDROUTE_WEB_RECENT", 20_000, "decisions and audit events per partition kept in memory", minimum=1)
WEB_KAFKA = WEB("MEDROUTE_WEB_KAFKA", 1, "`0`: a classify-only server that never connects to Kafka")


def auth_enabled() -> bool:
    """``ENABLE_AUTH``: on unless explicitly false; a value that is neither stops start-up."""
    value = ENABLE_AUTH().strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SystemExit(f"ENABLE_AUTH must be true or false, got {value!r}")


@dataclass(frozen=True)
class WebSettings:
    host: str = field(default_factory=HTTP_HOST)
    port: int = field(default_factory=HTTP_PORT)
    max_upload: int = field(default_factory=HTTP_MAX_UPLOAD)
    tls_cert: str | None = field(default_factory=HTTP_TLS_CERT)
    tls_key: str | None = field(default_factory=HTTP_TLS_KEY)
    # With a CA bundle, clients must present a certificate it signed (mutual TLS), as the listeners' `_TLS_CA`.
    tls_ca: str | None = field(default_factory=HTTP_TLS_CA)
    auth: bool = field(default_factory=auth_enabled)
    admin_username: str | None = field(default_factory=USERNAME)
    admin_password: str | None = field(default_factory=PASSWORD)
    users_file: Path = field(
        default_factory=lambda: Path(WEB_USERS_FILE() or home_dir() / "web" / "users")
    )
    tokens_file: Path = field(
        default_factory=lambda: Path(WEB_TOKENS_FILE() or home_dir() / "web" / "tokens")
    )
    session_seconds: int = field(default_factory=WEB_SESSION_SECONDS)
    login_attempts: int = field(default_factory=WEB_LOGIN_ATTEMPTS)
    login_window: int = field(default_factory=WEB_LOGIN_WINDOW)
    recent: int = field(default_factory=WEB_RECENT)
    # Without Kafka the API still classifies; set 0 to not connect at all (a classify-only server).
    kafka: bool = field(default_factory=lambda: WEB_KAFKA() != 0)

    @property
    def secure_cookies(self) -> bool:
        return bool(self.tls_cert)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"
