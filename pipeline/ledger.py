"""The ``decided`` table: message ids the worker has already decided, so a redelivery is skipped.

It is a Faust table, backed by a compacted changelog topic and restored from it on start, so it
survives a crash or a restart on another machine. Faust partitions a table by the partition of the
source event: an entry written while processing ``hl7.inbound`` partition p goes to changelog
partition p, and the worker that is given partition p after a rebalance is given that state too.
This is what makes the check work: a duplicate of a message carries the same key (the patient
identifier) as the original, so it arrives on the same partition as the original and finds the
original's entry.

Each inbound topic has its own table (``decided`` for ``hl7.inbound``, ``decided-dicom`` for
``dicom.inbound``), so that changelog partition p always stands for partition p of one source topic.
"""

from __future__ import annotations

from typing import Any

import faust

from pipeline.outcomes import Outcome, Rejected

TABLE_NAME = "decided"
DICOM_TABLE_NAME = "decided-dicom"


def table_name(kind: str) -> str:
    """The ledger of one feed kind (``hl7`` keeps the name it had before DICOM arrived)."""
    return TABLE_NAME if kind == "hl7" else f"{TABLE_NAME}-{kind}"


class DecidedTable(faust.Table):
    """A table whose writes name their source partition explicitly.

    Faust takes a write's changelog partition from the *current* event; a micro-batch holds
    events of several partitions (and ``noack_take`` sets no current event), so each write here
    names the partition of the event it records.
    """

    _write_partition: int | None = None

    def mark(self, message_id: str, outcome: Outcome, partition: int) -> None:
        self._write_partition = partition
        try:
            self[message_id] = entry_for(outcome)
        finally:
            self._write_partition = None

    def partition_for_key(self, key: Any) -> int | None:
        if self._write_partition is not None:
            return self._write_partition
        return super().partition_for_key(key)


def create_ledger(app: faust.App, name: str = TABLE_NAME) -> DecidedTable:
    # No value_type: a plain JSON object (a ``dict`` value_type breaks changelog recovery).
    schema = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
    table = DecidedTable(app, name=name, beacon=app.tables.beacon, schema=schema, help="message ids already decided")
    app.tables.add(table)
    return table


def entry_for(outcome: Outcome) -> dict[str, str]:
    """What the ledger keeps about a message id: the outcome, no PHI."""
    if isinstance(outcome, Rejected):
        return {"outcome": "deadletter", "reason": outcome.dead_letter.reason}
    return {"outcome": "decision", "rule": outcome.decision.rule, "at": outcome.decision.decided_at}
