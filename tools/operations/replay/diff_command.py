"""``medroute replay diff REPLAY_ID [--output DIR]``: read both sides from Kafka, write diff.json and a PNG."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medroute.config import ROUTING_DECISIONS, KafkaSettings
from medroute.logs import configure_logging
from medroute.records import message_id_of
from tools.operations.replay.checkpoint import Checkpoint, latest_checkpoint
from tools.operations.replay.diff import DecisionView, compute_diff, summary_lines
from tools.operations.replay.plot import plot_transitions
from tools.operations.replay.reading import ReadTimeoutError, read_committed

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medroute replay diff",
        description="Compare a replay's decisions with the live decisions of the same messages.",
    )
    parser.add_argument("replay_id")
    parser.add_argument("--output", type=Path, default=None, help="directory (default: replay-diff-REPLAY_ID)")
    parser.add_argument("--examples", type=int, default=5, help="message ids kept per change (default %(default)s)")
    parser.add_argument("--live-topic", default=ROUTING_DECISIONS, help="default %(default)s")
    return parser


async def range_ids(settings: KafkaSettings, checkpoint: Checkpoint) -> list[str]:
    """Message ids of the records in the replay's range, in topic order (unreadable records left out)."""
    spans = {p: (checkpoint.start[p], checkpoint.end[p]) for p in checkpoint.start}
    ids = []
    async for record in read_committed(settings, checkpoint.source_topic, spans):
        try:
            message_id = json.loads(record.value)["message_id"]
        except (TypeError, ValueError, KeyError):
            continue
        if isinstance(message_id, str) and message_id:
            ids.append(message_id)
    return ids


async def last_decisions(
    settings: KafkaSettings, topic: str, wanted: set[str], replay_id: str | None
) -> tuple[dict[str, dict[str, Any]], int]:
    """The last decision per wanted message id on ``topic`` (of ``replay_id`` only, when given); and
    how many decisions were repeats of an id already seen."""
    found: dict[str, dict[str, Any]] = {}
    repeats = 0
    async for record in read_committed(settings, topic):
        # Not by the record's key: live decisions are keyed by their ordering key (the patient or the study).
        if message_id_of(record.value) not in wanted:
            continue  # most records are skipped without parsing them
        decision = json.loads(record.value)
        if decision.get("replay_id") != replay_id or decision.get("message_id") not in wanted:
            continue
        if decision.get("redrive_id"):
            continue  # a dead letter sent again to one destination: the decision is the one made before
        repeats += decision["message_id"] in found
        found[decision["message_id"]] = decision
    return found, repeats



def _views(decisions: dict[str, dict[str, Any]]) -> dict[str, DecisionView]:
    return {message_id: DecisionView.of(decision) for message_id, decision in decisions.items()}

async def gather(args: argparse.Namespace) -> tuple[Checkpoint, dict[str, Any]]:
    settings = KafkaSettings()
    checkpoint = await latest_checkpoint(settings, args.replay_id)
    if checkpoint is None:
        raise LookupError(f"no replay {args.replay_id!r} (no checkpoint on the checkpoint topic)")
    ids = await range_ids(settings, checkpoint)
    wanted = set(ids)
    replayed, replay_repeats = await last_decisions(settings, checkpoint.output_topic, wanted, checkpoint.replay_id)
    live, live_repeats = await last_decisions(settings, args.live_topic, wanted, None)
    report = compute_diff(ids, _views(replayed), _views(live), args.examples)
    report = {
        "replay_id": checkpoint.replay_id,
        "model": checkpoint.model,
        "source": {
            "topic": checkpoint.source_topic,
            "partitions": {str(p): [checkpoint.start[p], checkpoint.end[p]] for p in sorted(checkpoint.start)},
            "from": checkpoint.range_from,
            "to": checkpoint.range_to,
        },
        "output_topic": checkpoint.output_topic,
        "live_topic": args.live_topic,
        "replay_finished": checkpoint.finished_at is not None,
        "replay_rejected": dict(checkpoint.rejected),
        "repeated_decisions": {"replay": replay_repeats, "live": live_repeats},
        **report,
    }
    return checkpoint, report


def write_outputs(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    report_path = directory / "diff.json"
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    live_models = ", ".join(report["models"]["live"]) or "none"
    title = f"replay {report['replay_id']}: live ({live_models}) vs {report['model']}"
    image = plot_transitions(report["labels"], report["matrix"], title, directory / "transitions.png")
    return report_path, image


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("replay-diff")
    try:
        checkpoint, report = asyncio.run(gather(args))
    except (LookupError, ReadTimeoutError) as exc:
        print(f"medroute replay diff: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report_path, image = write_outputs(report, args.output or Path(f"replay-diff-{args.replay_id}"))
    print(f"replay {checkpoint.replay_id} ({checkpoint.model}) vs {args.live_topic}")
    if not report["replay_finished"]:
        print(f"note: the replay has not finished ({checkpoint.done}/{checkpoint.total} offsets)")
    for line in summary_lines(report):
        print(line)
    print(f"wrote {report_path} and {image}")
    return 0
