"""Encoder fine-tuning end to end on a tiny random BERT (seconds on a CPU): fine-tune -> export -> parity ->
int8 -> evaluate -> rebuild from the committed-size recipe (reproducible, recorded predictions) -> ensemble."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from models.base_encoders import dequantize_q4
from models.build import DELTA, RECIPE, SKELETON, build_bundle
from models.bundle import BundleError, load_manifest, sha256_file
from models.text import TextClassifier, head_tail
from tests.tiny_encoder import write_tiny_csv, write_tiny_encoder
from tools.modelling import finetune


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-encoder")
    paths = {
        "base": write_tiny_encoder(root / "base"),
        "train": write_tiny_csv(root / "train.csv", 60, seed=1),
        "dev": write_tiny_csv(root / "dev.csv", 24, seed=2),
        "bundle": root / "out" / "tiny-en",
    }
    status = finetune.main([
        "--model-type", "text", "--base-model", str(paths["base"]), "--train-data", str(paths["train"]),
        "--eval-data", str(paths["dev"]), "--num-epochs", "3", "--batch-size", "8", "--lr", "3e-3",
        "--max-length", "24", "--head-tokens", "12", "--lora-rank", "4", "--threads", "1",
        "--output-dir", str(paths["bundle"]),
    ])  # fmt: skip
    assert status == 0
    paths["recipe"] = paths["bundle"].parent / "tiny-en.recipe"
    return paths


def test_q4_blocks_dequantize_low_nibbles_first_then_high() -> None:
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((low | (high << 4)) for low, high in zip(range(16), range(15, -1, -1), strict=True))
    row = dequantize_q4(scale + nibbles, 1, 32)[0]
    assert row[:16].tolist() == [(q - 8) * 0.5 for q in range(16)]
    assert row[16:].tolist() == [(q - 8) * 0.5 for q in range(15, -1, -1)]
    assert struct.calcsize("<e16B") == 18  # one block: fp16 scale + 16 bytes


def test_head_tail_keeps_the_start_and_the_end() -> None:
    ids = list(range(10))
    assert head_tail(ids, 6, 4) == [0, 1, 2, 3, 8, 9]
    assert head_tail(ids, 6, 6) == [0, 1, 2, 3, 4, 5]
    assert head_tail(ids[:5], 6, 3) == ids[:5]


def test_the_bundle_is_int8_and_matches_torch_on_padded_batches(tiny: dict[str, Path]) -> None:
    manifest = load_manifest(tiny["bundle"])
    dev = manifest["metrics"]["dev"]
    assert dev["parity_max_abs_difference"] < 1e-4
    assert manifest["preprocessing"]["truncation"] == "head_tail" and manifest["preprocessing"]["head_tokens"] == 12
    import onnx

    ops = {node.op_type for node in onnx.load(str(tiny["bundle"] / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and ({"MatMulInteger", "DynamicQuantizeMatMul"} & ops)
    assert abs(dev["macro_f1"] - dev["onnx_fp32"]["macro_f1"]) <= 0.1  # int8 costs little even on a random model
    assert manifest["training"]["history"] and 1 <= manifest["training"]["best_epoch"] <= 3


def test_evaluate_reports_the_manifest_figures_and_texts_per_second(tiny: dict[str, Path]) -> None:
    from tools.modelling.evaluate import evaluate

    metrics = evaluate(str(tiny["bundle"]), str(tiny["dev"]))
    assert metrics["macro_f1"] == pytest.approx(load_manifest(tiny["bundle"])["metrics"]["dev"]["macro_f1"], abs=1e-4)
    assert metrics["items_per_second"] > 0


def test_the_recipe_is_small_weight_free_and_rebuilds_the_same_bundle(tiny: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    recipe = tiny["recipe"]
    assert sorted(p.name for p in recipe.iterdir()) == sorted([DELTA, RECIPE, SKELETON])
    skeleton = onnx.load(str(recipe / SKELETON))
    named = [t for t in skeleton.graph.initializer if t.name.startswith(("encoder.", "embeddings.", "T:", "head."))]
    assert named and all(not t.raw_data and not t.float_data for t in named)  # weights come from the base
    rebuilt = build_bundle(recipe, tmp_path / "rebuilt")
    assert sha256_file(rebuilt / "model.onnx") == sha256_file(tiny["bundle"] / "model.onnx")
    assert load_manifest(rebuilt)["files"] == load_manifest(tiny["bundle"])["files"]


def test_the_build_refuses_when_recorded_predictions_differ(tiny: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "recipe"
    shutil.copytree(tiny["recipe"], recipe)
    content = json.loads((recipe / RECIPE).read_text(encoding="utf-8"))
    labels = content["manifest"]["labels"]
    first = content["recorded"][0]
    first["label"] = next(label for label in labels if label != first["label"])
    (recipe / RECIPE).write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(BundleError, match="recorded text 0"):
        build_bundle(recipe, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_long_texts_keep_head_and_tail_at_run_time(tiny: dict[str, Path]) -> None:
    classifier = TextClassifier.load(tiny["bundle"])
    start, end = "dear doctor thank you", "impression lungs clear opacity"
    middle = " ".join(["the patient was"] * 40)
    ids = classifier.tokenizer.encode(f"{start} {middle} {end}").ids
    kept = classifier._run([f"{start} {middle} {end}"])
    cut = classifier._run([classifier.tokenizer.decode(ids[1:12] + ids[-12:-1])])
    assert np.allclose(kept, cut, atol=1e-6)


def test_an_ensemble_averages_its_members(tiny: dict[str, Path], tmp_path: Path) -> None:
    from tools.modelling.ensemble import make_ensemble

    tfidf = tmp_path / "tiny-tfidf"
    args = ["--model-type", "text", "--train-data", str(tiny["train"]), "--eval-data", str(tiny["dev"])]
    assert finetune.main([*args, "--output-dir", str(tfidf)]) == 0
    recipe = tmp_path / "recipe"
    shutil.copytree(tiny["recipe"], recipe)
    report = make_ensemble(recipe, tfidf, 0.25, "tiny-ens", "2.0.0", tiny["dev"], tmp_path / "ens")
    ensemble = TextClassifier.load(tmp_path / "ens")
    texts = ["chest xray impression", "dear doctor sincerely", ""]
    expected = 0.75 * TextClassifier.load(tfidf).predict_proba(texts) + 0.25 * TextClassifier.load(
        tiny["bundle"]
    ).predict_proba(texts)
    assert np.allclose(ensemble.predict_proba(texts), expected, atol=1e-5)
    assert report["macro_f1"] == load_manifest(tmp_path / "ens")["metrics"]["dev"]["macro_f1"]
    rebuilt = build_bundle(recipe, tmp_path / "ens-rebuilt")  # the recipe now holds the TF-IDF member too
    assert TextClassifier.load(rebuilt).predict([texts[0]])[0].label == ensemble.predict([texts[0]])[0].label


def test_the_worker_loads_an_encoder_bundle(tiny: dict[str, Path]) -> None:
    from pipeline.worker import load_classifier

    model = load_classifier(str(tiny["bundle"]))
    [prediction] = model.predict(["chest xray film impression"])
    assert prediction.label in model.labels and 0 < prediction.confidence <= 1
