"""File names of the ``folder`` destination: a pattern filled in from an item's fields, each value made safe."""

from __future__ import annotations

import re
import string
from pathlib import Path

from pipeline.forward.items import Item

DEFAULT_PATTERN = "{kind}/{message_id}.{ext}"
FIELDS = {
    "message_id", "kind", "label", "rule", "message_type", "date", "ext", "control_id",
    "sop_instance_uid", "study_uid", "series_uid",
}  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def check_pattern(pattern: str) -> str | None:
    """What is wrong with a file name pattern, or None."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as exc:
        return str(exc)
    unknown = sorted(set(names) - FIELDS)
    if unknown:
        return f"unknown field {{{unknown[0]}}}; use {', '.join('{' + f + '}' for f in sorted(FIELDS))}"
    if pattern.startswith("/") or ".." in Path(pattern).parts:
        return "must stay inside the folder (no leading / and no ..)"
    return None


def file_name(pattern: str, item: Item) -> str:
    """The pattern filled in; each value made safe as part of a file name (no separators, no dots only)."""
    safe = {key: _UNSAFE.sub("_", value).strip(".") or "_" for key, value in item.name_fields().items()}
    return pattern.format(**safe)
