"""A destination's row in ``medroute forward status`` and the web console, from its forwarder's snapshot."""

from __future__ import annotations

import pytest

from pipeline.forward.status import STALE_SECONDS, format_rows, status_row

NOW = 1_000_000.0


def snapshot(age: float, **changes: object) -> dict[str, object]:
    base = {"destination": "pacs", "type": "dicom", "stopped": False, "breaker": "closed", "delivered": 7,
            "dead_lettered": 1, "retrying": 2, "last_error": "status_0xA700", "last_delivered_at": NOW - 60,
            "at": NOW - age}  # fmt: skip
    return {**base, **changes}


@pytest.mark.parametrize(
    ("snap", "state"),
    [
        (snapshot(1.0), "running"),
        (snapshot(1.0, stopped=True), "stopped"),
        (snapshot(STALE_SECONDS + 1), "silent"),  # killed, or cut off from Kafka: it said nothing
        ({}, "unknown"),
    ],
)
def test_state_from_the_snapshot_and_its_age(snap: dict[str, object], state: str) -> None:
    assert status_row("pacs", snap, pending=4, now=NOW)["state"] == state


def test_row_carries_the_counts_and_prints_as_a_table() -> None:
    row = status_row("pacs", snapshot(1.0), pending=4, now=NOW)
    assert {k: row[k] for k in ("delivered", "pending", "retrying", "dead_lettered", "breaker", "last_error")} == {
        "delivered": 7, "pending": 4, "retrying": 2, "dead_lettered": 1, "breaker": "closed",
        "last_error": "status_0xA700",
    }  # fmt: skip
    unknown = status_row("ehr", {}, pending=None, now=NOW)
    lines = format_rows([row, unknown]).splitlines()
    assert lines[1].split()[:6] == ["pacs", "dicom", "running", "7", "4", "2"]
    assert lines[2].split()[:5] == ["ehr", "-", "unknown", "0", "-"]
