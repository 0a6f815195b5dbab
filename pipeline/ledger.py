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

from collections.abc import Sequence

import faust
import orjson

from pipeline.outcomes import Outcome, Rejected
from pipeline.publish import Outbound

TABLE_NAME = "decided"
DICOM_TABLE_NAME = "decided-dicom"


def table_name(kind: str) -> str:
    """The ledger of one feed kind (``hl7`` keeps the name it had before DICOM arrived)."""
    return TABLE_NAME if kind == "hl7" else f"{TABLE_NAME}-{kind}"


class DecidedTable(faust.Table):
    """A table the worker writes a micro-batch at a time, its changelog records published with the batch.

    Faust writes a changelog record for each ``table[key] = value`` through its own send queue, which
    cost the worker more per message than deciding it. Here the entries go into the local store
    directly and :meth:`record` returns their changelog records, which the caller publishes through
    the same producer as everything else, awaited, after the decisions: the records are exactly those
    Faust would write (same topic, key and value encoding), so recovery after a restart reads them as
    its own. Each names the partition of the event it records: a duplicate of a message arrives on
    that partition, and the worker given that partition after a rebalance is given its changelog.
    """

    def record(self, decided: Sequence[tuple[str, Outcome, int]]) -> list[Outbound]:
        """Mark (message id, outcome, source partition) triples and return their changelog records."""
        topic = self.changelog_topic.get_topic_name()
        records = []
        for identity, outcome, partition in decided:
            entry = entry_for(outcome)
            self.data[identity] = entry
            records.append(Outbound(topic, orjson.dumps(identity), orjson.dumps(entry), partition))
        return records


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
