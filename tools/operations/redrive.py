"""``medroute redrive``: send a destination's dead-lettered items again, once the cause is mended (the EHR's
interface fixed the mapping it refused, the PACS has room again).

Reads ``forward.deadletter`` up to its end (from its beginning, or from ``--since``), takes the newest letter per
message of ``--destination`` (when its reason is ``--reason``, if given), and publishes each letter's
decision again on ``routing.decisions``, addressed to that destination alone, keyed as the worker keys it (the
patient's or the study's ordering key) and marked with a redrive id: where its letter sits on
``forward.deadletter`` (``partition-offset``). The destination's forwarder then delivers it like any decision;
its delivered-ids ledger knows it by message id and redrive id, so the first try's entry does not hold it back.
A letter that an earlier redrive delivered is left out (the ledger is read from the oldest letter's time on).
A redriven item goes behind what its patient's lane has already delivered: it cannot take back its place in
that patient's order.

``--dry-run`` lists what would be sent. Every run that sends is one ``redrive`` audit event (who, the
destination, the reason filter, how many). Nothing printed names a patient: message ids and receivers' codes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from aiokafka import ConsumerRecord

from medroute.config import AUDIT_EVENTS, FORWARD_DEADLETTER, FORWARD_DELIVERED, ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import durable_producer, records_to_end
from medroute.records import AuditEvent, ForwardDeadLetter, RoutingDecision
from pipeline.forward.ledger import DELIVERED

ACTOR = "redrive"
REASONS = ("refused", "attempts_exhausted")  # a forward dead letter's reasons (pipeline.forward.forwarder)
EXIT_USAGE = 2


@dataclass(frozen=True)
class Redrive:
    letter: ForwardDeadLetter
    decision: RoutingDecision  # addressed to the letter's destination alone, with its redrive id
    written_ms: int  # the letter's Kafka timestamp


def chosen(records: Sequence[ConsumerRecord], destination: str, reason: str | None = None) -> list[Redrive]:
    """The newest letter per message of ``destination`` (when its reason is ``reason``, if given), as decisions
    to send again, in the order their letters were written."""
    newest: dict[str, Redrive] = {}
    # Each partition's records in offset order; a message's letters share its key, so its partition: the
    # last one seen is the newest.
    for record in records:
        try:
            letter = ForwardDeadLetter.from_json(record.value or b"")
            decision = RoutingDecision.from_dict(letter.decision)
        except (ValueError, TypeError):
            continue  # not a letter this version reads: left alone
        if letter.destination == destination:
            again = replace(decision, destinations=[destination], redrive_id=f"{record.partition}-{record.offset}")
            newest[letter.message_id] = Redrive(letter, again, record.timestamp)
    # The reason of a message's newest letter: an older letter's was superseded by the try that followed it.
    wanted = [r for r in newest.values() if reason is None or r.letter.reason == reason]
    return sorted(wanted, key=lambda r: r.written_ms)


async def delivered_since(settings: KafkaSettings, destination: str, since_ms: int) -> set[str]:
    """The delivery ids ``destination``'s ledger holds as delivered, of entries written since ``since_ms``."""
    prefix = f"{destination}:".encode()
    entries = await records_to_end(settings, FORWARD_DELIVERED, since_ms)
    ours = [r for r in entries if r.key and r.key.startswith(prefix) and r.value]
    return {r.key[len(prefix) :].decode() for r in ours if json.loads(r.value).get("outcome") == DELIVERED}


async def plan(settings: KafkaSettings, destination: str, reason: str | None, since_ms: int | None) -> list[Redrive]:
    """The letters to send again, less those an earlier redrive delivered (its ledger entry was written after
    the letter, so the ledger is read from the oldest letter's time)."""
    redrives = chosen(await records_to_end(settings, FORWARD_DEADLETTER, since_ms), destination, reason)
    if not redrives:
        return []
    done = await delivered_since(settings, destination, redrives[0].written_ms)
    return [r for r in redrives if r.decision.delivery_id not in done]


def audit_event(destination: str, reason: str | None, since: str | None, by: str, count: int) -> AuditEvent:
    details = {"destination": destination, "reason": reason, "since": since, "by": by, "count": count}
    return AuditEvent(action="redrive", actor=ACTOR, message_id=None, details=details)


def code_of(letter: ForwardDeadLetter) -> str:
    """The receiver's code only (``AE``, ``status_0xA700``): the rest of a letter's detail may be its free text."""
    return letter.detail.split(":", 1)[0]


async def send_again(settings: KafkaSettings, redrives: Sequence[Redrive], audit: AuditEvent) -> None:
    """Publish every decision and then the audit event; raises unless Kafka stored them all."""
    producer = durable_producer(settings)
    await producer.start()
    try:
        sends = [
            await producer.send(ROUTING_DECISIONS, r.decision.to_json(),
                                key=(r.decision.order_key or r.decision.message_id).encode())
            for r in redrives
        ]  # fmt: skip
        await asyncio.gather(*sends)
        await producer.send_and_wait(AUDIT_EVENTS, audit.to_json(), key=ACTOR.encode())
    finally:
        await producer.stop()


def _since_ms(text: str | None) -> int | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"--since {text!r}: give a time zone (e.g. 2026-03-01T08:00:00+00:00)")
    return int(moment.timestamp() * 1000)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medroute redrive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--destination", required=True, help="the destination whose dead letters are sent again")
    parser.add_argument("--reason", choices=REASONS, help="only the letters of this reason")
    parser.add_argument("--since", help="only letters written from this ISO-8601 time (with its zone)")
    parser.add_argument("--by", default="operator", help="who sends them again (audit)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        since_ms = _since_ms(args.since)
    except ValueError as exc:
        print(f"medroute redrive: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = KafkaSettings()
    redrives = asyncio.run(plan(settings, args.destination, args.reason, since_ms))
    for r in redrives:
        print(f"{r.letter.at}  {r.letter.message_id}  {r.letter.kind:<5} {r.letter.reason:<18} "
              f"attempts {r.letter.attempts}  {code_of(r.letter)}")  # fmt: skip
    if not redrives:
        print(f"no dead letters of {args.destination} to send again" + (f" ({args.reason})" if args.reason else ""))
        return 0
    if args.dry_run:
        print(f"{len(redrives)} would be sent again to {args.destination} (--dry-run: nothing sent)")
        return 0
    audit = audit_event(args.destination, args.reason, args.since, args.by, len(redrives))
    asyncio.run(send_again(settings, redrives, audit))
    print(f"{len(redrives)} sent again to {args.destination}: its forwarder delivers them like any decision")
    return 0
