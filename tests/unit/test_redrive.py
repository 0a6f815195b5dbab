"""Which dead letters ``medroute redrive`` sends again, and how it marks them."""

from __future__ import annotations

from types import SimpleNamespace

from medroute.records import ForwardDeadLetter, RoutingDecision
from tools.operations.redrive import chosen


def decision(message_id: str) -> RoutingDecision:
    return RoutingDecision(message_id, "hl7", "ORU^R01", "doctype-en@1.0.0", "letter", 0.9, "letters", ["ehr", "x"],
                           order_key="k-" + message_id, source_offset="hl7.inbound:0:7")  # fmt: skip


def letter(partition: int, offset: int, message_id: str, destination: str = "ehr", reason: str = "refused",
           timestamp: int | None = None) -> SimpleNamespace:  # fmt: skip
    value = ForwardDeadLetter(destination, message_id, "hl7", reason, "AE: MSA-3 'no such ward'", 1,
                              decision(message_id).to_dict()).to_json()  # fmt: skip
    return SimpleNamespace(partition=partition, offset=offset, timestamp=timestamp or offset, value=value)


def test_newest_letter_per_message_of_the_destination_addressed_to_it_alone() -> None:
    records = [
        letter(0, 3, "m1", timestamp=1000),
        letter(1, 5, "m2", timestamp=900),
        letter(0, 4, "m3", destination="x", timestamp=1001),
        letter(0, 9, "m1", reason="attempts_exhausted", timestamp=2000),  # m1 failed again after a redrive
        SimpleNamespace(partition=1, offset=6, timestamp=950, value=b"not a letter"),
    ]
    again = chosen(records, "ehr")
    assert [(r.letter.message_id, r.decision.redrive_id) for r in again] == [("m2", "1-5"), ("m1", "0-9")]
    first = again[0].decision
    assert first.destinations == ["ehr"] and first.order_key == "k-m2" and first.source_offset == "hl7.inbound:0:7"
    assert first.delivery_id == "m2~1-5" and decision("m2").delivery_id == "m2"
    assert [r.letter.message_id for r in chosen(records, "ehr", reason="refused")] == ["m2"]  # m1's is superseded
    assert [r.letter.message_id for r in chosen(records, "ehr", reason="attempts_exhausted")] == ["m1"]
    assert chosen(records, "pacs") == []


def test_a_redriven_decision_reads_back_with_its_redrive_id() -> None:
    [redrive] = chosen([letter(2, 11, "m9")], "ehr")
    stored = RoutingDecision.from_json(redrive.decision.to_json())
    assert stored.redrive_id == "2-11" and stored.delivery_id == "m9~2-11"


def test_the_web_api_takes_the_reasons_the_command_takes() -> None:
    from typing import get_args

    from tools.operations.redrive import REASONS
    from web.api import RedriveReason

    assert get_args(RedriveReason) == REASONS
