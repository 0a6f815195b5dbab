"""The outputs of ``medroute batch``: one line per file in results.jsonl and results.csv, and summary.json."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

STATUSES = ("ok", "unclassifiable", "failed")


@dataclass(frozen=True)
class ResultRow:
    file: str  # relative to the input directory
    kind: str  # text | pdf | hl7 | dicom | image
    status: str  # ok | unclassifiable (readable, nothing a model takes) | failed (unreadable, or no model)
    model: str | None = None  # name@version
    label: str | None = None
    confidence: float | None = None
    below_threshold: bool | None = None
    language: str | None = None  # text: zh | en
    note: str = ""  # what was read: "ORU^R01^ORU_R01: OBX-5", "CR CHEST PA, frame 1 of 1", "2 pages"
    reason: str = ""  # why not ok
    scores: dict[str, float] = field(default_factory=dict)


CSV_COLUMNS = [name for name in ResultRow.__dataclass_fields__ if name != "scores"]


class ResultWriter:
    """Writes rows as they come (a long run leaves partial results behind) and counts them."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._jsonl = (directory / "results.jsonl").open("w", encoding="utf-8")
        self._csv_file = (directory / "results.csv").open("w", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_COLUMNS)
        self._csv.writeheader()
        self.rows: list[ResultRow] = []

    def add(self, row: ResultRow) -> None:
        self.rows.append(row)
        self._jsonl.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
        self._csv.writerow({name: _cell(getattr(row, name)) for name in CSV_COLUMNS})

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def summarize(rows: list[ResultRow], seconds: float) -> dict[str, Any]:
    """Counts per status, per kind and per label (by model); every file that is not ok, with its reason."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        by_kind[row.kind][row.status] += 1
        if row.status == "ok" and row.model and row.label is not None:
            by_label[row.model][row.label] += 1
    statuses = Counter(row.status for row in rows)
    return {
        "files": len(rows),
        **{status: statuses.get(status, 0) for status in STATUSES},
        "seconds": round(seconds, 2),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "by_label": {model: dict(counts.most_common()) for model, counts in sorted(by_label.items())},
        "failures": _listed(rows, "failed"),
        "unclassifiable_files": _listed(rows, "unclassifiable"),
    }


def _listed(rows: list[ResultRow], status: str) -> list[dict[str, str]]:
    return [{"file": r.file, "kind": r.kind, "reason": r.reason} for r in rows if r.status == status]


def write_summary(directory: Path, summary: dict[str, Any]) -> Path:
    path = directory / "summary.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
