"""DICOM pixel data to display-ready images, checked on real files from pydicom's test data.

What a radiologist would check: the window is the one the modality proposed (values at its edges
are black and white), Hounsfield units come from the rescale, MONOCHROME1 is shown with the lungs
dark, compressed and uncompressed copies of one image look identical, and a multi-frame object has
its frames.
"""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless

from pipeline.pixels import (
    NoPixelDataError,
    NotDicomError,
    UndecodablePixelDataError,
    display_frame,
    display_frames,
    frame_count,
    middle_frame,
    read_dataset,
    representative_image,
)


def dataset(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in pydicom's test data here")
    return pydicom.dcmread(path)


def shown(ds: Dataset) -> np.ndarray:
    image = representative_image(ds)
    assert image.pixels.dtype == np.float32 and image.pixels.ndim == 2
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    return image.pixels


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), output scaled to [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_ct_rescale_gives_hounsfield_units_and_a_window_cuts_them() -> None:
    ds = dataset("CT_small.dcm")  # signed 16-bit, Rescale Intercept -1024, no window
    assert ds.PixelRepresentation == 1 and ds.RescaleIntercept == -1024
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    image = representative_image(ds)
    assert image.voi == "percentile" and not image.inverted
    # Without a window, brighter means denser: the display is a monotonic function of HU.
    order = np.argsort(hu, axis=None)
    assert np.all(np.diff(image.pixels.ravel()[order]) >= 0)
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0

    windowed = copy.deepcopy(ds)
    windowed.WindowCenter, windowed.WindowWidth = 40, 400  # soft tissue
    image = representative_image(windowed)
    assert image.voi == "window"
    np.testing.assert_allclose(image.pixels, linear_window(hu, 40, 400), atol=1e-6)
    assert np.all(image.pixels[hu <= -160] == 0.0) and np.all(image.pixels[hu > 240] == 1.0)


def test_mr_window_center_and_width_are_applied() -> None:
    ds = dataset("MR_small.dcm")  # Window Center 600, Width 1600, no rescale
    image = representative_image(ds)
    assert image.voi == "window"
    np.testing.assert_allclose(image.pixels, linear_window(ds.pixel_array.astype(np.float64), 600, 1600), atol=1e-6)


def test_of_several_windows_the_first_is_used() -> None:
    ds = dataset("MR-SIEMENS-DICOM-WithOverlays.dcm")  # Window Center [450, 200], Width [790, 443]
    assert list(ds.WindowCenter) == [450, 200]
    pixels = shown(ds)
    np.testing.assert_allclose(pixels, linear_window(ds.pixel_array.astype(np.float64), 450, 790), atol=1e-6)


def test_an_unusable_window_falls_back_to_the_percentile_stretch() -> None:
    ds = dataset("MR_small.dcm")
    ds.WindowWidth = 0  # a LINEAR window must be at least 1 wide
    image = representative_image(ds)
    assert image.voi == "percentile"
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0


def test_monochrome1_chest_radiograph_is_inverted_lungs_dark() -> None:
    ds = dataset("RG1_UNCR.dcm")  # CR chest PA, MONOCHROME1, window 15000/30000
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = representative_image(ds)
    assert image.inverted and image.voi == "window"
    lung, mediastinum = image.pixels[900:1000, 400:500].mean(), image.pixels[900:1000, 880:980].mean()
    assert lung + 0.15 < mediastinum  # air darker than soft tissue and bone, as on a light box

    as_monochrome2 = copy.deepcopy(ds)
    as_monochrome2.PhotometricInterpretation = "MONOCHROME2"
    np.testing.assert_allclose(image.pixels + shown(as_monochrome2), 1.0, atol=1e-6)

    # The DX pairing MONOCHROME1 + Presentation LUT Shape INVERSE means one inversion, not two.
    ds.PresentationLUTShape = "INVERSE"
    np.testing.assert_array_equal(shown(ds), image.pixels)


@pytest.mark.parametrize(
    ("reference", "compressed"),
    [
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),  # JPEG-LS lossless
        ("MR_small.dcm", "MR_small_RLE.dcm"),  # RLE
        ("MR_small.dcm", "MR_small_jp2klossless.dcm"),  # JPEG 2000 lossless
        ("MR_small.dcm", "MR_small_bigendian.dcm"),  # explicit VR big endian
        ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),  # the chest radiograph as JPEG 2000 lossless
        ("emri_small.dcm", "emri_small_RLE.dcm"),  # multi-frame RLE
    ],
)
def test_lossless_compressed_copies_look_identical(reference: str, compressed: str) -> None:
    original, encoded = dataset(reference), dataset(compressed)
    assert encoded.file_meta.TransferSyntaxUID != original.file_meta.TransferSyntaxUID
    np.testing.assert_array_equal(shown(encoded), shown(original))


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPEG-LL.dcm", "693_J2KR.dcm", "MR2_J2KR.dcm"])
def test_other_compressed_grayscale_images_decode_with_contrast(name: str) -> None:
    pixels = shown(dataset(name))
    assert pixels.std() > 0.05  # an image, not a flat field


def test_multi_frame_has_its_frames_and_the_middle_one_is_classified() -> None:
    ds = dataset("emri_small.dcm")  # 10 frames, MR, 12 of 16 bits
    assert frame_count(ds) == 10
    frames = display_frames(ds)
    assert [f.frame for f in frames] == list(range(10)) and all(f.frames == 10 for f in frames)
    assert len({f.pixels.tobytes() for f in frames}) == 10  # ten different slices
    chosen = representative_image(ds)
    assert chosen.frame == middle_frame(10) == 4
    np.testing.assert_array_equal(chosen.pixels, frames[4].pixels)
    assert (middle_frame(1), middle_frame(2), middle_frame(3)) == (0, 0, 1)
    with pytest.raises(IndexError):
        display_frame(ds, 10)


