"""``medroute forward status``: per destination, delivered, pending, retrying, dead-lettered, breaker state."""

from __future__ import annotations

import asyncio
import json

from medroute.config import KafkaSettings
from pipeline.forward.destinations import DestinationsError, load_destinations
from pipeline.forward.settings import destinations_from_env
from pipeline.forward.status import format_rows, status_rows


def show(as_json: bool = False) -> int:
    names: list[str] = []
    path = destinations_from_env()
    if path is not None:
        try:
            names = [d.name for d in load_destinations(path)]
        except DestinationsError as exc:
            print(f"(destinations file unreadable: {exc})")
    rows = asyncio.run(status_rows(KafkaSettings(), names))
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_rows(rows))
        print("delivered, retrying and dead: since each forwarder started; pending: decisions its group has not passed")
    return 0
