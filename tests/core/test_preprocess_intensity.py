"""CT windows, percentile rescaling, z-score and Nyúl histogram standardisation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import (
    WINDOW_PRESETS,
    histogram_standardise,
    learn_histogram_landmarks,
    percentile_rescale,
    window,
    zscore,
)

HU_RAMP = np.linspace(-2000, 2000, 4001, dtype=np.float32).reshape(1, 4001)


def ct(array, modality="CT", **kwargs) -> MedicalImage:
    array = np.asarray(array)
    ndim = array.ndim - (1 if kwargs.get("rgb") else 0)
    return MedicalImage(array, Geometry.identity(ndim), modality=modality, name="scan", **kwargs)


def test_window_presets_are_the_published_ones():
    assert WINDOW_PRESETS == {
        "lung": (-600, 1500), "mediastinum": (40, 400), "bone": (400, 1800),
        "brain": (40, 80), "abdomen": (40, 350), "liver": (60, 160),
    }


@pytest.mark.parametrize("preset", list(WINDOW_PRESETS))
def test_window_clips_or_rescales(preset):
    level, width = WINDOW_PRESETS[preset]
    image = ct(HU_RAMP.astype(np.int16))
    clipped = window(image, preset, output="clipped")
    assert clipped.array.dtype == np.float32
    assert clipped.array.min() == level - width / 2 and clipped.array.max() == level + width / 2
    unit = window(image, preset, output="unit")
    np.testing.assert_allclose(unit.array, (clipped.array - (level - width / 2)) / width, atol=1e-6)
    assert unit.array.min() == 0 and unit.array.max() == 1
    # napari shows the new range: the display window travels in the metadata
    assert (unit.metadata["window_center"], unit.metadata["window_width"]) == (0.5, 1.0)
    assert (clipped.metadata["window_center"], clipped.metadata["window_width"]) == (level, width)


def test_custom_window_on_any_single_channel_image():
    mr = ct(np.arange(100, dtype=np.uint16).reshape(10, 10), modality="MR")
    out = window(mr, "custom", level=50, width=20)
    assert out.array.min() == 0 and out.array.max() == 1 and out.array[5, 0] == 0.5
    with pytest.raises(MedcadError, match="the lung window needs a CT in Hounsfield units; 'scan' is MR"):
        window(mr, "lung")


def test_ct_window_on_a_colour_photo_is_refused():
    photo = ct(np.zeros((8, 8, 3), np.uint8), modality="OT", rgb=True)
    with pytest.raises(MedcadError, match="'scan' is a colour picture"):
        window(photo, "lung")
    with pytest.raises(MedcadError, match="single-channel"):
        window(photo, "custom", level=100, width=50)


def test_percentile_rescale():
    image = ct(HU_RAMP)
    out = percentile_rescale(image, 10, 90)
    low, high = np.percentile(HU_RAMP, (10, 90))
    assert out.array.min() == 0 and out.array.max() == 1
    np.testing.assert_allclose(out.array[0, 2100], (HU_RAMP[0, 2100] - low) / (high - low), atol=1e-6)
    with pytest.raises(MedcadError, match="same value"):
        percentile_rescale(ct(np.zeros((5, 5))))


def test_zscore_inside_a_mask():
    array = np.zeros((4, 10, 10), np.float32)
    array[:, 2:8, 2:8] = np.random.default_rng(0).normal(300, 50, (4, 6, 6))
    whole = zscore(ct(array))
    assert whole.array.mean() == pytest.approx(0, abs=1e-5) and whole.array.std() == pytest.approx(1, abs=1e-5)
    inside = zscore(ct(array), mask="nonzero")
    values = inside.array[:, 2:8, 2:8]
    assert values.mean() == pytest.approx(0, abs=1e-5) and values.std() == pytest.approx(1, abs=1e-4)
    labels = MedicalImage((array > 0).astype(np.uint8), Geometry.identity(3))
    np.testing.assert_allclose(zscore(ct(array), mask=labels).array, inside.array, atol=1e-6)
    with pytest.raises(MedcadError, match="constant inside the mask"):
        zscore(ct(np.ones((4, 4))))
    with pytest.raises(MedcadError, match="does not fit the image grid"):
        zscore(ct(array), mask=MedicalImage(np.ones((3, 3), np.uint8), Geometry.identity(2)))


def test_zscore_inside_the_body_of_a_ct():
    array = np.full((3, 40, 40), -1000, np.int16)
    yy, xx = np.mgrid[:40, :40]
    body = (yy - 20) ** 2 + (xx - 20) ** 2 < 15**2
    array[:, body] = np.random.default_rng(1).normal(40, 10, (3, body.sum())).astype(np.int16)
    out = zscore(ct(array), mask="body")
    assert out.array[:, body].mean() == pytest.approx(0, abs=0.05)
    assert out.array[0, 0, 0] < -50  # outside air, normalised with the body's statistics


def test_histogram_standardisation_maps_scans_onto_one_scale():
    rng = np.random.default_rng(2)
    # the same tissue mix, scanned with different gains and offsets
    tissue = rng.choice([100.0, 300.0, 600.0], size=(6, 30, 30)) + rng.normal(0, 20, (6, 30, 30))
    scans = [ct(gain * tissue + offset, modality="MR") for gain, offset in ((1.0, 0), (2.5, 300), (0.4, -50))]
    landmarks = learn_histogram_landmarks(scans)
    assert landmarks[0] == pytest.approx(0) and landmarks[-1] == pytest.approx(100)
    outputs = [histogram_standardise(scan, landmarks).array for scan in scans]
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], atol=0.5)
    assert outputs[0].dtype == np.float32


def test_histogram_standardisation_needs_a_spread_histogram():
    background = np.zeros((20, 20))
    background[5:10, 5:10] = np.arange(25).reshape(5, 5) + 1
    with pytest.raises(MedcadError, match="try mask 'nonzero'"):
        histogram_standardise(ct(background, modality="MR"), list(range(0, 110, 10)))
    out = histogram_standardise(ct(background, modality="MR"), list(range(0, 110, 10)), mask="nonzero")
    assert out.array[5, 5] < out.array[9, 9]
    with pytest.raises(MedcadError, match="one landmark per percentile"):
        histogram_standardise(ct(background), [0, 50, 100])
