"""What ``medroute batch`` reads from one file: text, an image, or a reason why there is nothing to classify.

Kinds, told by content first (so a misnamed file is still read right), then by extension:

* ``dicom``: a Part-10 file (``DICM`` after the 128-byte preamble) or ``.dcm``/``.dicom``; decoded by
  :mod:`pipeline.pixels` (the middle frame, display-ready). Only what the image model takes (a frontal
  chest radiograph, by the worker's own :func:`pipeline.dicom_feed.wants_image_model`) is marked for it;
* ``image``: PNG/JPEG (and other formats Pillow reads), as grayscale;
* ``pdf``: the text layer (pypdf); a PDF without one (a scan) has nothing to classify;
* ``hl7``: one HL7 v2 message, checked and decoded as the MLLP listener does (MSH-18), its clinical
  text read as the worker does (:func:`pipeline.extract.extract_text`);
* ``text``: anything else, as UTF-8 (BOM or not), UTF-16 with a BOM, or GB 18030; refused when it
  is binary.

Reasons never quote the file's content.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from formats import documents

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
HL7_SUFFIXES = frozenset({".hl7", ".er7"})
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
_MLLP_FRAMING = b"\x0b\x1c\r\n"
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NON_CJK_WORD = re.compile(r"[^\W\d_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


class InputError(Exception):
    """The file cannot be read as its kind; the message is the reason (no content quoted)."""


@dataclass(frozen=True)
class TextInput:
    text: str
    language: str  # "zh" or "en" (anything that is not mostly Chinese)
    note: str = ""  # e.g. "ORU^R01^ORU_R01: OBX-5" for HL7, "3 pages" for PDF


@dataclass(frozen=True)
class ImageInput:
    pixels: np.ndarray  # 2-D float32 in [0, 1], 1 = white
    chest_radiograph: bool | None  # DICOM: whether it is one; None: unknown (PNG/JPEG carry no metadata)
    note: str = ""  # e.g. "CR CHEST PA, frame 1 of 1"


@dataclass(frozen=True)
class NothingToClassify:
    """A readable file without anything a model takes (an ADT message, a scanned PDF...)."""

    reason: str


Input = TextInput | ImageInput | NothingToClassify


def kind_of(path: Path, head: bytes) -> str:
    """``dicom``, ``image``, ``pdf``, ``hl7`` or ``text``."""
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head.lstrip(b"\xef\xbb\xbf" + _MLLP_FRAMING + b" \t").startswith(b"MSH"):
        return "hl7"
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix == ".pdf":
        return "pdf"
    if suffix in HL7_SUFFIXES:
        return "hl7"
    return "text"


def language_of(text: str) -> str:
    """``zh`` when CJK ideographs are at least as many as other words (one ideograph is about
    one word: a Chinese report naming "CT" or "MRI" stays Chinese), else ``en``."""
    ideographs = len(_CJK.findall(text))
    return "zh" if ideographs and ideographs >= len(_NON_CJK_WORD.findall(text)) else "en"


def read_input(path: Path, kind: str) -> Input:
    """The classifiable content of ``path``; raises :class:`InputError` when it is unreadable."""
    return input_of(path.name, path.read_bytes(), kind)


def input_of(name: str, data: bytes, kind: str) -> Input:
    """The classifiable content of a file's bytes (``name`` only labels it); raises :class:`InputError`."""
    if not data:
        raise InputError("empty file")
    reader = {"dicom": _dicom, "image": _image, "pdf": _pdf, "hl7": _hl7, "text": _text}[kind]
    return reader(name, data)


def _with_text(text: str, note: str = "", empty: str = "no text") -> TextInput | NothingToClassify:
    text = text.strip()
    if not text:
        return NothingToClassify(empty)
    return TextInput(text, language_of(text), note)


def decode_text(data: bytes) -> str:
    """Bytes of a text file as text; raises :class:`InputError` for binary data."""
    try:
        return documents.decode_text(data)
    except documents.DocumentError as exc:
        raise InputError(str(exc)) from None


def _text(name: str, data: bytes) -> Input:
    return _with_text(decode_text(data), empty="only blank space")


def _pdf(name: str, data: bytes) -> Input:
    try:
        pages = documents.pdf_pages(data)
    except documents.DocumentError as exc:
        raise InputError(str(exc)) from None
    note = f"{len(pages)} page{'s' if len(pages) != 1 else ''}"
    return _with_text("\n".join(pages), note, empty=f"PDF without a text layer ({note}; a scan needs OCR first)")


def _hl7(name: str, data: bytes) -> Input:
    from formats.hl7.errors import MessageError
    from formats.hl7.record import record_of_bytes
    from pipeline.extract import extract_text

    try:
        record = record_of_bytes(data.strip(_MLLP_FRAMING + b" \t"), message_id=name)
    except MessageError as exc:
        raise InputError(f"not a valid HL7 v2 message: {exc.detail}") from None
    extracted = extract_text(record)
    message_type = record.message_type
    note = f"{message_type}: {', '.join(extracted.sources)}" if extracted.sources else message_type
    return _with_text(extracted.text, note, empty=f"{message_type} without clinical text (OBX TX/FT/ST, NTE, ED)")


def _image(name: str, data: bytes) -> Input:
    from models.image import load_image_file

    try:
        pixels = load_image_file(io.BytesIO(data))
    except ValueError:
        raise InputError("not a readable image (Pillow cannot decode it)") from None
    rows, columns = pixels.shape
    return ImageInput(pixels, None, f"{columns}x{rows}")


def _dicom(name: str, data: bytes) -> Input:
    from pipeline.pixels import ImageDecodeError, NoPixelDataError, read_dataset, representative_image

    try:
        dataset = read_dataset(data)
        chest = wants_image_model_of(dataset)
        description = _dicom_description(dataset)
        try:
            image = representative_image(dataset)
        except NoPixelDataError:
            # pydicom stops quietly where a file ends: an image whose pixel data is missing was cut short.
            if len(dataset) == 0 or "Rows" in dataset or "Image Storage" in _sop_class_name(dataset):
                raise InputError("DICOM image without its pixel data (a truncated file?)") from None
            return NothingToClassify("DICOM object without pixel data (a report, a structured document...)")
    except InputError:
        raise
    except ImageDecodeError as exc:
        raise InputError(f"DICOM: {exc}") from None
    except Exception as exc:  # pydicom reads lazily: a damaged file may fail only here
        raise InputError(f"DICOM: unreadable ({type(exc).__name__})") from None
    note = f"{description}, frame {image.frame + 1} of {image.frames}"
    return ImageInput(image.pixels, chest, note)


def _sop_class_name(dataset: Dataset) -> str:
    uid = dataset.get("SOPClassUID")
    return str(getattr(uid, "name", "")) if uid else ""


def _dicom_description(dataset: Dataset) -> str:
    """Modality, body part and view: no identifiers."""
    values = [
        str(getattr(dataset, keyword, "") or "").strip() for keyword in ("Modality", "BodyPartExamined", "ViewPosition")
    ]
    return " ".join(value for value in values if value) or "DICOM"


def wants_image_model_of(dataset: Dataset) -> bool:
    """The worker's choice (:func:`pipeline.dicom_feed.wants_image_model`) for a dataset read from a file."""
    from pipeline.dicom_feed import dicom_record_of, wants_image_model

    return wants_image_model(dicom_record_of(dataset))
