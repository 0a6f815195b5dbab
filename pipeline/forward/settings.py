"""Forwarder settings from the environment (``MEDROUTE_*``), each declared once (``medroute.config.Setting``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medroute.config import SettingsArea, home_dir

FORWARD = SettingsArea("Forwarding", ("forward",))
DESTINATIONS = FORWARD("MEDROUTE_DESTINATIONS", None, "the destinations file (required by `medroute forward`; "
                       "`medroute up` writes sample destinations when it is unset)")  # fmt: skip
FORWARD_RELOAD_SECONDS = FORWARD("MEDROUTE_FORWARD_RELOAD_SECONDS", 2.0, "how often the destinations file is "
                                 "checked for changes (0: never)", minimum=0)  # fmt: skip
# An hour is generous: an entry is written within a second of its decision's delivery; the margin covers clock
# skew between hosts and slow commits.
FORWARD_LEDGER_LOOKBACK = FORWARD(
    "MEDROUTE_FORWARD_LEDGER_LOOKBACK",
    3600.0,
    "seconds before the oldest decision in hand from which the delivered-ids ledger is read back at start",
    minimum=0,
)
FORWARD_STATUS_SECONDS = FORWARD("MEDROUTE_FORWARD_STATUS_SECONDS", 2.0, "interval of each destination's status "
                                 "snapshot on `forward.status`", minimum=0.1)  # fmt: skip
FORWARD_METRICS_PORT = FORWARD("MEDROUTE_FORWARD_METRICS_PORT", 0, "the forwarders' Prometheus endpoint (0: off)",
                               minimum=0)  # fmt: skip


# A forwarder has no port to ask; ``medroute health forward`` asks this file's age instead.
HEARTBEAT_MAX_AGE_SECONDS = 30.0


def heartbeat_path() -> Path:
    """Touched by ``medroute forward``'s main loop about once a second while it runs."""
    return home_dir() / "forward" / "alive"


def destinations_from_env() -> Path | None:
    value = DESTINATIONS()
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
    reload_seconds: float = field(default_factory=FORWARD_RELOAD_SECONDS)
    ledger_lookback: float = field(default_factory=FORWARD_LEDGER_LOOKBACK)
    status_seconds: float = field(default_factory=FORWARD_STATUS_SECONDS)
    metrics_port: int = field(default_factory=FORWARD_METRICS_PORT)  # 0: off
    heartbeat: Path = field(default_factory=heartbeat_path)
