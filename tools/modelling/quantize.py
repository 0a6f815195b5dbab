"""``medroute quantize``: an int8 copy of a bundle (onnxruntime dynamic quantization), with its cost.

    medroute quantize --input-model doctype-en --output-model out/doctype-en-int8 --bits 8 \\
        --eval-data data/mtsamples/doctype_dev.csv

Weights of MatMul/Gemm (and Conv) become int8 per output channel — per-tensor scales lose too much
on transformer weights — and activations are quantized on the fly. The output is a complete bundle
(version ``<version>+int8``, ``quantization`` recorded in the manifest, file hashes renewed). Prints one
JSON object: sizes before/after and, with ``--eval-data``, accuracy and macro-F1 of both models and
the change in points.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.bundle import MANIFEST, BundleError, load_bundle, load_manifest, write_manifest
from models.registry import find_bundle
from tools.modelling.datasets import DataError

MODEL_FILE = "model.onnx"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medroute quantize", description=__doc__.split("\n")[0])
    parser.add_argument("--input-model", required=True, help="bundle directory or installed name[@version]")
    parser.add_argument("--output-model", required=True, type=Path, help="directory of the new bundle (replaced)")
    parser.add_argument("--bits", type=int, default=8, choices=[8], help="only 8 (int8) is supported")
    parser.add_argument("--eval-data", help="labelled data to measure both models on (as medroute evaluate takes)")
    return parser


def quantize_bundle(source: Path, target: Path) -> dict[str, Any]:
    """Write the int8 bundle of ``source`` to ``target``; the new manifest."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = load_bundle(source)
    staging = target.parent / f".{target.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(MANIFEST, MODEL_FILE))
    quantize_dynamic(
        str(bundle.file(MODEL_FILE)), str(staging / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True
    )
    manifest = {
        **bundle.manifest,
        "version": f"{bundle.version}+int8",
        "quantization": {"from": bundle.ref, "method": "onnxruntime dynamic, int8 weights per channel", "bits": 8},
    }
    write_manifest(staging, manifest)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return load_manifest(target)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        source = find_bundle(args.input_model)
        manifest = quantize_bundle(source, args.output_model)
        report: dict[str, Any] = {
            "input": str(source),
            "output": str(args.output_model),
            "model": f"{manifest['name']}@{manifest['version']}",
            "bytes_before": (source / MODEL_FILE).stat().st_size,
            "bytes_after": (args.output_model / MODEL_FILE).stat().st_size,
        }
        if args.eval_data:
            from tools.modelling.evaluate import evaluate

            before, after = evaluate(str(source), args.eval_data), evaluate(str(args.output_model), args.eval_data)
            for key in ("accuracy", "macro_f1"):
                report[key] = {"before": before[key], "after": after[key]}
            report["macro_f1_change_points"] = round(100 * (after["macro_f1"] - before["macro_f1"]), 2)
    except (BundleError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, ensure_ascii=False))
    return 0
