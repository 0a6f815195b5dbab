"""From a fine-tuned encoder to its recipe (skeleton + delta) and its int8 bundle, with the checks between.

1. ``delta.npz`` first (a crash later loses no training);
2. the merged torch model exported to ONNX (opset 17, TorchScript exporter, traced on a *padded* batch with
   eager attention, constant folding off so initializers keep their parameter names), then stripped of its
   weights into ``skeleton.onnx``;
3. the fp32 graph rebuilt from skeleton + base + delta exactly as set-up will, and compared with torch on
   padded batches (parity: max probability difference must stay under ``PARITY_TOLERANCE``);
4. the int8 bundle built the same way, evaluated, and some of its predictions recorded for the set-up check.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from models.base_encoders import BaseEncoder
from models.build import DELTA, RECIPE, SKELETON, TRANSPOSED, build_bundle
from models.bundle import load_manifest, sha256_file, write_manifest
from models.text import TextClassifier
from tools.modelling.encoder_model import EncoderClassifier, ProbabilityWrapper, merged_encoder
from tools.modelling.metrics import classification_metrics

PARITY_TOLERANCE = 1e-4
RECORDED_TEXTS = 12
RECORDED_CHARS = 4000
OPSET = 17


def parameter_name(exported: str) -> str:
    """``model.encoder.X`` -> ``X`` (BertModel names), ``model.head.X`` -> ``head.X``."""
    return exported.removeprefix("model.encoder.").removeprefix("model.")


def empty_tensor(name: str, data_type: int, dims: Any) -> onnx.TensorProto:
    """An initializer with a name, type and shape but no data: ``models.build`` fills it."""
    tensor = onnx.TensorProto()
    tensor.name = name
    tensor.data_type = data_type
    tensor.dims.extend(list(dims))
    return tensor


def export_skeleton(model: EncoderClassifier, sample: list[list[int]], target: Path) -> None:
    """``target``: the graph of ``model`` with every parameter's data stripped (see ``models.build``)."""
    from tools.modelling.encoder_batches import padded

    wrapper = ProbabilityWrapper(model).eval()
    input_ids, mask = padded(sample, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.onnx"
        torch.onnx.export(
            wrapper,
            (input_ids, mask),
            str(raw),
            input_names=["input_ids", "attention_mask"],
            output_names=["probabilities"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "probabilities": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=False,
            dynamo=False,
        )
        graph_model = onnx.load(str(raw))
    parameters = {name for name, _ in wrapper.named_parameters()}
    graph = graph_model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    # Transposes of weights would run on every call: make the transposed weight an initializer of its own.
    kept_nodes = []
    added: dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        source = node.input[0] if node.input else ""
        if node.op_type == "Transpose" and source in parameters and source in initializers:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
            if perm != [1, 0]:
                raise ValueError(f"unexpected transpose {perm} of {source}")
            name = TRANSPOSED + parameter_name(source)
            dims = list(reversed(initializers[source].dims))
            added[node.output[0]] = empty_tensor(name, initializers[source].data_type, dims)
            continue
        kept_nodes.append(node)
    for node in kept_nodes:
        for position, name in enumerate(node.input):
            if name in added:
                node.input[position] = added[name].name
    del graph.node[:]
    graph.node.extend(kept_nodes)
    used = {name for node in graph.node for name in node.input}
    stripped = []
    renames = {}
    for tensor in graph.initializer:
        if tensor.name in parameters:
            renames[tensor.name] = parameter_name(tensor.name)
            if tensor.name in used:
                stripped.append(empty_tensor(renames[tensor.name], tensor.data_type, tensor.dims))
        elif tensor.name in used:
            stripped.append(tensor)  # a small constant of the graph: kept as it is
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renames:
                node.input[position] = renames[name]
    del graph.initializer[:]
    graph.initializer.extend(stripped + list({t.name: t for t in added.values()}.values()))
    onnx.save(graph_model, str(target))


def parity(model: EncoderClassifier, bundle_dir: Path, batches: list[list[list[int]]]) -> float:
    """Max |p_onnx - p_torch| over padded batches, fed to the built graph directly."""
    from models.prediction import open_session
    from tools.modelling.encoder_batches import padded

    session = open_session(bundle_dir / "model.onnx")
    worst = 0.0
    for batch in batches:
        input_ids, mask = padded(batch, torch.device("cpu"))
        with torch.no_grad():
            expected = torch.softmax(model(input_ids, mask), dim=-1).numpy()
        got = session.run(["probabilities"], {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})[0]
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def texts_per_second(classifier: TextClassifier, texts: list[str]) -> float:
    classifier.cache_size = 0
    started = time.perf_counter()
    classifier.predict_proba(texts)
    return len(texts) / (time.perf_counter() - started)


def write_outputs(
    *,
    model: EncoderClassifier,
    delta: dict[str, np.ndarray],
    base: BaseEncoder,
    labels: list[str],
    eval_set: Any,
    eval_path: Path,
    output: Path,
    name: str,
    version: str,
    preprocessing: dict[str, Any],
    training: dict[str, Any],
    base_model: str,
) -> dict[str, Any]:
    from tools.modelling.encoder_batches import predict

    recipe_dir = output.parent / f"{output.name}.recipe"
    shutil.rmtree(recipe_dir, ignore_errors=True)
    recipe_dir.mkdir(parents=True)
    np.savez(recipe_dir / DELTA, **delta)
    torch_probabilities = predict(model, eval_set.ids, torch.device("cpu"))
    torch_metrics = classification_metrics(eval_set.labels, torch_probabilities, labels)
    merged = merged_encoder(base, delta, len(labels))
    order = sorted(range(len(eval_set.ids)), key=lambda n: len(eval_set.ids[n]))
    sample = [eval_set.ids[order[0]], eval_set.ids[order[-1]], eval_set.ids[order[len(order) // 2]]]
    export_skeleton(merged, sample, recipe_dir / SKELETON)
    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": "text_classification",
        "input_kind": "text",
        "labels": labels,
        "thresholds": {},
        "default_threshold": 0.5,
        "preprocessing": preprocessing,
        "training": training,
        "quantization": {"method": "onnxruntime dynamic, int8 weights per channel", "bits": 8},
    }
    recipe = {"base_model": base_model, "manifest": manifest, "recorded": []}
    (recipe_dir / RECIPE).write_text(json.dumps(recipe, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    with tempfile.TemporaryDirectory() as scratch:
        fp32_dir = build_bundle(recipe_dir, Path(scratch) / "fp32", base=base, int8=False)
        # Padded batches: short texts beside long ones (the mask must hold), in the worker's batch size.
        rng = np.random.default_rng(0)
        picks = [list(rng.choice(len(eval_set.ids), size=min(8, len(eval_set.ids)), replace=False)) for _ in range(3)]
        worst = parity(merged, fp32_dir, [[eval_set.ids[n] for n in pick] for pick in picks] + [sample])
        if worst > PARITY_TOLERANCE:
            raise RuntimeError(f"ONNX graph differs from torch by {worst:.2e} (> {PARITY_TOLERANCE}) on padded batches")
        fp32_classifier = TextClassifier.load(fp32_dir)
        fp32_probabilities = fp32_classifier.predict_proba(eval_set.texts)
        fp32_size = (fp32_dir / "model.onnx").stat().st_size
    build_bundle(recipe_dir, output, base=base, int8=True)
    classifier = TextClassifier.load(output)
    int8_probabilities = classifier.predict_proba(eval_set.texts)
    fp32_metrics = classification_metrics(eval_set.labels, fp32_probabilities, labels)
    int8_metrics = classification_metrics(eval_set.labels, int8_probabilities, labels)
    manifest["metrics"] = {
        "dev": {
            "macro_f1": round(int8_metrics["macro_f1"], 4),
            "accuracy": round(int8_metrics["accuracy"], 4),
            "rows": len(eval_set.ids),
            "data_sha256": {eval_path.name: sha256_file(eval_path)},
            "torch_fp32": {
                "macro_f1": round(torch_metrics["macro_f1"], 4),
                "accuracy": round(torch_metrics["accuracy"], 4),
            },
            "onnx_fp32": {
                "macro_f1": round(fp32_metrics["macro_f1"], 4),
                "accuracy": round(fp32_metrics["accuracy"], 4),
            },
            "parity_max_abs_difference": float(f"{worst:.3g}"),
        }
    }
    recorded_texts = [text[:RECORDED_CHARS] for text in eval_set.texts[:RECORDED_TEXTS]]
    recorded_probabilities = classifier.predict_proba(recorded_texts)
    recipe["recorded"] = [
        {"text": text, "label": labels[int(np.argmax(row))], "probabilities": [round(float(p), 5) for p in row]}
        for text, row in zip(recorded_texts, recorded_probabilities, strict=True)
    ]
    recipe["manifest"] = manifest
    (recipe_dir / RECIPE).write_text(json.dumps(recipe, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_manifest(output, {key: value for key, value in manifest.items()})
    np.savez(
        output.parent / f"{output.name}.eval-probabilities.npz",
        torch_fp32=torch_probabilities,
        onnx_fp32=fp32_probabilities,
        int8=int8_probabilities,
        labels=np.array(eval_set.labels),
    )
    return {
        "bundle": str(output),
        "recipe": str(recipe_dir),
        "recipe_bytes": sum(f.stat().st_size for f in recipe_dir.iterdir()),
        "fp32_bytes": fp32_size,
        "int8_bytes": (output / "model.onnx").stat().st_size,
        "parity_max_abs_difference": worst,
        "eval": manifest["metrics"]["dev"],
        "best_epoch": training["best_epoch"],
        "minutes": training["minutes"],
        "manifest_files": sorted(load_manifest(output)["files"]),
        "tokenizer_sha256": sha256_file(output / "tokenizer.json")[:12],
    }
