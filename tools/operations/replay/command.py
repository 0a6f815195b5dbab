"""``medroute replay [options]``: start a replay, or resume one by its id."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from medroute import blobstore
from medroute.config import DICOM_INBOUND, HL7_INBOUND, REPLAY_CHECKPOINTS, ROUTING_DECISIONS_REPLAY, KafkaSettings
from medroute.kafka.client import consumer, durable_producer, topic_partitions
from medroute.kafka.topics import ensure_topics
from medroute.logs import configure_logging
from medroute.records import new_id
from medroute.sealing import BlobError
from pipeline.dicom_feed import DicomFeed
from pipeline.feed import Feed
from pipeline.hl7_feed import Hl7Feed
from pipeline.rules import RulesError, load_rules, routes_path
from pipeline.settings import WorkerSettings
from tools.operations.replay.checkpoint import Checkpoint, latest_checkpoint
from tools.operations.replay.ranges import RangeError, parse_bound, resolve
from tools.operations.replay.runner import ReplayRunner

EXIT_USAGE = 2
# A killed replay's open transaction blocks read_committed readers until it is aborted: by the next
# run of the same replay id at once, or by the broker after this long.
TRANSACTION_TIMEOUT_MS = 60_000


class ReplayError(Exception):
    """The replay cannot run as asked; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medroute replay",
        description="Reclassify a range of a topic with a model version; decisions go beside the live ones. "
        "`medroute replay diff ID` compares them with the live decisions.",
    )
    parser.add_argument("--topic", default=HL7_INBOUND, help="source topic (default %(default)s)")
    parser.add_argument(
        "--from",
        dest="range_from",
        metavar="FROM",
        default="beginning",
        help="ISO-8601 time, PARTITION:OFFSET[,...] or 'beginning' (default)",
    )
    parser.add_argument(
        "--to",
        dest="range_to",
        metavar="TO",
        default="end",
        help="exclusive end: ISO-8601 time, PARTITION:OFFSET[,...] or 'end' (default: the end when the replay starts)",
    )
    parser.add_argument("--model", help="model bundle, NAME@VERSION (or NAME: its highest version); needed to start")
    parser.add_argument("--routes", type=Path, default=None, help="routing rules (default: MEDROUTE_ROUTES or shipped)")
    parser.add_argument("--output-topic", default=ROUTING_DECISIONS_REPLAY, help="default %(default)s")
    parser.add_argument("--replay-id", help="resume this replay (or start a new one under this id)")
    parser.add_argument("--max-rate", type=float, default=None, help="records/s at most (live traffic keeps priority)")
    parser.add_argument("--batch-size", type=int, default=64, help="records per transaction (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def load_feed(topic: str, model: str, routes: Path) -> tuple[Feed, str]:
    """The worker's feed for ``topic`` with ``model`` and ``routes``, and the sha256 of the rules file.

    ``hl7.inbound`` is decided by a text model; ``dicom.inbound`` by an image model, reading each image
    again from the blob store the listener wrote it to (``MEDROUTE_BLOB_*``).
    """
    kinds = {HL7_INBOUND: "hl7", DICOM_INBOUND: "dicom"}
    if topic not in kinds:
        raise ReplayError(f"cannot replay {topic}: only {HL7_INBOUND} and {DICOM_INBOUND} hold inbound items")
    kind = kinds[topic]
    try:
        if kind == "hl7":
            from models.text import TextClassifier  # ONNX Runtime: imported only when a replay runs

            classifier = TextClassifier.load(model)
        else:
            from models.image import ImageClassifier

            classifier = ImageClassifier.load(model)
    except Exception as exc:
        raise ReplayError(f"cannot load model {model!r}: {exc}") from exc
    labels = {kind: classifier.labels}
    if kind == "dicom":  # the rules also serve the pool's text model: check them as its workers would
        labels["hl7"] = text_model_labels()
    try:
        rules = load_rules(routes, labels=labels)
    except RulesError as exc:
        raise ReplayError(f"{exc} (give rules for {classifier.ref}'s labels with --routes)") from None
    sha = hashlib.sha256(routes.read_bytes()).hexdigest()
    if kind == "hl7":
        return Hl7Feed(classifier, rules), sha
    try:
        blobs = blobstore.from_env()
    except BlobError as exc:
        raise ReplayError(f"cannot open the blob store: {exc}") from None
    return DicomFeed(classifier, rules, blobs), sha


def text_model_labels() -> list[str]:
    """The labels of the text model the workers are configured with (read from its manifest)."""
    from models.bundle import load_bundle
    from models.registry import find_bundle

    name = WorkerSettings().text_model
    try:
        return list(load_bundle(find_bundle(name)).labels)
    except Exception as exc:
        raise ReplayError(f"cannot read the labels of the text model {name!r} (MEDROUTE_TEXT_MODEL): {exc}") from exc


async def plan(
    settings: KafkaSettings, args: argparse.Namespace, replay_id: str, model: str, routes: Path, routes_sha256: str
) -> Checkpoint:
    """The checkpoint of a new replay: its range resolved to offsets now, nothing done yet."""
    try:
        start, end = parse_bound(args.range_from), parse_bound(args.range_to)
        partitions = [tp.partition for tp in await topic_partitions(settings, args.topic)]
    except (RangeError, LookupError) as exc:
        raise ReplayError(str(exc)) from None
    lookup = consumer(settings)
    await lookup.start()
    try:
        spans = await resolve(lookup, args.topic, partitions, start, end)
    except RangeError as exc:
        raise ReplayError(str(exc)) from None
    finally:
        await lookup.stop()
    return Checkpoint(
        replay_id=replay_id,
        source_topic=args.topic,
        output_topic=args.output_topic,
        model=model,
        routes=str(routes),
        routes_sha256=routes_sha256,
        range_from=args.range_from,
        range_to=args.range_to,
        start={p: first for p, (first, _) in spans.items()},
        end={p: last for p, (_, last) in spans.items()},
        next={p: first for p, (first, _) in spans.items()},
    )


def check_same(args: argparse.Namespace, checkpoint: Checkpoint) -> None:
    """A rerun under an existing id must not ask for something else than the replay it resumes."""
    differences = []
    if args.model and args.model != checkpoint.model and args.model != checkpoint.model.split("@")[0]:
        differences.append(f"--model {args.model} (it replays with {checkpoint.model})")
    given = {
        "--topic": (args.topic, checkpoint.source_topic),
        "--output-topic": (args.output_topic, checkpoint.output_topic),
    }
    if args.model:  # the full command given again: its range must be the same too
        given.update({"--from": (args.range_from, checkpoint.range_from), "--to": (args.range_to, checkpoint.range_to)})
    for option, (value, recorded) in given.items():
        if value != recorded:
            differences.append(f"{option} {value} (it has {recorded})")
    if differences:
        raise ReplayError(f"replay {checkpoint.replay_id} exists and differs: " + "; ".join(differences))


def describe(checkpoint: Checkpoint) -> str:
    spans = ", ".join(f"{p}:{checkpoint.start[p]}-{checkpoint.end[p]}" for p in sorted(checkpoint.start)) or "empty"
    return (
        f"{checkpoint.source_topic} [{spans}] ({checkpoint.total} offsets), model {checkpoint.model} "
        f"-> {checkpoint.output_topic}"
    )


async def start_or_resume(args: argparse.Namespace) -> int:
    settings = KafkaSettings()
    replay_id = args.replay_id or new_id()[:12]
    routes = (args.routes or routes_path()).resolve()
    loaded = load_feed(args.topic, args.model, routes) if args.model else None  # a bad model fails before Kafka
    await ensure_topics(settings, (REPLAY_CHECKPOINTS,))
    # start() fences an earlier run of this replay id: its open transaction is aborted, never committed.
    producer = durable_producer(
        settings, transactional_id=f"medroute-replay-{replay_id}", transaction_timeout_ms=TRANSACTION_TIMEOUT_MS
    )
    await producer.start()
    try:
        checkpoint = await latest_checkpoint(settings, replay_id)
        if checkpoint is None:
            if loaded is None:
                raise ReplayError(f"no replay {replay_id!r} to resume; give --model to start one")
            feed, sha = loaded
            assert feed.model is not None
            checkpoint = await plan(settings, args, replay_id, feed.model.ref, routes, sha)
            await ensure_topics(settings, (checkpoint.output_topic,))
            print(f"replay {replay_id}: {describe(checkpoint)}", flush=True)
        else:
            check_same(args, checkpoint)
            if checkpoint.finished_at:
                print(f"replay {replay_id} finished at {checkpoint.finished_at}: {checkpoint.decided} decided")
                return 0
            feed, sha = load_feed(checkpoint.source_topic, checkpoint.model, Path(checkpoint.routes))
            if sha != checkpoint.routes_sha256:
                raise ReplayError(f"{checkpoint.routes} changed since replay {replay_id} started; resume refused")
            print(
                f"replay {replay_id}: resuming at {checkpoint.done}/{checkpoint.total}: {describe(checkpoint)}",
                flush=True,
            )
        print(f"resume after a crash with: medroute replay --replay-id {replay_id}", flush=True)
        runner = ReplayRunner(settings, feed, producer, REPLAY_CHECKPOINTS, args.batch_size, args.max_rate)
        await runner.commit(checkpoint, [])  # the range is fixed from here on, whatever happens next
        began, done_before = time.monotonic(), checkpoint.done
        with tqdm(
            total=checkpoint.total,
            initial=checkpoint.done,
            unit="rec",
            file=sys.stderr,
            disable=args.no_progress,
            desc=f"replay {replay_id}",
            smoothing=0.1,
        ) as bar:
            await runner.run(checkpoint, bar.update)
        seconds = time.monotonic() - began
        rate = (checkpoint.done - done_before) / seconds if seconds > 0 else 0.0
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(checkpoint.rejected.items()))
        rejected = f"{sum(checkpoint.rejected.values())} not decidable" + (f" ({reasons})" if reasons else "")
        print(
            f"replay {replay_id}: done, {checkpoint.decided} decided, {rejected}; this run "
            f"{checkpoint.done - done_before} records in {seconds:.1f} s ({rate:.0f} rec/s)",
            flush=True,
        )
        return 0
    finally:
        await producer.stop()


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.max_rate is not None and args.max_rate <= 0):
        print("medroute replay: --batch-size and --max-rate must be positive", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("replay")
    try:
        return asyncio.run(start_or_resume(args))
    except ReplayError as exc:
        print(f"medroute replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted: rerun with --replay-id to resume", file=sys.stderr)
        return 130
