"""Texts per second of one fine-tuned encoder as torch fp32, ONNX fp32 and ONNX int8, on the same texts, in one run.

    MEDROUTE_MODEL_THREADS=2 python -m tools.benchmarks.encoder_speed --recipe models/recipes/doctype-en-2 \\
        --data data/mtsamples/doctype_dev.csv [--texts 256] [--threads 2] [--rounds 2]

All three see the same texts, tokenized and cut the same way (``models.text.encode_ids``), in batches of 32 texts
of similar length (what the worker's ``predict`` does with a micro-batch). Rounds alternate between the three so
that a neighbour's load on a shared machine falls on each alike; the best round counts. Also reports macro-F1 of
each on those texts (int8 must lose at most a point). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.benchmarks.encoder_speed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (ONNX Runtime: MEDROUTE_MODEL_THREADS)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from models.base_encoders import load_base
    from models.build import DELTA, RECIPE, build_bundle
    from models.prediction import MODEL_THREADS
    from models.text import TextClassifier, encode_ids
    from tools.modelling.datasets import read_labelled_csv
    from tools.modelling.encoder_batches import length_batches, padded
    from tools.modelling.encoder_model import merged_encoder
    from tools.modelling.metrics import classification_metrics

    torch.set_num_threads(args.threads)
    recipe = json.loads((args.recipe / RECIPE).read_text(encoding="utf-8"))
    manifest = recipe["manifest"]
    rows = read_labelled_csv(args.data)[: args.texts]
    texts = [row.text for row in rows]
    labels = manifest["labels"]
    truth = np.array([labels.index(row.label) for row in rows])
    base = load_base(recipe["base_model"])
    with np.load(args.recipe / DELTA) as stored:
        delta = {name: stored[name] for name in stored.files}
    model = merged_encoder(base, delta, len(labels))
    with tempfile.TemporaryDirectory() as scratch:
        plain_recipe = Path(scratch) / "recipe"  # the encoder alone, whether or not the recipe is an ensemble
        plain_recipe.mkdir()
        for name in ("skeleton.onnx", DELTA):
            (plain_recipe / name).write_bytes((args.recipe / name).read_bytes())
        (plain_recipe / RECIPE).write_text(json.dumps({**recipe, "ensemble": None, "recorded": []}), encoding="utf-8")
        fp32 = TextClassifier.load(build_bundle(plain_recipe, Path(scratch) / "fp32", base=base, int8=False))
        int8 = TextClassifier.load(build_bundle(plain_recipe, Path(scratch) / "int8", base=base, int8=True))
        ids = encode_ids(fp32.tokenizer, texts, fp32.max_length, fp32.head_tokens)

        @torch.no_grad()
        def run_torch() -> np.ndarray:
            out = np.zeros((len(texts), len(labels)), dtype=np.float32)
            for batch in length_batches(ids, 32, None):
                input_ids, mask = padded([ids[n] for n in batch], torch.device("cpu"))
                out[batch] = torch.softmax(model(input_ids, mask), dim=-1).numpy()
            return out

        def runner(classifier: TextClassifier) -> Callable[[], np.ndarray]:
            classifier.cache_size = 0
            return lambda: classifier.predict_proba(texts)

        runners = {"torch_fp32": run_torch, "onnx_fp32": runner(fp32), "onnx_int8": runner(int8)}
        best: dict[str, float] = {}
        results: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for name, run in runners.items():
                started = time.perf_counter()
                results[name] = run()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
        report = {
            "recipe": args.recipe.name,
            "texts": len(texts),
            "torch_threads": args.threads,
            "onnxruntime_threads": MODEL_THREADS(),
            "tokens_per_text_mean": round(float(np.mean([len(x) for x in ids])), 1),
        }
        for name in runners:
            metrics = classification_metrics(truth, results[name], labels)
            report[name] = {
                "texts_per_second": round(len(texts) / best[name], 1),
                "macro_f1": round(metrics["macro_f1"], 4),
                "accuracy": round(metrics["accuracy"], 4),
            }
        report["int8_speedup_vs_torch_fp32"] = round(best["torch_fp32"] / best["onnx_int8"], 2)
        report["int8_macro_f1_change_points"] = round(
            100 * (report["onnx_int8"]["macro_f1"] - report["torch_fp32"]["macro_f1"]), 2
        )
        report["int8_megabytes"] = round((Path(scratch) / "int8" / "model.onnx").stat().st_size / 1e6, 1)
        report["fp32_megabytes"] = round((Path(scratch) / "fp32" / "model.onnx").stat().st_size / 1e6, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
