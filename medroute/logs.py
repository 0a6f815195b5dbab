"""structlog configuration: JSON lines on stderr, and the one way to name a person in a log.

Logs never carry PHI: no names, identifiers or report text. Where a log must tie events
together, it uses :func:`hash_id`, a keyed hash that cannot be reversed without the site's salt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
from functools import lru_cache

import structlog

from medroute.config import LOG_LEVEL, LOG_SALT


@lru_cache(maxsize=1)
def _keyed() -> hmac.HMAC:
    """HMAC-SHA256 keyed with the site's salt; copied per use, which skips the key schedule."""
    salt = (LOG_SALT() or "medroute-default-salt").encode()
    return hmac.new(salt, digestmod=hashlib.sha256)


def hash_id(value: str | bytes | None) -> str | None:
    """A short keyed hash of an identifier, stable within a site, for logs and audit events."""
    if value is None or value == "" or value == b"":
        return None
    mac = _keyed().copy()
    mac.update(value.encode() if isinstance(value, str) else value)
    return mac.hexdigest()[:16]


def configure_logging(component: str) -> None:
    level = getattr(logging, (LOG_LEVEL() or "INFO").upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component)
