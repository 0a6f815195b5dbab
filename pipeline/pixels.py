"""DICOM pixel data as display-ready grayscale images: 2-D float32 arrays in [0, 1], 1 = white.

The steps a viewer takes (PS3.3 C.11, PS3.4 N.2), in order, for one frame:

1. decode, native or compressed (pydicom, with pylibjpeg for JPEG, JPEG-LS, JPEG 2000 and RLE);
   the decoder returns YBR_FULL/YBR_FULL_422/YBR_RCT/YBR_ICT data as RGB;
2. colour (RGB, YBR, PALETTE COLOR): palette applied, then luminance (ITU-R BT.601 weights) scaled by
   the largest value the samples can hold. Modality and VOI LUTs are grayscale transforms and do
   not apply;
3. grayscale: the Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence), then the VOI
   transform: the first VOI LUT Sequence item if there is one, else the first Window Center/Width
   pair (a dataset may offer several alternatives; the first is the one the modality proposed
   first). The VOI output range is mapped to [0, 1]. Without either (or with an invalid window):
   data of 8 bits or fewer is already presentation data and its stored range is used; deeper data
   is stretched between its 0.5th and 99.5th percentiles, so a few hot pixels or a padding value
   outside the field of view do not flatten the image;
4. MONOCHROME1 (or a Presentation LUT Shape of INVERSE) is inverted, once: the DX IOD pairs
   MONOCHROME1 with INVERSE, and both say the same thing.

Enhanced multi-frame objects keep rescale and window per frame in functional groups (Pixel Value
Transformation, Frame VOI LUT); those of the shared group, then of the frame itself, take effect.

Multi-frame: the classifier is given one frame, the middle one (:func:`middle_frame`): in a cine
loop or a tomosynthesis/volume series it shows the anatomy, where the first frame is often a
blank lead-in or the edge of the volume; chest radiographs have one frame, so it is that one.
Only the frames asked for are decoded.

Errors are :class:`ImageDecodeError` subclasses whose ``reason`` is a dead-letter reason code;
their messages name the transfer syntax and the failure, never values from the dataset.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    convert_color_space,
    get_decoder,
)
from pydicom.pixels.utils import as_pixel_options, get_nr_frames

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as DICOM's YBR_FULL
PERCENTILES = (0.5, 99.5)
_FRAME_FUNCTIONAL_GROUPS = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
}


class ImageDecodeError(Exception):
    """A dataset gives no image; ``reason`` is the dead-letter reason code."""

    reason = "undecodable_pixels"


class NotDicomError(ImageDecodeError):
    reason = "not_dicom"


class NoPixelDataError(ImageDecodeError):
    reason = "no_pixel_data"


class UndecodablePixelDataError(ImageDecodeError):
    reason = "undecodable_pixels"


@dataclass(frozen=True)
class DisplayImage:
    """One frame, ready to show or classify, and how it was made (for the audit trail)."""

    pixels: np.ndarray  # 2-D float32 in [0, 1], 1 = white
    frame: int  # 0-based index of the frame in the dataset
    frames: int  # frames in the dataset
    voi: str  # "voi_lut" | "window" | "stored_range" | "percentile" | "colour"
    inverted: bool  # MONOCHROME1 / INVERSE turned around


def silence_pydicom() -> None:
    """Keep pydicom's warnings out of the process's output: they may quote element values (PHI).

    Called once by the worker at start; what matters about a dataset reaches the audit trail and
    dead letters through this module's own messages.
    """
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def read_dataset(data: bytes) -> Dataset:
    """A DICOM Part-10 file (as the blob store keeps it) as a dataset; pixel data is decoded later."""
    try:
        ds = dcmread(BytesIO(data))
    except InvalidDicomError:
        raise NotDicomError("not a DICOM Part-10 file (no 'DICM' prefix after the preamble)") from None
    except Exception as exc:  # a truncated or corrupt file fails in many ways inside pydicom
        raise NotDicomError(f"unreadable DICOM file ({type(exc).__name__})") from None
    if not ds.file_meta.get("TransferSyntaxUID"):
        raise NotDicomError("the file meta information has no Transfer Syntax UID")
    return ds


def frame_count(ds: Dataset) -> int:
    """Frames in the pixel data (1 without Number of Frames); raises when there is no pixel data."""
    _require_pixels(ds)
    return max(1, get_nr_frames(ds, warn=False))


def middle_frame(frames: int) -> int:
    """The frame the classifier sees: the middle one (the lower of two for an even count)."""
    return (frames - 1) // 2


def representative_image(ds: Dataset) -> DisplayImage:
    """The middle frame as a display-ready image (the only frame of a single-frame image)."""
    return display_frame(ds, middle_frame(frame_count(ds)))


def display_frames(ds: Dataset) -> list[DisplayImage]:
    """Every frame, in order."""
    return [display_frame(ds, index) for index in range(frame_count(ds))]


def display_frame(ds: Dataset, index: int) -> DisplayImage:
    """Frame ``index`` (0-based) through steps 1 to 4 of the module docstring."""
    frames = frame_count(ds)
    if not 0 <= index < frames:
        raise IndexError(f"frame {index} out of range: the dataset has {frames}")
    stored, photometric = _decode(ds, index)
    try:
        if photometric.startswith("MONOCHROME"):
            view = _frame_view(ds, index)
            pixels, voi = _grayscale(stored, view)
            inverted = photometric == "MONOCHROME1" or _presentation_inverse(ds)
            if inverted:
                pixels = 1.0 - pixels
        else:
            pixels, voi, inverted = _colour_to_gray(stored, ds, photometric), "colour", False
    except ImageDecodeError:
        raise
    except Exception as exc:  # malformed LUTs or attributes: the image cannot be shown as intended
        raise UndecodablePixelDataError(
            f"cannot apply the {photometric} display transforms ({type(exc).__name__}: {str(exc)[:160]})"
        ) from exc
    pixels = np.clip(np.nan_to_num(pixels, nan=0.0), 0.0, 1.0).astype(np.float32, copy=False)
    return DisplayImage(pixels=pixels, frame=index, frames=frames, voi=voi, inverted=inverted)


def _require_pixels(ds: Dataset) -> None:
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise NoPixelDataError("the dataset has no pixel data (no Pixel Data, Float or Double Float Pixel Data)")


def _syntax_name(ds: Dataset) -> str:
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    return f"{syntax.name} ({syntax})" if syntax else "no transfer syntax"


def _decode(ds: Dataset, index: int) -> tuple[np.ndarray, str]:
    """One frame's stored values, and the photometric interpretation they are in after decoding."""
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    try:
        if not syntax:
            raise ValueError("the file meta information has no Transfer Syntax UID")
        decoder = get_decoder(syntax)
        # raw=False: YBR is converted to RGB by the decoder, which says so in the returned metadata.
        array, meta = decoder.as_array(ds, index=index, validate=True, raw=False, **as_pixel_options(ds))
    except Exception as exc:  # unsupported syntax, missing decoder, corrupt or short data
        raise UndecodablePixelDataError(
            f"cannot decode the pixel data of {_syntax_name(ds)}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    photometric = str(meta.get("photometric_interpretation") or ds.get("PhotometricInterpretation", "")).strip()
    expected_ndim = 2 if photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") else 3
    if array.ndim != expected_ndim:
        raise UndecodablePixelDataError(f"decoded frame has shape {array.shape} for {photometric or 'no'} photometric")
    return array, photometric


def _frame_view(ds: Dataset, index: int) -> Dataset:
    """Image pixel attributes (group 0028) of ``ds`` with the functional-group values of frame ``index``."""
    view = Dataset()
    view.file_meta = getattr(ds, "file_meta", Dataset())  # the LUT readers need the byte order
    for element in ds.group_dataset(0x0028):
        view.add(element)
    items = [*ds.get("SharedFunctionalGroupsSequence", [])[:1]]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if index < len(per_frame):
        items.append(per_frame[index])
    for item in items:  # the frame's own values win over the shared ones
        for sequence, keywords in _FRAME_FUNCTIONAL_GROUPS.items():
            if item.get(sequence):
                for keyword in keywords:
                    if keyword in item[sequence][0]:
                        view.add(item[sequence][0][keyword])
    return view


def _grayscale(stored: np.ndarray, view: Dataset) -> tuple[np.ndarray, str]:
    """Modality LUT, then VOI, mapped to [0, 1] (before any MONOCHROME1 inversion)."""
    values = apply_modality_lut(stored, view)
    if view.get("VOILUTSequence") and _lut_complete(view.VOILUTSequence[0]):
        if not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # LUT inputs are integers (PS3.3 C.11.2.1.1)
        lut = view.VOILUTSequence[0]
        entries, first = lut.LUTDescriptor[0] or 2**16, lut.LUTDescriptor[1]
        table = apply_voi(np.arange(first, first + entries, dtype=np.int64), view, 0)
        return _scaled(apply_voi(values, view, 0), float(table.min()), float(table.max())), "voi_lut"
    if view.get("WindowCenter") is not None and view.get("WindowWidth") is not None:
        try:
            windowed = apply_windowing(values, view, 0)
            with np.errstate(over="ignore"):
                low, high = apply_windowing(np.array([-np.inf, np.inf]), view, 0)  # the output range
            return _scaled(windowed, float(low), float(high)), "window"
        except ValueError:
            pass  # a width under 1 or an unknown VOI LUT Function: the window is unusable, fall back
    bits = int(view.get("BitsStored") or 16)
    if bits <= 8 and not view.get("ModalityLUTSequence") and "RescaleSlope" not in view:
        signed = int(view.get("PixelRepresentation") or 0) == 1
        low = -(2 ** (bits - 1)) if signed else 0
        return _scaled(values, float(low), float(low + 2**bits - 1)), "stored_range"
    return _stretched(values), "percentile"


def _lut_complete(item: Dataset) -> bool:
    return item.get("LUTDescriptor") is not None and item.get("LUTData") is not None


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if not high > low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values.astype(np.float64) - low) / (high - low)).astype(np.float32)


def _stretched(values: np.ndarray) -> np.ndarray:
    """Robust contrast: 0.5th to 99.5th percentile, or min to max where those coincide."""
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.float32)
    low, high = (float(v) for v in np.percentile(finite, PERCENTILES))
    if not high > low:
        low, high = float(finite.min()), float(finite.max())
    return _scaled(values, low, high)


def _colour_to_gray(stored: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about segmented/odd LUT descriptors
            rgb = apply_color_lut(stored, ds)
        full_scale = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
    else:
        rgb = stored
        if photometric in ("YBR_FULL", "YBR_FULL_422"):  # only when a decoder left it unconverted
            rgb = convert_color_space(rgb, photometric, "RGB")
        elif photometric != "RGB":
            raise UndecodablePixelDataError(f"unsupported photometric interpretation {photometric!r}")
        full_scale = float(2 ** int(ds.get("BitsStored") or 8) - 1)
    luma = rgb[..., :3].astype(np.float64) @ LUMA_WEIGHTS
    return (luma / full_scale).astype(np.float32)


def _presentation_inverse(ds: Dataset) -> bool:
    return str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
