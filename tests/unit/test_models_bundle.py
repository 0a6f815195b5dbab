"""Bundle manifests: the shipped bundle loads and verifies; tampering is caught and named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.bundle import MANIFEST, BundleError, load_bundle, load_manifest, verify_files, write_manifest
from models.registry import INSTALLED_DIR

SHIPPED = INSTALLED_DIR / "doctype-en"


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SHIPPED, tmp_path / "doctype-en"))


def error_of(action, *args) -> str:
    with pytest.raises(BundleError) as caught:
        action(*args)
    return str(caught.value)


def test_shipped_manifest_describes_the_model() -> None:
    manifest = load_manifest(SHIPPED)
    assert manifest["name"] == "doctype-en"
    assert manifest["task"] == "text_classification"
    assert manifest["input_kind"] == "text"
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert manifest["preprocessing"]["max_length"] > 0
    assert len(manifest["training"]["data_sha256"]["doctype_train.csv"]) == 64
    assert manifest["metrics"]["dev"]["macro_f1"] > manifest["metrics"]["baselines_dev"]["tfidf_logreg"]["macro_f1"]
    verify_files(SHIPPED)


def test_bundle_ref_labels_and_thresholds() -> None:
    bundle = load_bundle(SHIPPED)
    assert bundle.ref == f"doctype-en@{bundle.version}"
    assert "radiology_report" in bundle.labels
    assert bundle.threshold("radiology_report") == bundle.manifest["default_threshold"]
    assert bundle.file("model.onnx").is_file()
    assert "not listed" in error_of(bundle.file, "weights.bin")


def test_tampered_file_is_named(bundle_copy: Path) -> None:
    with (bundle_copy / "tokenizer.json").open("a", encoding="utf-8") as stream:
        stream.write(" ")
    message = error_of(verify_files, bundle_copy)
    assert "tokenizer.json" in message and "does not match" in message
    assert "doctype-en@" in message
    load_bundle(bundle_copy, verify=False)  # the manifest itself is fine


def test_missing_file_is_named(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").unlink()
    assert "model.onnx is missing" in error_of(load_bundle, bundle_copy)


def test_manifest_errors(tmp_path: Path, bundle_copy: Path) -> None:
    assert "no manifest" in error_of(load_manifest, tmp_path)
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    broken = {key: value for key, value in manifest.items() if key != "labels"}
    (bundle_copy / MANIFEST).write_text(json.dumps(broken))
    assert "lacks labels" in error_of(load_manifest, bundle_copy)
    (bundle_copy / MANIFEST).write_text(json.dumps({**manifest, "thresholds": {"x-ray": 0.9}}))
    assert "unknown labels: x-ray" in error_of(load_manifest, bundle_copy)
    (bundle_copy / MANIFEST).write_text(json.dumps({**manifest, "files": {"../../etc/passwd": "0"}}))
    assert "inside the bundle" in error_of(load_manifest, bundle_copy)
    (bundle_copy / MANIFEST).write_text("{not json")
    assert "unreadable manifest" in error_of(load_manifest, bundle_copy)


def test_write_manifest_hashes_every_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    manifest = {
        "name": "m",
        "version": "1",
        "task": "text_classification",
        "input_kind": "text",
        "labels": ["a", "b"],
        "default_threshold": 0.5,
        "preprocessing": {},
        "files": {},
    }
    write_manifest(tmp_path, manifest)
    assert list(load_manifest(tmp_path)["files"]) == ["sub/weights.bin"]
    verify_files(tmp_path)
