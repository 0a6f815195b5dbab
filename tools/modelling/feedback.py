"""Reviewers' corrections as training rows: ``medroute finetune --feedback``.

The web review queue writes each answer to the ``feedback`` topic (:class:`medroute.records.Feedback`,
keyed by message id, with the text the model read). ``--feedback`` reads them, from the topic (``kafka``,
the default) or from a file of JSON lines (``medroute tail feedback --from-beginning > feedback.jsonl``
on a machine that reaches Kafka), keeps the latest answer per message for the model being trained
(by bundle name), and writes the training CSV with those rows appended (id ``feedback-<message id>``)
beside the output bundle, which the training then reads. The texts are PHI: they stay in that file.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medroute.config import FEEDBACK, KafkaSettings
from medroute.kafka.client import reader_of
from tools.modelling.datasets import TEXT_COLUMNS, DataError, read_labelled_csv


def rows_of(records: Iterable[dict[str, Any]], model_name: str) -> list[tuple[str, str, str]]:
    """``(id, text, label)`` of the latest answer per message about ``model_name``'s decisions, with text."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        value = record["value"] if isinstance(record.get("value"), dict) else record  # `medroute tail` lines
        message_id = value.get("message_id")
        if isinstance(message_id, str) and value.get("label"):
            latest[message_id] = value
    rows = []
    for message_id, value in latest.items():
        model = str(value.get("model") or "").split("@", 1)[0]
        if model == model_name and value.get("kind") == "hl7" and (value.get("text") or "").strip():
            rows.append((f"feedback-{message_id}", str(value["text"]), str(value["label"])))
    return rows


def read_file(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable feedback file: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise DataError(f"{path}:{number}: not a JSON line") from None
        if isinstance(record, dict):
            records.append(record)
    return records


async def read_topic(settings: KafkaSettings, idle_seconds: float = 3.0) -> list[dict[str, Any]]:
    """Every record on the feedback topic up to its end at the time of reading."""
    reader = await reader_of(settings, FEEDBACK)
    try:
        end = await reader.end_offsets(list(reader.assignment()))
        records: list[dict[str, Any]] = []
        while any(await reader.position(tp) < offset for tp, offset in end.items()):
            batches = await reader.getmany(timeout_ms=int(idle_seconds * 1000))
            if not batches:
                break
            for batch in batches.values():
                records += [json.loads(r.value) for r in batch if r.value]
        return records
    finally:
        await reader.stop()


def with_feedback(train_csv: Path, source: str, model_name: str, output: Path) -> tuple[Path, int]:
    """Write ``output``: the rows of ``train_csv`` and the corrections; returns it and how many were added."""
    records = asyncio.run(read_topic(KafkaSettings())) if source == "kafka" else read_file(Path(source))
    corrections = rows_of(records, model_name)
    training = read_labelled_csv(train_csv)
    known = {row.id for row in training}
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(TEXT_COLUMNS)
        writer.writerows((row.id, row.text, row.label) for row in training)
        added = [row for row in corrections if row[0] not in known]
        writer.writerows(added)
    return output, len(added)
