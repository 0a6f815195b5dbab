"""Routing rules reloaded without a restart: the worker checks its rules file every few seconds; a changed
file is read and checked as at start (labels against the loaded models) and swapped into both feeds between
micro-batches, or refused with the old rules kept. Either way an audit event (``reload``) says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from medroute.config import AUDIT_EVENTS
from medroute.records import AuditEvent
from pipeline.feed import Feed
from pipeline.publish import Outbound, Publisher
from pipeline.routing import Rules
from pipeline.rules import LabelSets, RulesError, load_rules
from pipeline.watch import FileWatch

log = structlog.get_logger(__name__)


class RulesReloader:
    def __init__(self, path: Path, feeds: list[Feed], labels: Callable[[], LabelSets], publisher: Publisher) -> None:
        self._watch = FileWatch(path)
        self._path = path
        self._feeds = feeds
        self._labels = labels
        self._publisher = publisher

    async def check(self) -> Rules | None:
        """Apply the file if it changed; returns the new rules (None: unchanged or refused)."""
        if not self._watch.changed():
            return None
        try:
            rules = load_rules(self._path, labels=self._labels())
        except RulesError as exc:
            log.error("rules_refused", error=str(exc))
            await self._audit({"outcome": "refused", "error": str(exc)[:500]})
            return None
        for feed in self._feeds:
            feed.rules = rules  # the next record decided uses them
        log.info("rules_reloaded", rules=len(rules.rules))
        await self._audit({"outcome": "applied", "rules": len(rules.rules)})
        return rules

    async def follow(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.check()

    async def _audit(self, details: dict) -> None:
        event = AuditEvent(action="reload", actor="worker", message_id=None,
                           details={"what": "routes", "file": str(self._path), **details})  # fmt: skip
        await self._publisher.publish([Outbound(AUDIT_EVENTS, b"routes", event.to_json())])
