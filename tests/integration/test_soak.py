"""The chaos soak, two minutes of it, in the README's test command: HL7 and DICOM traffic with forwarding
while each listener, each of two workers, the forwarder and the broker are killed (SIGKILL) and restarted
once. It runs its own broker, so it disturbs no other test. What a user would check, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.soak.run import TARGETS, run


@pytest.mark.timeout(600)
def test_two_minute_chaos_soak_loses_nothing_and_delivers_once(tmp_path: Path) -> None:
    summary = run(minutes=2, interval=12, home=tmp_path, drain=180)
    shown = json.dumps(summary, indent=1)
    assert sorted({k["target"] for k in summary["kills"]}) == sorted(TARGETS), shown  # every process killed
    assert summary["acknowledged_hl7"] > 300 and summary["acknowledged_images"] > 60, shown
    assert summary["acknowledged_missing"] == [], shown
    assert summary["undecided"] == 0, shown
    assert summary["partitions_with_lag"] == {}, shown
    assert summary["forward_dead_letters"] == 0, shown
    for destination in ("at_ehr", "at_pacs"):
        assert summary[destination]["missing"] == 0, shown
        assert summary[destination]["double_unexplained"] == 0, shown
    assert summary["ok"], shown
