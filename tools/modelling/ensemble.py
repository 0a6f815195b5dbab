"""Turn an encoder recipe into an ensemble recipe: TF-IDF bundle + fine-tuned encoder, probabilities averaged.

    python -m tools.modelling.ensemble --recipe out/doctype-en.recipe --tfidf models/bundles/doctype-en \\
        --encoder-weight 0.5 --name doctype-en --version 2.0.0 --eval-data data/mtsamples/doctype_dev.csv \\
        --output out/doctype-en-ensemble

The TF-IDF bundle (a few MB) is copied into the recipe (``tfidf/``); ``models.build`` builds the encoder at
set-up and places both under ``members/`` of one bundle whose manifest lists them with their weights. The
built bundle is evaluated on ``--eval-data`` and its predictions on the first texts recorded for the set-up check.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.build import RECIPE, build_bundle
from models.bundle import load_bundle, sha256_file, write_manifest
from models.registry import find_bundle
from models.text import TextClassifier
from tools.modelling.datasets import read_labelled_csv
from tools.modelling.encoder_export import RECORDED_CHARS, RECORDED_TEXTS
from tools.modelling.metrics import classification_metrics


def make_ensemble(
    recipe_dir: Path, tfidf: Path, weight: float, name: str, version: str, eval_data: Path, output: Path
) -> dict[str, Any]:
    recipe = json.loads((recipe_dir / RECIPE).read_text(encoding="utf-8"))
    tfidf_bundle = load_bundle(tfidf)
    encoder_manifest = recipe["manifest"]
    if tfidf_bundle.labels != encoder_manifest["labels"]:
        raise SystemExit(f"{tfidf}: labels differ from the encoder's")
    shutil.rmtree(recipe_dir / "tfidf", ignore_errors=True)
    shutil.copytree(tfidf_bundle.path, recipe_dir / "tfidf")
    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": "text_classification",
        "input_kind": "text",
        "labels": encoder_manifest["labels"],
        "thresholds": {},
        "default_threshold": 0.5,
        "preprocessing": {"ensemble": "each member tokenizes as its own manifest says"},
        "members": ["members/tfidf", "members/encoder"],
        "member_weights": [round(1 - weight, 4), round(weight, 4)],
        "training": {
            "method": f"mean of probabilities: {tfidf_bundle.ref} (weight {1 - weight:g}) and "
            f"{encoder_manifest['name']}@{encoder_manifest['version']} (weight {weight:g})",
            "members": {"tfidf": tfidf_bundle.manifest.get("training", {}), "encoder": encoder_manifest["training"]},
        },
    }
    recipe["ensemble"] = {"manifest": manifest}
    recipe["recorded"] = []
    (recipe_dir / RECIPE).write_text(json.dumps(recipe, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    build_bundle(recipe_dir, output)
    rows = read_labelled_csv(eval_data)
    classifier = TextClassifier.load(output)
    index = {label: n for n, label in enumerate(classifier.labels)}
    metrics = classification_metrics(
        np.array([index[row.label] for row in rows]),
        classifier.predict_proba([row.text for row in rows]),
        classifier.labels,
    )
    manifest["metrics"] = {
        "dev": {
            "macro_f1": round(metrics["macro_f1"], 4),
            "accuracy": round(metrics["accuracy"], 4),
            "rows": len(rows),
            "data_sha256": {eval_data.name: sha256_file(eval_data)},
        }
    }
    texts = [row.text[:RECORDED_CHARS] for row in rows[:RECORDED_TEXTS]]
    recipe["recorded"] = [
        {"text": text, "label": classifier.labels[int(np.argmax(p))], "probabilities": [round(float(x), 5) for x in p]}
        for text, p in zip(texts, classifier.predict_proba(texts), strict=True)
    ]
    recipe["ensemble"] = {"manifest": manifest}
    (recipe_dir / RECIPE).write_text(json.dumps(recipe, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_manifest(output, manifest)
    return {"bundle": str(output), "recipe": str(recipe_dir), **manifest["metrics"]["dev"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.modelling.ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, required=True, help="an encoder recipe (medroute finetune writes one)")
    parser.add_argument("--tfidf", required=True, help="the TF-IDF bundle (path, name or name@version)")
    parser.add_argument("--encoder-weight", type=float, default=0.5)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--eval-data", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    report = make_ensemble(
        args.recipe, find_bundle(args.tfidf), args.encoder_weight, args.name, args.version, args.eval_data, args.output
    )
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
