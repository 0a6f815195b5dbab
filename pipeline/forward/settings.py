"""Forwarder settings from the environment (``MEDROUTE_*``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import env_float, env_str


def destinations_from_env() -> Path | None:
    value = env_str("MEDROUTE_DESTINATIONS")
    return Path(value) if value else None


def destinations_path() -> Path:
    """The destinations file; there is no default: where items go is each site's own decision."""
    path = destinations_from_env()
    if path is None:
        raise SystemExit("medroute forward: set MEDROUTE_DESTINATIONS to a destinations file (see the README)")
    return path


@dataclass(frozen=True)
class ForwardSettings:
    destinations: Path = field(default_factory=destinations_path)
    # How often the destinations file is checked for changes (0: never).
    reload_seconds: float = field(default_factory=lambda: env_float("MEDROUTE_FORWARD_RELOAD_SECONDS", 2.0))
    # How far before the oldest decision in hand the ledger is read back (clock skew between hosts, slow
    # commits): an hour is generous, since an entry is written within a second of its decision's delivery.
    ledger_lookback: float = field(default_factory=lambda: env_float("MEDROUTE_FORWARD_LEDGER_LOOKBACK", 3600.0))
    status_seconds: float = field(default_factory=lambda: env_float("MEDROUTE_FORWARD_STATUS_SECONDS", 2.0))
