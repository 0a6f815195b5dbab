"""``medroute finetune --model-type image`` on a tiny subset, export parity, evaluate, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from models.bundle import load_bundle, verify_files
from models.image import ImageClassifier
from tools.modelling import evaluate, finetune

torch = pytest.importorskip("torch")
from tools.modelling.finetune_image import LiteClassifier, Probabilities, export, lite0_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MEDMNIST = ROOT / "data" / "medmnist" / "pneumoniamnist_trainval.npz"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--num-epochs", "1", "--image-size", "32", "--backbone-stages", "2", "--batch-size", "32", "--threads", "2"]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 training and 32 validation images of PneumoniaMNIST, both classes in each."""
    with np.load(MEDMNIST) as data:
        arrays = {key: data[key] for key in data.files}
    rng = np.random.default_rng(0)
    train = rng.choice(len(arrays["train_images"]), 64, replace=False)
    val = rng.choice(len(arrays["val_images"]), 32, replace=False)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(
        path,
        train_images=arrays["train_images"][train],
        train_labels=arrays["train_labels"][train],
        val_images=arrays["val_images"][val],
        val_labels=arrays["val_labels"][val],
    )
    return path


@pytest.fixture(scope="module")
def bundle_dir(tiny_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bundles") / "cxr-tiny"
    argv = [
        "--model-type",
        "image",
        "--train-data",
        str(tiny_npz),
        "--eval-data",
        str(tiny_npz),
        "--label-names",
        "normal,pneumonia",
        "--version",
        "0.0.1",
        "--output-dir",
        str(output),
        *FAST,
    ]
    assert finetune.main(argv) == 0
    return output


def test_finetune_writes_a_loadable_bundle(bundle_dir: Path) -> None:
    verify_files(bundle_dir)
    classifier = ImageClassifier.load(bundle_dir)
    assert classifier.ref == "cxr-tiny@0.0.1"
    assert classifier.labels == ["normal", "pneumonia"]
    manifest = load_bundle(bundle_dir).manifest
    assert manifest["preprocessing"]["size"] == 32 and manifest["preprocessing"]["source_size"] == 28
    assert set(manifest["training"]["data_sha256"]) == {"tiny.npz"}
    assert manifest["training"]["hyperparameters"]["backbone_stages"] == 2
    assert manifest["training"]["rebuild"].startswith("medroute finetune --model-type image")
    metrics = manifest["metrics"]["eval"]
    assert metrics["rows"] == 32
    assert {"accuracy", "macro_f1", "auc", "ece", "per_class"} <= set(metrics)
    assert manifest["metrics"]["onnx_vs_torch_max_abs_diff"] < 1e-4
    assert len(classifier.predict([np.zeros((50, 40), dtype=np.float32)])) == 1


def test_onnx_export_matches_torch_for_any_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LiteClassifier(lite0_weights(None), image_size=32, stages=2, n_labels=3).eval()
    spec = {"channels": 3, "size": 32}
    export(model, spec, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        inputs = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = Probabilities(model)(inputs).numpy()
        actual = session.run(["probabilities"], {"image": inputs.numpy()})[0]
        assert actual.shape == (batch, 3)
        assert np.abs(actual - expected).max() < 1e-5


def test_evaluate_reports_metrics_and_plots(
    bundle_dir: Path, tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report"
    status = evaluate.main(["--model", str(bundle_dir), "--test-data", str(tiny_npz), "--report", str(report)])
    assert status == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["model"] == "cxr-tiny@0.0.1"
    assert metrics["rows"] == 32  # no test split in the npz: its val split
    for key in ("accuracy", "macro_f1", "auc", "ece"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["per_class"]) == {"normal", "pneumonia"}
    assert sum(c["support"] for c in metrics["per_class"].values()) == 32
    for name in ("confusion_matrix.png", "reliability.png"):
        assert (report / name).read_bytes()[:8] == PNG_MAGIC


def test_evaluate_reads_a_folder_of_png_and_dicom_files(
    bundle_dir: Path, tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with np.load(tiny_npz) as data:
        images, labels = data["val_images"][:6], data["val_labels"][:6, 0]
    lines = ["path,label"]
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).resize((100, 100)).save(tmp_path / f"{k}.png")
        lines.append(f"{k}.png,{['normal', 'pneumonia'][label]}")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")  # DICOM files are read as well
    lines.append("ct.dcm,normal")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    assert evaluate.main(["--model", str(bundle_dir), "--test-data", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 7


def bad_npz(tmp_path: Path) -> Path:
    path = tmp_path / "wrong.npz"
    np.savez(path, images=np.zeros((4, 28, 28), dtype=np.uint8))
    return path


def unseen_label_csv(tmp_path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("path,label\na.png,fracture\n")
    return tmp_path / "labels.csv"


def unreadable_image_csv(tmp_path: Path) -> Path:
    (tmp_path / "b.png").write_text("not a picture")
    (tmp_path / "labels.csv").write_text("path,label\nb.png,normal\n")
    return tmp_path / "labels.csv"


def broken_dicom_csv(tmp_path: Path) -> Path:
    (tmp_path / "c.dcm").write_bytes(b"\0" * 128 + b"JUNK")
    (tmp_path / "labels.csv").write_text("path,label\nc.dcm,normal\n")
    return tmp_path / "labels.csv"


def empty_csv(tmp_path: Path) -> Path:
    (tmp_path / "labels.csv").write_text("path,label\n")
    return tmp_path / "labels.csv"


@pytest.mark.parametrize(
    ("make_eval", "expected"),
    [
        (lambda tmp: tmp / "missing.npz", "missing.npz: no such file"),
        (bad_npz, "wrong.npz: no val_images or test_images (keys: images)"),
        (unseen_label_csv, "labels not in the training data: fracture"),
        (unreadable_image_csv, "labels.csv:2: b.png: "),
        (broken_dicom_csv, "labels.csv:2: c.dcm: unreadable DICOM image (not_dicom)"),
        (empty_csv, "labels.csv: no data rows"),
    ],
)
def test_bad_data_is_a_clear_error(
    tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_eval: object, expected: str
) -> None:
    eval_data = make_eval(tmp_path)  # type: ignore[operator]
    argv = [
        "--model-type",
        "image",
        "--train-data",
        str(tiny_npz),
        "--eval-data",
        str(eval_data),
        "--label-names",
        "normal,pneumonia",
        "--output-dir",
        str(tmp_path / "out"),
        *FAST,
    ]
    assert finetune.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("medroute finetune: error: ")
    assert expected in err
    assert not (tmp_path / "out").exists()
