"""``medroute batch``: classify every file of a directory with the local models; no Kafka needed.

    medroute batch --input-dir DIR --output-dir OUT [--task auto|text_classification|image_classification]
                   [--model NAME]

Reads txt, PDF (text layer), HL7 v2, DICOM and PNG/JPEG (see :mod:`tools.operations.batch_inputs`), chooses a
model per file (:mod:`tools.operations.batch_models`) and writes one line per file to ``OUT/results.jsonl`` and
``OUT/results.csv``, plus ``OUT/summary.json``. Every file gets a line: ``ok`` with its label,
``unclassifiable`` (readable, nothing a model takes) or ``failed`` (unreadable, or its model could not
be loaded), each with the reason. Files are classified in chunks, one ``predict`` call per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from medroute.logs import configure_logging
from models.bundle import BundleError
from tools.operations.batch_inputs import (
    ImageInput,
    Input,
    InputError,
    NothingToClassify,
    TextInput,
    kind_of,
    read_input,
)
from tools.operations.batch_models import TASKS, ModelChoice, Models, ModelUnavailableError
from tools.operations.batch_report import ResultRow, ResultWriter, summarize, write_summary

CHUNK = 32  # files read before one predict call per model: bounds memory with large images
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medroute batch",
        description="Classify every file of a directory with the local models (no Kafka): "
        "results.jsonl, results.csv and summary.json in the output directory.",
    )
    parser.add_argument("--input-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--task", choices=TASKS, default="auto")
    parser.add_argument("--model", help="use this bundle (NAME, NAME@VERSION or a directory) for every input it takes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def input_files(directory: Path, exclude: Path | None = None) -> list[Path]:
    """Every file under ``directory``, sorted; ``exclude`` (the output directory, if inside) left out."""
    skip = exclude.resolve() if exclude is not None else None
    files = []
    for path in sorted(directory.rglob("*")):
        if skip is not None and (path.resolve() == skip or skip in path.resolve().parents):
            continue
        if path.is_file():
            files.append(path)
    return files


def read_file(path: Path, root: Path) -> tuple[ResultRow, Input | None]:
    """A row with what is known so far, and the input (None when the file could not be read)."""
    name = path.relative_to(root).as_posix()
    try:
        with path.open("rb") as stream:
            head = stream.read(132)
        kind = kind_of(path, head)
    except OSError as exc:
        return ResultRow(name, "unknown", "failed", reason=f"cannot open: {exc.strerror}"), None
    try:
        item = read_input(path, kind)
    except InputError as exc:
        return ResultRow(name, kind, "failed", reason=str(exc)), None
    except OSError as exc:
        return ResultRow(name, kind, "failed", reason=f"cannot read: {exc.strerror}"), None
    if isinstance(item, NothingToClassify):
        return ResultRow(name, kind, "unclassifiable", reason=item.reason), None
    language = item.language if isinstance(item, TextInput) else None
    return ResultRow(name, kind, "ok", language=language, note=item.note), item


def classify_chunk(rows: list[ResultRow], inputs: list[Input | None], choice: ModelChoice, models: Models) -> None:
    """Fill in ``rows`` (in place) for the inputs that were read, one predict call per model."""
    wanted: dict[str, list[int]] = defaultdict(list)
    for n, item in enumerate(inputs):
        if item is None:
            continue
        chosen = choice.choose(item)
        if chosen.model is None:
            rows[n] = replace(rows[n], status="unclassifiable", reason=chosen.reason)
        else:
            wanted[chosen.model].append(n)
    for name, members in wanted.items():
        try:
            model = models.get(name)
        except ModelUnavailableError as exc:
            for n in members:
                rows[n] = replace(rows[n], status="failed", reason=str(exc))
            continue
        try:
            predictions = model.predict([_payload(inputs[n]) for n in members])
        except Exception as exc:  # one chunk's failure is reported on its files; the run goes on
            for n in members:
                rows[n] = replace(rows[n], status="failed", reason=f"{model.ref} failed ({type(exc).__name__})")
            continue
        for n, prediction in zip(members, predictions, strict=True):
            rows[n] = replace(
                rows[n],
                model=model.ref,
                label=prediction.label,
                confidence=round(float(prediction.confidence), 6),
                below_threshold=bool(prediction.below_threshold),
                scores={label: round(float(p), 6) for label, p in prediction.scores.items()},
            )


def _payload(item: Input | None) -> object:
    if isinstance(item, TextInput):
        return item.text
    assert isinstance(item, ImageInput)
    return item.pixels


def chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run(args: argparse.Namespace, choice: ModelChoice) -> dict:
    """Classify the directory; returns the summary (also written to summary.json)."""
    models = Models()
    files = input_files(args.input_dir, args.output_dir)
    began = time.monotonic()
    with (
        ResultWriter(args.output_dir) as writer,
        tqdm(total=len(files), unit="file", file=sys.stderr, disable=args.no_progress, desc="batch") as bar,
    ):
        for chunk in chunks(files, CHUNK):
            read = [read_file(path, args.input_dir) for path in chunk]
            rows, inputs = [row for row, _ in read], [item for _, item in read]
            classify_chunk(rows, inputs, choice, models)
            for row in rows:
                writer.add(row)
            bar.update(len(chunk))
        summary = summarize(writer.rows, time.monotonic() - began)
    write_summary(args.output_dir, summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.input_dir.is_dir():
        print(f"medroute batch: {args.input_dir} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("batch")
    try:
        choice = ModelChoice(args.task, args.model)
    except BundleError as exc:  # a forced model that does not exist or does not fit the task
        print(f"medroute batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    summary = run(args, choice)
    print(
        f"{summary['files']} files: {summary['ok']} classified, {summary['unclassifiable']} unclassifiable, "
        f"{summary['failed']} failed ({summary['seconds']} s); results in {args.output_dir}"
    )
    for model, labels in summary["by_label"].items():
        print(f"  {model}: " + ", ".join(f"{label} {count}" for label, count in labels.items()))
    for entry in summary["failures"] + summary["unclassifiable_files"]:
        print(f"  {entry['file']}: {entry['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
