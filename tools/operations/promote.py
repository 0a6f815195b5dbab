"""``medroute promote NAME@VERSION``: switch every running worker to that model version, audited.

The bundle is checked here first (installed, files intact), then a promotion is written to the
control topic, which workers follow (see :mod:`pipeline.control`), and an audit event records who
promoted what. ``--backfill REPLAY_ID`` also publishes that replay's decisions that differ from the
live ones to ``routing.decisions`` (marked with the replay id), so forwarders deliver the corrections.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from medroute.config import AUDIT_EVENTS, CONTROL, KafkaSettings
from medroute.kafka.client import durable_producer
from medroute.kafka.topics import ensure_topics
from medroute.records import AuditEvent, ModelPromotion
from models.bundle import BundleError, load_bundle
from models.registry import find_bundle

ACTOR = "tools.promote"


def promotion_for(ref: str, by: str, backfill: str | None) -> ModelPromotion:
    """The promotion of the installed bundle ``ref`` (name, name@version or directory); raises BundleError."""
    bundle = load_bundle(find_bundle(ref))
    return ModelPromotion(task=str(bundle.manifest["task"]), model=bundle.ref, by=by, backfill_replay_id=backfill)


async def publish(settings: KafkaSettings, promotion: ModelPromotion, backfilled: int | None) -> None:
    await ensure_topics(settings)
    producer = durable_producer(settings)
    await producer.start()
    try:
        key = promotion.task.encode()
        await producer.send_and_wait(CONTROL, key=key, value=promotion.to_json())
        details = {
            "task": promotion.task,
            "model": promotion.model,
            "by": promotion.by,
            "command_id": promotion.command_id,
            "backfill_replay_id": promotion.backfill_replay_id,
            "backfilled_decisions": backfilled,
        }
        event = AuditEvent(action="promote", actor=ACTOR, message_id=None, details=details)
        await producer.send_and_wait(AUDIT_EVENTS, key=key, value=event.to_json())
    finally:
        await producer.stop()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="medroute promote", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="bundle to promote: NAME@VERSION, NAME (its highest version) or a directory")
    parser.add_argument("--by", default=None, help="who promotes (default: the login name)")
    parser.add_argument("--backfill", metavar="REPLAY_ID", help="also publish this replay's changed decisions")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        promotion = promotion_for(args.model, args.by or getpass.getuser(), args.backfill)
    except BundleError as exc:
        print(f"medroute promote: {exc}", file=sys.stderr)
        return 2
    settings = KafkaSettings()
    backfilled = None
    if args.backfill:
        from tools.operations.replay.backfill import backfill

        backfilled = asyncio.run(backfill(settings, args.backfill))
    asyncio.run(publish(settings, promotion, backfilled))
    print(f"promoted {promotion.model} for {promotion.task} (command {promotion.command_id})")
    if backfilled is not None:
        print(f"backfilled {backfilled} changed decisions of replay {args.backfill} to routing.decisions")
    return 0
