"""``medroute evaluate``: measure a bundle on labelled data; one JSON object on stdout.

    medroute evaluate --model doctype-en --test-data data/mtsamples/doctype_dev.csv
    medroute evaluate --model cxr-pneumonia --test-data data/medmnist/pneumoniamnist_trainval.npz --report out/

Text bundles read an ``id,text,label`` CSV; image bundles an ``.npz`` (its test split, else val; the
integer labels index the bundle's labels) or a ``path,label`` CSV / folder of images. The JSON holds
``model``, ``rows``, ``accuracy``, ``macro_f1``, ``per_class`` precision/recall/F1/support, ``ece``
(top-label expected calibration error, 15 bins), the confusion matrix, and ``auc`` for two labels
(``labels[1]`` positive). ``--report DIR`` also writes ``metrics.json``, ``confusion_matrix.png`` and
``reliability.png``. ``items_per_second`` (texts or images per second, model loading included, cache off)
and the ONNX Runtime ``threads`` it ran with stand beside the metrics. Bad data: one ``error:`` line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import BundleError, load_bundle
from models.prediction import MODEL_THREADS
from models.registry import find_bundle
from tools.modelling.datasets import DataError, read_labelled_csv
from tools.modelling.metrics import calibration_bins, classification_metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medroute evaluate", description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("--model", required=True, help="bundle directory, name or name@version")
    parser.add_argument("--test-data", required=True, help="text: id,text,label CSV; image: .npz or path,label CSV")
    parser.add_argument("--report", type=Path, default=None, help="folder for metrics.json and the plots")
    return parser


def predict_text(model: str, data: str) -> tuple[list[str], np.ndarray, list[str], str]:
    from models.text import TextClassifier

    rows = read_labelled_csv(data)
    classifier = TextClassifier.load(model)
    classifier.cache_size = 0  # repeated texts are not free: the speed reported is the model's
    return (
        [row.label for row in rows],
        classifier.predict_proba([row.text for row in rows]),
        classifier.labels,
        classifier.ref,
    )


def predict_image(model: str, data: str) -> tuple[list[str], np.ndarray, list[str], str]:
    from models.image import ImageClassifier
    from tools.modelling.image_data import load_image_set

    classifier = ImageClassifier.load(model)
    images = load_image_set(data, ("test", "val"), classifier.labels)
    return images.labels, classifier.predict_proba(images.images), classifier.labels, classifier.ref


def evaluate(model: str, data: str) -> dict[str, Any]:
    """The metrics of bundle ``model`` on ``data``."""
    if not Path(data).exists():
        raise DataError(f"{data}: no such file or folder (--test-data)")
    kind = load_bundle(find_bundle(model), verify=False).manifest["input_kind"]
    if kind not in ("text", "image"):
        raise BundleError(f"{model}: cannot evaluate a bundle whose input kind is {kind!r}")
    started = time.perf_counter()
    truth, probabilities, labels, ref = (predict_text if kind == "text" else predict_image)(model, data)
    seconds = time.perf_counter() - started  # reading the data and loading the model included
    unknown = sorted(set(truth) - set(labels))
    if unknown:
        raise DataError(
            f"{data}: labels the model does not know: {', '.join(unknown[:10])} (it knows {', '.join(labels)})"
        )
    index = {label: k for k, label in enumerate(labels)}
    metrics = classification_metrics(np.array([index[label] for label in truth]), probabilities, labels)
    return {
        "model": ref,
        "data": Path(data).name,
        **metrics,
        "items_per_second": round(len(truth) / seconds, 1),
        "threads": MODEL_THREADS(),
        "calibration": calibration_bins(np.array([index[label] for label in truth]), probabilities),
    }


def write_report(directory: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json``, ``confusion_matrix.png`` and ``reliability.png`` in ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    labels, matrix = metrics["labels"], np.array(metrics["confusion_matrix"])
    side = 2.5 + 0.6 * len(labels)
    figure, axes = pyplot.subplots(figsize=(side + 1, side))
    shown = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=color)
    axes.set_title(
        f"{metrics['model']}\naccuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}", fontsize=10
    )
    figure.colorbar(shown)
    figure.tight_layout()
    figure.savefig(directory / "confusion_matrix.png", dpi=100)
    pyplot.close(figure)

    bins = [b for b in metrics["calibration"] if b["count"]]
    figure, axes = pyplot.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=bins[0]["high"] - bins[0]["low"] if bins else 0.1,
        alpha=0.7,
        edgecolor="black",
        label="accuracy",
    )
    axes.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        marker="o",
        color="darkred",
        label="mean confidence vs accuracy",
    )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence of the predicted label")
    axes.set_ylabel("accuracy")
    axes.set_title(f"{metrics['model']}: ECE {metrics['ece']:.3f}")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(directory / "reliability.png", dpi=100)
    pyplot.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = evaluate(args.model, args.test_data)
    except (DataError, BundleError) as exc:
        print(f"medroute evaluate: error: {exc}", file=sys.stderr)
        return 2
    if args.report:
        write_report(args.report, metrics)
    print(json.dumps({key: value for key, value in metrics.items() if key != "calibration"}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
