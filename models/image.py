"""Image classification with a bundle's ONNX graph (onnxruntime, numpy and Pillow; no torch).

Input is a display-ready grayscale image: a 2-D float32 array in [0, 1] where 1 is white (the DICOM
pixel decoding, modality/VOI LUT and MONOCHROME1 inversion happen before this, in ``pipeline.pixels``).
``preprocess`` turns it into the network's input exactly as the manifest's ``preprocessing`` says;
training (``tools.modelling.finetune_image``) calls the same function, so train and serve cannot drift apart.

The graph takes ``image`` (float32, [batch, channels, size, size]) and returns ``probabilities``
([batch, n_labels], the bundle's label order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

from models.bundle import Bundle, BundleError, BundleModel, load_bundle
from models.prediction import Prediction, open_session, predictions_from
from models.registry import find_bundle

MODEL_FILE = "model.onnx"
INPUT = "image"
OUTPUT = "probabilities"
BATCH_SIZE = 32
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX}
RANGE_SLACK = 1e-3  # rounding in upstream LUT arithmetic may overshoot [0, 1] by a hair


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square (how MedMNIST cut its source images before resizing)."""
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def resize(image: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` with Pillow on float32 (mode ``F``); antialiased when shrinking."""
    if image.shape == (size, size):
        return image
    try:
        resample = RESAMPLE[method]
    except KeyError:
        raise ValueError(f"unknown resize method {method!r} (known: {', '.join(RESAMPLE)})") from None
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize((size, size), resample)
    return np.asarray(resized, dtype=np.float32)


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as float32, refused unless it is 2-D, finite and within [0, 1]."""
    array = np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"an image must be a non-empty 2-D grayscale array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"an image must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("an image must not contain NaN or infinity")
    low, high = float(array.min()), float(array.max())
    if low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
        raise ValueError(f"image values must lie in [0, 1] (display-ready), got [{low:.3g}, {high:.3g}]")
    return np.clip(array, 0.0, 1.0)


def preprocess(image: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """One image to the network input [channels, size, size], float32, as ``spec`` (the manifest's) says.

    Steps: centred square crop; resize to ``source_size`` (the resolution the training images were
    made at, so a full-size radiograph looks like a training image), then to ``size``; clip to
    [0, 1]; replicate to ``channels``; subtract ``mean`` and divide by ``std`` per channel.
    """
    array = check_image(image)
    if spec.get("crop", "center_square") == "center_square":
        array = center_square(array)
    method = str(spec.get("resample", "bilinear"))
    if spec.get("source_size"):
        array = resize(array, int(spec["source_size"]), method)
    array = np.clip(resize(array, int(spec["size"]), method), 0.0, 1.0)
    channels = int(spec.get("channels", 1))
    mean = np.asarray(spec.get("mean", [0.0] * channels), dtype=np.float32).reshape(channels, 1, 1)
    std = np.asarray(spec.get("std", [1.0] * channels), dtype=np.float32).reshape(channels, 1, 1)
    return ((np.broadcast_to(array, (channels, *array.shape)) - mean) / std).astype(np.float32)


def preprocess_batch(images: Sequence[np.ndarray], spec: Mapping[str, Any]) -> np.ndarray:
    """Network inputs [len(images), channels, size, size]."""
    size, channels = int(spec["size"]), int(spec.get("channels", 1))
    batch = np.empty((len(images), channels, size, size), dtype=np.float32)
    for row, image in enumerate(images):
        batch[row] = preprocess(image, spec)
    return batch


def load_image_file(path: str | Path | BinaryIO) -> np.ndarray:
    """A PNG/JPEG (or other Pillow-readable) file as a grayscale float32 array in [0, 1].

    Colour is converted to luminance, EXIF rotation applied, 16-bit images scaled by 65535.
    """
    try:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened)
            if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.clip(np.asarray(picture, dtype=np.float32) / 65535.0, 0.0, 1.0)
            return np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image: {exc}") from None


class ImageClassifier(BundleModel):
    """One loaded image bundle. ``predict`` may be called from several threads."""

    def __init__(self, bundle: Bundle, session: ort.InferenceSession) -> None:
        self.bundle = bundle
        self.session = session
        self.preprocessing: Mapping[str, Any] = bundle.manifest["preprocessing"]
        self.thresholds = np.array([bundle.threshold(label) for label in bundle.labels])

    @classmethod
    def load(cls, name_or_path: str | Path) -> ImageClassifier:
        bundle = load_bundle(find_bundle(str(name_or_path)))
        if bundle.manifest["task"] != "image_classification" or bundle.manifest["input_kind"] != "image":
            raise BundleError(f"{bundle.ref} is a {bundle.manifest['task']} model, not image_classification")
        spec = bundle.manifest["preprocessing"]
        if not isinstance(spec, Mapping) or "size" not in spec:
            raise BundleError(f"{bundle.ref}: preprocessing must give the input size")
        session = open_session(bundle.file(MODEL_FILE))
        shape = session.get_inputs()[0].shape
        expected = [int(spec.get("channels", 1)), int(spec["size"]), int(spec["size"])]
        if list(shape[1:]) != expected:
            raise BundleError(f"{bundle.ref}: {MODEL_FILE} takes {shape}, preprocessing makes [batch, {expected}]")
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(bundle.labels):
            raise BundleError(f"{bundle.ref}: {MODEL_FILE} has {width} outputs for {len(bundle.labels)} labels")
        return cls(bundle, session)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One prediction per image, in order."""
        return predictions_from(self.predict_proba(images), self.labels, self.thresholds)

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities [len(images), len(labels)] in label order."""
        if isinstance(images, np.ndarray) and images.ndim == 2:
            raise TypeError("predict takes a sequence of images, not one image")
        out = np.zeros((len(images), len(self.labels)), dtype=np.float32)
        for start in range(0, len(images), BATCH_SIZE):
            batch = preprocess_batch(images[start : start + BATCH_SIZE], self.preprocessing)
            out[start : start + len(batch)] = self.session.run([OUTPUT], {INPUT: batch})[0]
        return out
