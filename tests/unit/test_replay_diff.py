"""Replay diff: counting changes between live and replayed decisions, and the replay's pacing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from medroute.config import KafkaSettings
from tools.operations.replay import diff_command
from tools.operations.replay.diff import NO_LABEL, DecisionView, compute_diff, summary_lines
from tools.operations.replay.plot import plot_transitions
from tools.operations.replay.runner import Pacer


def view(label: str | None, *destinations: str, rule: str = "r", model: str | None = "m@1") -> DecisionView:
    return DecisionView.of({"label": label, "destinations": list(destinations), "rule": rule, "model": model})


def test_changes_transitions_and_missing_are_counted() -> None:
    ids = ["a", "b", "c", "d", "e", "f", "g", "h"]
    live = {
        "a": view("letter", "ehr"),
        "b": view("letter", "ehr"),
        "c": view("radiology_report", "ris"),
        "d": view(None, "adt", model=None),
        "e": view("letter", "ehr", "x"),
        "g": view("letter", "ehr"),  # not replayed
    }
    replayed = {
        "a": view("letter", "ehr", model="m@2"),  # unchanged
        "b": view("office_note", "ehr", rule="s", model="m@2"),  # label only
        "c": view("letter", "review", rule="s", model="m@2"),  # label and destinations
        "d": view(None, "adt", model=None),  # unchanged, no text
        "e": view("letter", "x", "ehr", model="m@2"),  # same destinations in another order: unchanged
        "f": view("letter", "ehr", model="m@2"),  # no live decision
    }
    report = compute_diff(ids, replayed, live, examples=1)
    assert report["counts"] == {
        "in_range": 8,
        "replayed": 6,
        "live": 6,
        "compared": 5,
        "unchanged": 3,
        "changed": 2,
        "label_changed": 2,
        "destinations_changed": 1,
        "rule_changed": 2,
    }
    assert report["missing"] == {
        "live": {"count": 1, "examples": ["f"]},
        "replay": {"count": 1, "examples": ["g"]},
        "both": {"count": 1, "examples": ["h"]},
    }
    assert report["labels"] == ["letter", "office_note", "radiology_report", NO_LABEL]
    assert report["matrix"] == [[2, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    assert [(t["live"], t["replay"], t["count"], t["examples"]) for t in report["label_transitions"]] == [
        ("letter", "office_note", 1, ["b"]),
        ("radiology_report", "letter", 1, ["c"]),
    ]
    assert report["destination_changes"] == [{"live": ["ris"], "replay": ["review"], "count": 1, "examples": ["c"]}]
    assert report["models"] == {"live": {"m@1": 4, "(none)": 1}, "replay": {"m@2": 4, "(none)": 1}}
    assert any("label 2, destinations 1" in line for line in summary_lines(report))


def test_examples_are_capped_and_ids_counted_once() -> None:
    ids = [f"m{n}" for n in range(20)] + ["m0"]
    live = {m: view("letter", "ehr") for m in ids}
    replayed = {m: view("office_note", "ehr") for m in ids}
    report = compute_diff(ids, replayed, live, examples=3)
    assert report["counts"]["compared"] == 20
    assert report["label_transitions"] == [
        {"live": "letter", "replay": "office_note", "count": 20, "examples": ["m0", "m1", "m2"]}
    ]
    assert report["destination_changes"] == []


def test_an_empty_diff_is_well_formed(tmp_path: Path) -> None:
    report = compute_diff([], {}, {})
    assert report["counts"]["compared"] == 0 and report["matrix"] == [] and report["labels"] == []
    assert plot_transitions([], [], "empty", tmp_path / "t.png").stat().st_size > 0


def test_the_matrix_is_drawn(tmp_path: Path) -> None:
    path = plot_transitions(["a", "b"], [[5, 1], [0, 7]], "a title", tmp_path / "out" / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pacer_holds_the_rate() -> None:
    now = [0.0]
    pacer = Pacer(10.0, clock=lambda: now[0])
    assert pacer.delay(5) == 0.5  # 5 records at 10/s are due over half a second
    now[0] = 0.5
    assert pacer.delay(5) == 0.5
    now[0] = 3.0  # fell behind: no waiting, no burst credit beyond the average
    assert pacer.delay(10) == 0.0
    assert Pacer(None).delay(1000) == 0.0


def test_live_decisions_are_the_last_per_message_but_neither_backfills_nor_redrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stored(message_id: str, destinations: list[str], **marks: str) -> SimpleNamespace:
        decision = {"message_id": message_id, "label": "letter", "destinations": destinations, **marks}
        return SimpleNamespace(key=b"patient-key", value=json.dumps(decision).encode())  # keyed by ordering key

    records = [
        stored("a", ["ehr"]),
        stored("b", ["ehr"]),
        stored("a", ["ehr", "archive"]),  # decided again (a worker restart): the last one counts
        stored("a", ["review"], replay_id="r1"),  # a backfill
        stored("b", ["ehr"], redrive_id="0-4"),  # a dead letter sent again
        stored("z", ["ehr"]),  # not in the range
    ]

    async def read_committed(settings: KafkaSettings, topic: str) -> AsyncIterator[SimpleNamespace]:
        for record in records:
            yield record

    monkeypatch.setattr(diff_command, "read_committed", read_committed)
    found, repeats = asyncio.run(diff_command.last_decisions(KafkaSettings(), "routing.decisions", {"a", "b"}, None))
    assert {m: d["destinations"] for m, d in found.items()} == {"a": ["ehr", "archive"], "b": ["ehr"]}
    assert "redrive_id" not in found["b"] and repeats == 1

