"""Deciding alone, no Kafka, on one core: the worker's per-batch path against the classifier on the same texts.

    python -m tools.benchmarks.decide [--records 4000] [--batch-size 16 64] [--model doctype-en]
                                      [--fixtures] [--repeated-texts] [--cache] [--rounds 3]
                                      [--profile] [--json PATH]

Records are sample HL7 messages (:class:`tools.benchmarks.common.MessageSource`: every report text
distinct, as in real traffic; ``--repeated-texts`` keeps the samples' handful of reports), stored as
the MLLP listener stores them (:func:`formats.hl7.record.record_of_bytes`, JSON as on ``hl7.inbound``);
``--fixtures`` puts the HL7 files of tests/fixtures/hl7 in every tenth place. Everything runs on one
core: the process is pinned to one CPU (whatever threads ONNX Runtime or tokenizers start share it), and
the model session has the worker's default of one thread (``MEDROUTE_MODEL_THREADS``). Per batch size,
interleaved over ``--rounds`` (best kept):

* (a) classifier alone: ``predict`` on the very texts the full path classifies, extracted beforehand,
  in the same batches (only records with text reach the model);
* (b) full path: ``Hl7Feed.read`` (JSON decode) -> ``Hl7Feed.process`` (extract, classify, route) ->
  ``pipeline.publish.messages_for`` (decision and audit events serialised), as the worker's agent does.

Both run over the same records, so the ratio (b)/(a) is the share of the path's time that is the model's.
The classifier's LRU cache is off unless ``--cache`` (each measurement then starts with it empty).
``--profile`` runs cProfile over (b) at the first batch size and prints the top 25 functions.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from formats.hl7.record import record_of_bytes
from medroute.config import REPO_ROOT
from medroute.records import Hl7Record, utc_now
from pipeline.extract import extract_text
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Outcome
from pipeline.publish import messages_for
from pipeline.rules import load_rules
from pipeline.settings import WorkerSettings
from tools.benchmarks.common import MessageSource, write_json

if TYPE_CHECKING:
    from models.text import TextClassifier

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "hl7"
FLOOR_RECORDS_PER_S = 2000.0
FLOOR_RATIO = 0.60


def pin_one_core() -> None:
    """Run this process on one CPU (the first it may use)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def stored_payloads(count: int, vary_texts: bool, fixtures: bool) -> list[bytes]:
    """``count`` records as JSON, as the listener stores them on hl7.inbound."""
    source = MessageSource(pool=min(count, 500), seed=23, vary_texts=vary_texts)
    extra = [path.read_bytes() for path in sorted(FIXTURES.glob("*.hl7"))] if fixtures else []
    payloads = []
    for n in range(count):
        raw = extra[(n // 10) % len(extra)] if extra and n % 10 == 9 else source.message(n, f"D-{n:07d}")
        payloads.append(record_of_bytes(raw, peer="127.0.0.1:0", received_at=utc_now()).to_json())
    return payloads


def predicted_texts(feed: Hl7Feed, batch: Sequence[bytes]) -> list[str]:
    """What ``Hl7Feed.process`` passes to ``predict`` for this batch: the non-empty extracted texts."""
    texts = []
    for payload in batch:
        record = feed.read(payload)
        if isinstance(record, Hl7Record):
            extracted = extract_text(record)
            if extracted.has_text:
                texts.append(extracted.text)
    return texts


def decide_batch(feed: Hl7Feed, payloads: Sequence[bytes]) -> int:
    """Path (b) for one micro-batch; returns the number of Kafka messages it would publish."""
    items = [feed.read(payload) for payload in payloads]
    records = [item for item in items if isinstance(item, Hl7Record)]
    outcomes: list[Outcome] = [item for item in items if not isinstance(item, Hl7Record)]
    outcomes += feed.process(records)
    return sum(len(messages_for(outcome)) for outcome in outcomes)


@dataclass
class Measured:
    name: str
    batch_size: int
    records: int
    texts: int
    seconds: float
    cpu_seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds


def timed(run: Callable[[], object]) -> tuple[float, float]:
    began, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - began, time.process_time() - cpu


class Bench:
    """One model, one record set; fresh classifier objects (empty caches) over the one ONNX session."""

    def __init__(self, base: TextClassifier, payloads: list[bytes], cache: bool) -> None:
        self.base = base
        self.payloads = payloads
        self.cache_size = base.cache_size if cache else 0
        self.rules = load_rules(labels={"hl7": base.labels})

    def classifier(self) -> TextClassifier:
        return type(self.base)(self.base.bundle, self.base.session, self.base.tokenizer, cache_size=self.cache_size)

    def batches(self, size: int) -> list[Sequence[bytes]]:
        return [self.payloads[start : start + size] for start in range(0, len(self.payloads), size)]

    def classifier_alone(self, size: int) -> Callable[[], object]:
        feed = Hl7Feed(self.classifier(), self.rules)
        text_batches = [texts for texts in (predicted_texts(feed, b) for b in self.batches(size)) if texts]
        classifier = self.classifier()
        return lambda: [classifier.predict(texts) for texts in text_batches]

    def full_path(self, size: int) -> Callable[[], object]:
        batches = self.batches(size)
        feed = Hl7Feed(self.classifier(), self.rules)
        return lambda: [decide_batch(feed, batch) for batch in batches]

    def measure(self, size: int, rounds: int) -> tuple[Measured, Measured]:
        """(a) and (b) at one batch size, interleaved, the fastest of ``rounds`` each."""
        feed = Hl7Feed(self.classifier(), self.rules)
        texts = sum(len(predicted_texts(feed, batch)) for batch in self.batches(size))
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for name, make in (("classifier alone (a)", self.classifier_alone), ("full path (b)", self.full_path)):
                seconds, cpu = timed(make(size))
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, cpu)
        a, b = (Measured(name, size, len(self.payloads), texts, *best[name]) for name in best)
        return a, b


def profile(bench: Bench, size: int, top: int = 25) -> None:
    run = bench.full_path(size)
    profiler = cProfile.Profile()
    profiler.runcall(run)
    print(f"\n# cProfile of the full path (b), batch {size}: top {top} by cumulative time")
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("cumulative").print_stats(top)


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


def table(results: list[tuple[Measured, Measured]]) -> list[str]:
    rows = [
        "| run | batch | records | texts | seconds | CPU s | records/s | texts/s | ratio (b)/(a) | floors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a, b in results:
        ratio = b.records_per_s / a.records_per_s
        floors = (
            f"≥ {FLOOR_RECORDS_PER_S:,.0f} records/s: {_met(b.records_per_s >= FLOOR_RECORDS_PER_S)}; "
            f"≥ {FLOOR_RATIO:.0%} of (a): {_met(ratio >= FLOOR_RATIO)}"
        )
        for m, cells in ((a, ("1.00", "-")), (b, (f"{ratio:.2f}", floors))):
            rows.append(
                f"| {m.name} | {m.batch_size} | {m.records} | {m.texts} | {m.seconds:.2f} | {m.cpu_seconds:.2f} "
                f"| {m.records_per_s:,.0f} | {m.texts_per_s:,.0f} | {cells[0]} | {cells[1]} |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=4000)
    default_batch = WorkerSettings().batch_size
    parser.add_argument("--batch-size", type=int, nargs="+", default=sorted({default_batch, 64}),
                        help=f"micro-batch sizes (default: the worker's {default_batch}, and 64)")  # fmt: skip
    parser.add_argument("--model", default="doctype-en")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per batch size; the best is kept")
    parser.add_argument("--fixtures", action="store_true", help="tests/fixtures/hl7 in every tenth place")
    parser.add_argument("--repeated-texts", action="store_true", help="the samples' few reports, unvaried")
    parser.add_argument("--cache", action="store_true", help="the classifier's LRU cache on (as in the worker)")
    parser.add_argument("--profile", action="store_true", help="cProfile of (b), top 25 by cumulative time")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)

    pin_one_core()
    from models.text import TextClassifier  # ONNX Runtime: loaded after the process is pinned

    base = TextClassifier.load(args.model)
    payloads = stored_payloads(args.records, vary_texts=not args.repeated_texts, fixtures=args.fixtures)
    bench = Bench(base, payloads, args.cache)
    timed(Bench(base, payloads[:256], args.cache).full_path(args.batch_size[0]))  # warm-up: first runs, allocator
    load = os.getloadavg()[0]
    results = [bench.measure(size, args.rounds) for size in args.batch_size]
    mean_size = sum(map(len, payloads)) / len(payloads)
    print(
        f"# decide benchmark: one core ({os.cpu_count()} CPUs, load average {load:.1f}), model {base.ref}, "
        f"{len(payloads)} records (mean {mean_size:.0f} B of JSON), "
        f"texts {'repeated' if args.repeated_texts else 'varied'}"
        f"{', fixtures' if args.fixtures else ''}, cache {'on' if args.cache else 'off'}, best of {args.rounds}"
    )
    print("\n".join(table(results)))
    if args.profile:
        profile(bench, args.batch_size[0])
    write_json(args.json, {
        "benchmark": "decide", "model": base.ref, "records": len(payloads), "mean_record_bytes": mean_size,
        "load_average": load, "vary_texts": not args.repeated_texts, "fixtures": args.fixtures, "cache": args.cache,
        "floors": {"records_per_s": FLOOR_RECORDS_PER_S, "ratio": FLOOR_RATIO},
        "runs": [
            {**asdict(m), "records_per_s": m.records_per_s, "texts_per_s": m.texts_per_s,
             "ratio": b.records_per_s / a.records_per_s if m is b else 1.0}
            for a, b in results for m in (a, b)
        ],
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
