"""Labelled image sets for fine-tuning and evaluation.

Two forms:

* a MedMNIST-style ``.npz`` with ``<split>_images`` (uint8 [n, h, w], or float in [0, 1]) and
  ``<split>_labels`` (integers [n] or [n, 1]); an optional ``label_names`` array names the integers,
  otherwise the caller's names are used (index k = label k);
* a ``path,label`` CSV whose paths (relative to the CSV's folder) are PNG/JPEG or DICOM files; a
  folder stands for its ``labels.csv``.

DICOM files are decoded by ``pipeline.pixels`` (modality/VOI LUT, MONOCHROME1, the middle frame of a
multi-frame object), the run-time decoding, so a model is trained and measured on what it will see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.bundle import sha256_file
from models.image import load_image_file
from tools.modelling.datasets import DataError, read_records

LABELS_CSV = "labels.csv"
IMAGE_COLUMNS = ("path", "label")


@dataclass
class ImageSet:
    images: list[np.ndarray]  # 2-D float32 in [0, 1]
    labels: list[str]
    source: str  # what was read, e.g. "data.npz[val]" or "labels.csv"
    sha256: dict[str, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)  # label order the data itself implies

    def __len__(self) -> int:
        return len(self.images)


def load_image_set(
    path: str | Path, splits: Sequence[str] = ("train",), label_names: Sequence[str] | None = None
) -> ImageSet:
    """The images of ``path``: the first of ``splits`` present in an npz, or a CSV / folder of files."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        return load_npz(path, splits, label_names)
    csv_path = path / LABELS_CSV if path.is_dir() else path
    if not csv_path.is_file():
        raise DataError(f"{path}: a folder of images needs a {LABELS_CSV} with columns path,label")
    return load_csv(csv_path)


def load_npz(path: Path, splits: Sequence[str], label_names: Sequence[str] | None) -> ImageSet:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz: {exc}") from None
    with archive:
        split = next((name for name in splits if f"{name}_images" in archive.files), None)
        if split is None:
            wanted = " or ".join(f"{name}_images" for name in splits)
            raise DataError(f"{path}: no {wanted} (keys: {', '.join(archive.files)})")
        if f"{split}_labels" not in archive.files:
            raise DataError(f"{path}: has {split}_images but no {split}_labels")
        images, codes = archive[f"{split}_images"], archive[f"{split}_labels"]
        if "label_names" in archive.files:
            label_names = [str(name) for name in archive["label_names"]]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DataError(f"{path}: {split}_images must be [n, height, width] grayscale, got shape {images.shape}")
    codes = codes.reshape(len(codes), -1)
    if codes.shape[1] != 1 or len(codes) != len(images):
        raise DataError(f"{path}: {split}_labels must be one integer per image, got shape {codes.shape}")
    if len(images) == 0:
        raise DataError(f"{path}: {split}_images is empty")
    if images.dtype == np.uint8:
        pixels = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating) and images.min() >= 0 and images.max() <= 1:
        pixels = images.astype(np.float32)
    else:
        raise DataError(f"{path}: {split}_images must be uint8 or float in [0, 1], got {images.dtype}")
    codes = codes[:, 0].astype(np.int64)
    names = list(label_names) if label_names else [str(k) for k in range(int(codes.max()) + 1)]
    if codes.min() < 0 or codes.max() >= len(names):
        raise DataError(f"{path}: {split}_labels holds {codes.min()}..{codes.max()}, but there are {len(names)} names")
    return ImageSet(
        images=list(pixels),
        labels=[names[k] for k in codes],
        source=f"{path.name}[{split}]",
        sha256={path.name: sha256_file(path)},
        classes=names,
    )


def load_csv(csv_path: Path) -> ImageSet:
    images, labels = [], []
    for line, record in read_records(csv_path, IMAGE_COLUMNS):
        label = record["label"].strip()
        if not label:
            raise DataError(f"{csv_path}:{line}: empty label")
        relative = record["path"].strip()
        if not relative:
            raise DataError(f"{csv_path}:{line}: empty path")
        file = csv_path.parent / relative
        if not file.is_file():
            raise DataError(f"{csv_path}:{line}: {relative}: no such file")
        try:
            images.append(read_image(file))
        except ValueError as exc:
            raise DataError(f"{csv_path}:{line}: {relative}: {exc}") from None
        labels.append(label)
    return ImageSet(
        images=images,
        labels=labels,
        source=csv_path.name,
        sha256={csv_path.name: sha256_file(csv_path)},
        classes=sorted(set(labels)),
    )


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as stream:
        return stream.read(132)[128:] == b"DICM"


def read_image(path: Path) -> np.ndarray:
    """A file as a display-ready 2-D float32 image in [0, 1]; ValueError if it cannot be one."""
    return read_dicom(path) if is_dicom(path) else load_image_file(path)


def read_dicom(path: Path) -> np.ndarray:
    """The frame the worker would classify, decoded exactly as the worker decodes it."""
    from pipeline.pixels import ImageDecodeError, read_dataset, representative_image

    try:
        return representative_image(read_dataset(path.read_bytes())).pixels
    except ImageDecodeError as exc:
        raise ValueError(f"unreadable DICOM image ({exc.reason}): {exc}") from None
