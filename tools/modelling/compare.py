"""Compare text bundles (and their probability-averaged ensembles) on one labelled set, in one run.

    python -m tools.modelling.compare --data data/mtsamples/doctype_dev.csv \\
        --candidate tfidf=models/bundles/doctype-en --candidate minilm=out/doctype-minilm --ensemble tfidf+minilm

Prints one JSON object: for each candidate and ensemble, macro-F1, accuracy, texts/s (cache off, the
session's ``MEDROUTE_MODEL_THREADS``) and size on disk; ``--markdown`` adds the table rows docs/MODELS.md uses.
``--weights`` tries ensemble weights (the encoder's share) and reports each.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import find_bundle
from models.text import TextClassifier
from tools.modelling.datasets import read_labelled_csv
from tools.modelling.metrics import classification_metrics


def bundle_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def score(truth: Sequence[str], probabilities: np.ndarray, labels: list[str]) -> dict[str, float]:
    index = {label: n for n, label in enumerate(labels)}
    metrics = classification_metrics(np.array([index[t] for t in truth]), probabilities, labels)
    return {"macro_f1": round(metrics["macro_f1"], 4), "accuracy": round(metrics["accuracy"], 4)}


def compare(data: str, candidates: dict[str, str], ensembles: list[str], weights: list[float]) -> dict[str, Any]:
    rows = read_labelled_csv(data)
    texts, truth = [row.text for row in rows], [row.label for row in rows]
    results: dict[str, Any] = {}
    probabilities: dict[str, np.ndarray] = {}
    labels: list[str] = []
    for name, ref in candidates.items():
        classifier = TextClassifier.load(ref)
        classifier.cache_size = 0
        started = time.perf_counter()
        probabilities[name] = classifier.predict_proba(texts)
        seconds = time.perf_counter() - started
        labels = labels or classifier.labels
        if classifier.labels != labels:
            raise SystemExit(f"{name}: labels differ from the first candidate's")
        results[name] = {
            **score(truth, probabilities[name], labels),
            "texts_per_second": round(len(texts) / seconds, 1),
            "megabytes": round(bundle_bytes(find_bundle(ref)) / 1e6, 1),
            "model": classifier.ref,
        }
    for ensemble in ensembles:
        first, second = ensemble.split("+")
        for weight in weights:
            mixed = (1 - weight) * probabilities[first] + weight * probabilities[second]
            key = ensemble if len(weights) == 1 else f"{ensemble}@{weight:g}"
            results[key] = {**score(truth, mixed, labels), "weight_of_second": weight}
    return {"data": Path(data).name, "rows": len(rows), "candidates": results}


def markdown(report: dict[str, Any]) -> str:
    lines = []
    for name, result in report["candidates"].items():
        speed = result.get("texts_per_second", "")
        size = result.get("megabytes", "")
        lines.append(f"| {name} | {result['macro_f1']:.3f} | {result['accuracy']:.3f} | {size} | {speed} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.modelling.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--candidate", action="append", required=True, help="NAME=bundle (path, name or name@version)")
    parser.add_argument("--ensemble", action="append", default=[], help="NAME+NAME: mean of their probabilities")
    parser.add_argument("--weights", default="0.5", help="comma-separated shares of the second member")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    candidates = dict(entry.split("=", 1) for entry in args.candidate)
    report = compare(args.data, candidates, args.ensemble, [float(w) for w in args.weights.split(",")])
    print(json.dumps(report, ensure_ascii=False))
    if args.markdown:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
