"""Settings of the web server (``medroute web``), read through :mod:`medroute.config`'s helpers.

Authentication is on unless ``ENABLE_AUTH`` says ``false`` (or 0/no/off) explicitly: a typo must not
open the server. ``USERNAME`` and ``PASSWORD`` (or ``PASSWORD_FILE``), the names local AI classifiers
use, create an admin account at start; further accounts live in the users file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import env_int, env_secret, env_str, home_dir

DEFAULT_PORT = 7860
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def auth_enabled() -> bool:
    """``ENABLE_AUTH``: on unless explicitly false; a value that is neither stops start-up."""
    value = (env_str("ENABLE_AUTH") or "true").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SystemExit(f"ENABLE_AUTH must be true or false, got {value!r}")


def _positive(name: str, default: int) -> int:
    value = env_int(name, default)
    if value < 1:
        raise SystemExit(f"{name} must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class WebSettings:
    host: str = field(default_factory=lambda: env_str("MEDROUTE_HTTP_HOST", "127.0.0.1") or "127.0.0.1")
    port: int = field(default_factory=lambda: env_int("MEDROUTE_HTTP_PORT", DEFAULT_PORT))
    max_upload: int = field(default_factory=lambda: _positive("MEDROUTE_HTTP_MAX_UPLOAD", 64 * 1024 * 1024))
    tls_cert: str | None = field(default_factory=lambda: env_str("MEDROUTE_HTTP_TLS_CERT"))
    tls_key: str | None = field(default_factory=lambda: env_str("MEDROUTE_HTTP_TLS_KEY"))
    auth: bool = field(default_factory=auth_enabled)
    admin_username: str | None = field(default_factory=lambda: env_str("USERNAME"))
    admin_password: str | None = field(default_factory=lambda: env_secret("PASSWORD"))
    users_file: Path = field(
        default_factory=lambda: Path(env_str("MEDROUTE_WEB_USERS_FILE") or home_dir() / "web" / "users")
    )
    tokens_file: Path = field(
        default_factory=lambda: Path(env_str("MEDROUTE_WEB_TOKENS_FILE") or home_dir() / "web" / "tokens")
    )
    session_seconds: int = field(default_factory=lambda: _positive("MEDROUTE_WEB_SESSION_SECONDS", 8 * 3600))
    login_attempts: int = field(default_factory=lambda: _positive("MEDROUTE_WEB_LOGIN_ATTEMPTS", 5))
    login_window: int = field(default_factory=lambda: _positive("MEDROUTE_WEB_LOGIN_WINDOW", 300))
    recent: int = field(default_factory=lambda: _positive("MEDROUTE_WEB_RECENT", 20_000))
    # Without Kafka the API still classifies; set 0 to not connect at all (a classify-only server).
    kafka: bool = field(default_factory=lambda: env_int("MEDROUTE_WEB_KAFKA", 1) != 0)

    @property
    def secure_cookies(self) -> bool:
        return bool(self.tls_cert)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"
