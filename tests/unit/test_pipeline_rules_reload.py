"""Routing rules reloaded by a running worker: a good file is swapped into every feed between micro-batches, a
bad one is refused with the old rules kept; each is an audit event."""

from __future__ import annotations

from pathlib import Path

from medroute.config import AUDIT_EVENTS
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided
from pipeline.rules import load_rules, routes_path
from pipeline.rules_reload import RulesReloader
from tests.unit.test_pipeline_agent import RecordingPublisher
from tests.unit.test_pipeline_support import DOCTYPE_LABELS, FakeClassifier, fixture_record

RADIOLOGY_TO_ARCHIVE = """rules:
  - {name: radiology-archive, label: radiology_report, destinations: [archive]}
  - {name: default, destinations: [ehr-inbox]}
"""


def decided_rule(feed: Hl7Feed) -> str:
    (outcome,) = feed.process([fixture_record("oru_r01_radiology.hl7")])
    assert isinstance(outcome, Decided)
    return outcome.decision.rule


async def test_a_changed_rules_file_is_applied_and_a_bad_one_refused(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_path().read_text(encoding="utf-8"), encoding="utf-8")
    feed = Hl7Feed(FakeClassifier(), load_rules(routes))
    publisher = RecordingPublisher()
    reloader = RulesReloader(routes, [feed], lambda: {"hl7": DOCTYPE_LABELS}, publisher)
    assert await reloader.check() is None and decided_rule(feed) == "radiology-reports"  # unchanged file

    routes.write_text(RADIOLOGY_TO_ARCHIVE, encoding="utf-8")
    assert await reloader.check() is not None
    assert decided_rule(feed) == "radiology-archive"

    routes.write_text(RADIOLOGY_TO_ARCHIVE.replace("radiology_report", "no_such_label"), encoding="utf-8")
    assert await reloader.check() is None
    assert decided_rule(feed) == "radiology-archive"  # the old rules kept

    events = [e["details"] for e in publisher.on(AUDIT_EVENTS)]
    assert [e["outcome"] for e in events] == ["applied", "refused"]
    assert "no_such_label" in events[1]["error"] and f"{routes}:" in events[1]["error"]  # file:line named
