"""Reading labelled CSV files (``id,text,label`` for text, ``path,label`` for images) with errors that say
which file and which line is wrong. UTF-8 (a BOM is allowed); ``.csv.gz`` is read transparently.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TEXT_COLUMNS = ("id", "text", "label")
FIELD_LIMIT = 1 << 30  # clinical documents can exceed csv's default 128 KiB field limit


class DataError(Exception):
    """Training or evaluation data that cannot be used; the message names the file and, where known, the row."""


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    label: str
    line: int  # line of the file where the row starts (1 = header)


def read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None


def decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: bytes that are not UTF-8 ({data[exc.start : exc.start + 4]!r}); save the file as UTF-8"
        ) from None


def read_records(path: str | Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` for each data row of a CSV file that has at least ``columns`` (others are ignored)."""
    path = Path(path)
    text = decode(path, read_bytes(path))
    if not text.strip():
        raise DataError(f"{path}: empty file (expected a header with {','.join(columns)})")
    csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
        missing = [name for name in columns if name not in header]
        if missing:
            raise DataError(
                f"{path}:1: missing column(s) {', '.join(missing)}; the header has {', '.join(header) or 'nothing'}"
                f" (expected {','.join(columns)})"
            )
        records = []
        line = reader.line_num + 1
        for fields in reader:
            if fields:  # blank lines carry no row
                if len(fields) != len(header):
                    raise DataError(f"{path}:{line}: {len(fields)} fields, but the header has {len(header)}")
                records.append((line, dict(zip(header, fields, strict=True))))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    if not records:
        raise DataError(f"{path}: no data rows after the header")
    return records


def read_labelled_csv(path: str | Path) -> list[Row]:
    """The rows of an ``id,text,label`` file; every row needs a label (an empty text is allowed)."""
    rows = []
    for line, record in read_records(path, TEXT_COLUMNS):
        label = record["label"].strip()
        if not label:
            raise DataError(f"{path}:{line}: empty label")
        rows.append(Row(id=record["id"], text=record["text"], label=label, line=line))
    return rows
