"""Image preprocessing and the ONNX runtime classifier on the shipped cxr-pneumonia bundle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.bundle import BundleError
from models.image import ImageClassifier, center_square, check_image, load_image_file, preprocess
from models.text import Prediction

ROOT = Path(__file__).resolve().parents[2]
MEDMNIST = ROOT / "data" / "medmnist" / "pneumoniamnist_trainval.npz"
SPEC = {
    "crop": "center_square",
    "source_size": 28,
    "size": 64,
    "resample": "bilinear",
    "channels": 3,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


@pytest.fixture(scope="module")
def classifier() -> ImageClassifier:
    return ImageClassifier.load("cxr-pneumonia")


@pytest.fixture(scope="module")
def val_sample() -> tuple[list[np.ndarray], list[str]]:
    """20 normal and 20 pneumonia validation images (never trained on)."""
    with np.load(MEDMNIST) as data:
        images, labels = data["val_images"], data["val_labels"][:, 0]
    rows = [*np.flatnonzero(labels == 0)[:20], *np.flatnonzero(labels == 1)[:20]]
    return [images[k] / np.float32(255) for k in rows], ["normal" if labels[k] == 0 else "pneumonia" for k in rows]


def test_preprocess_normalises_and_replicates_channels() -> None:
    out = preprocess(np.full((28, 28), 0.5, dtype=np.float32), SPEC)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    for channel, (mean, std) in enumerate(zip(SPEC["mean"], SPEC["std"], strict=True)):
        np.testing.assert_allclose(out[channel], (0.5 - mean) / std, rtol=1e-5)


def test_preprocess_crops_the_centre_square_and_takes_any_size() -> None:
    wide = np.zeros((100, 300), dtype=np.float32)
    wide[:, 100:200] = 1.0  # the centre square is white, the sides black
    assert center_square(wide).shape == (100, 100)
    assert center_square(wide).min() == 1.0
    out = preprocess(wide, SPEC)
    np.testing.assert_allclose(out[0], (1.0 - SPEC["mean"][0]) / SPEC["std"][0], rtol=1e-5)
    big = np.random.default_rng(0).random((1024, 900)).astype(np.float32)
    assert preprocess(big, SPEC).shape == (3, 64, 64)


def test_preprocess_of_a_28_pixel_image_skips_the_source_resize() -> None:
    image = np.random.default_rng(1).random((28, 28)).astype(np.float32)
    without_source = {**SPEC, "source_size": None}
    np.testing.assert_array_equal(preprocess(image, SPEC), preprocess(image, without_source))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 3, 3)), np.zeros((0, 4)), np.full((4, 4), 255.0), np.full((4, 4), np.nan), np.full((4, 4), -0.5)],
)
def test_images_that_are_not_display_ready_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        check_image(bad)


def test_load_image_file_reads_grey_colour_and_16_bit(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 51, dtype=np.uint8)).save(tmp_path / "grey.png")
    Image.new("RGB", (4, 4), (255, 255, 255)).save(tmp_path / "white.jpg")
    Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    grey = load_image_file(tmp_path / "grey.png")
    assert grey.shape == (5, 7) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 0.2)
    assert load_image_file(tmp_path / "white.jpg").min() > 0.95
    np.testing.assert_allclose(load_image_file(tmp_path / "deep.png"), 1.0)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image_file(tmp_path / "notes.png")


def test_bundle_loads_with_its_manifest(classifier: ImageClassifier) -> None:
    assert classifier.labels == ["normal", "pneumonia"]
    assert classifier.ref.startswith("cxr-pneumonia@")
    metrics = classifier.bundle.manifest["metrics"]["eval"]
    assert metrics["accuracy"] >= 0.95 and metrics["auc"] >= 0.98
    size = sum(path.stat().st_size for path in classifier.bundle.path.iterdir())
    assert size < 10_000_000


def test_a_text_bundle_is_refused() -> None:
    with pytest.raises(BundleError, match="not image_classification"):
        ImageClassifier.load("doctype-en")


def test_validation_images_get_the_right_labels(
    classifier: ImageClassifier, val_sample: tuple[list[np.ndarray], list[str]]
) -> None:
    images, truth = val_sample
    predictions = classifier.predict(images)
    assert all(isinstance(p, Prediction) for p in predictions)
    for prediction in predictions:
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.confidence == max(prediction.scores.values())
    correct = sum(p.label == t for p, t in zip(predictions, truth, strict=True))
    assert correct >= 34  # of 40; the bundle's validation accuracy is >= 0.95


def test_predict_takes_any_size_and_batches_consistently(
    classifier: ImageClassifier, val_sample: tuple[list[np.ndarray], list[str]]
) -> None:
    images, _ = val_sample
    one_by_one = np.concatenate([classifier.predict_proba([image]) for image in images[:5]])
    np.testing.assert_allclose(one_by_one, classifier.predict_proba(images[:5]), atol=1e-5)
    large = np.asarray(Image.fromarray(images[0]).resize((512, 512), Image.Resampling.BICUBIC)).clip(0, 1)
    assert classifier.predict([large])[0].label in classifier.labels
    assert classifier.predict([]) == []
    with pytest.raises(TypeError):
        classifier.predict(images[0])


def test_run_time_module_does_not_import_torch() -> None:
    code = "import sys, models.image; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