def test_multi_frame_colour_jpeg_decodes_only_the_chosen_frame() -> None:
    ds = dataset("color3d_jpeg_baseline.dcm")  # 120 frames, YBR_FULL_422, JPEG baseline
    image = representative_image(ds)
    assert (image.frames, image.frame, image.voi) == (120, 59, "colour")
    assert image.pixels.shape == (ds.Rows, ds.Columns)


def test_enhanced_multi_frame_window_and_rescale_come_from_functional_groups() -> None:
    plain = dataset("CT_small.dcm")
    plain.WindowCenter, plain.WindowWidth = 40, 400
    enhanced = dataset("CT_small.dcm")
    del enhanced.RescaleSlope, enhanced.RescaleIntercept
    transform, window, shared, frame = Dataset(), Dataset(), Dataset(), Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
    window.WindowCenter, window.WindowWidth = 1000, 100  # overridden by the frame's own group
    shared.PixelValueTransformationSequence = [transform]
    shared.FrameVOILUTSequence = [window]
    frame_window = Dataset()
    frame_window.WindowCenter, frame_window.WindowWidth = 40, 400
    frame.FrameVOILUTSequence = [frame_window]
    enhanced.SharedFunctionalGroupsSequence = [shared]
    enhanced.PerFrameFunctionalGroupsSequence = [frame]
    np.testing.assert_array_equal(shown(enhanced), shown(plain))


def test_rgb_becomes_luminance() -> None:
    ds = dataset("SC_rgb.dcm")  # 8-bit RGB bands of pure and mixed colours
    rgb = ds.pixel_array.reshape(-1, 3)
    pixels = shown(ds).reshape(-1)
    for colour, luma in [((255, 0, 0), 0.299), ((0, 255, 0), 0.587), ((0, 0, 255), 0.114), ((255, 255, 255), 1.0)]:
        where = np.all(rgb == colour, axis=1)
        assert where.any()
        np.testing.assert_allclose(pixels[where], luma, atol=1e-6)
    # The same picture stored as YBR_FULL gives the same gray within rounding of the colour transform.
    np.testing.assert_allclose(shown(dataset("SC_ybr_full_uncompressed.dcm")), shown(ds), atol=2 / 255)


@pytest.mark.parametrize("name", ["SC_rgb_jpeg.dcm", "US1_J2KR.dcm", "OBXXXX1A.dcm", "SC_rgb_2frame.dcm"])
def test_colour_images_of_every_kind_become_gray(name: str) -> None:
    ds = dataset(name)  # JPEG RGB, JPEG 2000 YBR_RCT, PALETTE COLOR, 2-frame RGB
    image = representative_image(ds)
    assert image.voi == "colour" and image.pixels.shape == (ds.Rows, ds.Columns)
    assert image.pixels.max() > image.pixels.min()


def test_eight_bit_voi_lut_sequence_and_stored_range() -> None:
    ds = dataset("vlut_04.dcm")  # 8-bit, VOI LUT Sequence of 256 entries
    image = representative_image(ds)
    assert image.voi == "voi_lut"
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    expected = (lut[ds.pixel_array] - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)

    del ds.VOILUTSequence  # 8-bit gray without VOI: already presentation values, shown as stored
    image = representative_image(ds)
    assert image.voi == "stored_range"
    np.testing.assert_allclose(image.pixels, ds.pixel_array / 255.0, atol=1e-6)


def test_modality_lut_sequence_is_applied() -> None:
    ds = dataset("mlut_18.dcm")  # signed 12-bit with a Modality LUT Sequence
    item = ds.ModalityLUTSequence[0]
    entries, first = item.LUTDescriptor[0], item.LUTDescriptor[1]
    lut = np.asarray(item.LUTData, dtype=np.int64)
    mapped = lut[np.clip(ds.pixel_array.astype(np.int64) - first, 0, entries - 1)]
    pixels = shown(ds)
    order = np.argsort(mapped, axis=None)  # the display follows the LUT output, not the stored value
    assert np.all(np.diff(pixels.ravel()[order]) >= 0)


def test_no_pixel_data_is_a_clear_error() -> None:
    ds = dataset("CT_small.dcm")
    del ds.PixelData
    with pytest.raises(NoPixelDataError) as caught:
        representative_image(ds)
    assert caught.value.reason == "no_pixel_data"


def test_undecodable_pixel_data_is_a_clear_error() -> None:
    with pytest.raises(UndecodablePixelDataError) as caught:
        representative_image(dataset("JPEG-lossy.dcm"))  # a known-broken 12-bit JPEG Extended file
    assert caught.value.reason == "undecodable_pixels"
    assert "JPEG Extended" in str(caught.value)

    truncated = dataset("CT_small.dcm")
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 2]
    with pytest.raises(UndecodablePixelDataError):
        representative_image(truncated)

    mislabelled = dataset("CT_small.dcm")  # native bytes claimed to be JPEG-LS
    mislabelled.file_meta.TransferSyntaxUID = JPEGLSLossless
    with pytest.raises(UndecodablePixelDataError):
        representative_image(mislabelled)


def test_read_dataset_refuses_what_is_not_dicom() -> None:
    with open(get_testdata_file("CT_small.dcm"), "rb") as stream:
        data = stream.read()
    assert read_dataset(data).Modality == "CT"
    for garbage in (b"", b"not dicom at all" * 20, b"\0" * 128 + b"DICM" + b"\xff" * 7):
        with pytest.raises(NotDicomError) as caught:
            read_dataset(garbage)
        assert caught.value.reason == "not_dicom"
