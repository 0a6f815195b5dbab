"""The soak's counting of what reached a destination, and its MLLP receiver (no Kafka)."""

from __future__ import annotations

import asyncio
from collections import Counter

from formats.hl7.mllp_client import MllpClient, parse_ack
from medroute.ports import free_port
from tools.soak.checks import deliveries
from tools.soak.receivers import MllpReceiver


def test_an_item_decided_once_and_received_twice_is_a_double_delivery() -> None:
    expected = Counter({"A": 1, "B": 1, "C": 1})
    result = deliveries(expected, {"A": [1.0], "B": [2.0, 9.0]}, forwarder_restarts=[])
    assert result["missing"] == 1 and result["missing_examples"] == ["C"]
    assert result["double_unexplained"] == 1 and result["double_across_forwarder_restart"] == 0


def test_a_double_from_two_forwarder_processes_is_the_documented_window() -> None:
    result = deliveries(Counter({"B": 1}), {"B": [2.0, 9.0]}, forwarder_restarts=[1.0, 5.0])
    assert result["double_across_forwarder_restart"] == 1 and result["double_unexplained"] == 0
    one_process = deliveries(Counter({"B": 1}), {"B": [2.0, 9.0]}, forwarder_restarts=[2.0, 10.0])
    assert one_process["double_unexplained"] == 1  # both receipts after the restart at 2.0: the same process


def test_an_item_stored_twice_upstream_is_expected_twice() -> None:
    # The listener stored one message twice (its ACK was lost): two decisions, two deliveries, no double.
    result = deliveries(Counter({"A": 2}), {"A": [1.0, 2.0]}, forwarder_restarts=[])
    assert result == deliveries(Counter({"A": 2}), {"A": [3.0, 4.0]}, forwarder_restarts=[])
    assert result["missing"] == 0 and result["double_unexplained"] == 0 and result["received"] == 2
    assert deliveries(Counter({"A": 2}), {"A": [1.0]}, forwarder_restarts=[])["missing"] == 1


def test_the_mllp_receiver_acks_each_message_and_counts_every_receipt() -> None:
    receiver = MllpReceiver(free_port()).start()
    message = b"MSH|^~\\&|LAB|NORTH|EHR|NORTH|20260101120000||ORU^R01|CTL-7|P|2.5\rPID|1||42\r"

    async def send_twice() -> list[tuple[str, str]]:
        async with MllpClient("127.0.0.1", receiver.port) as client:
            return [parse_ack(await client.send(message, timeout=5))[:2] for _ in range(2)]

    try:
        acks = asyncio.run(send_twice())
    finally:
        receiver.stop()
    assert acks == [("AA", "CTL-7"), ("AA", "CTL-7")]  # MSA-2 names the message, as the forwarder checks
    assert len(receiver.receipts.snapshot()["CTL-7"]) == 2
