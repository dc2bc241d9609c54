"""Intensity operations: CT windows, percentile rescaling, z-score and Nyúl histogram
standardisation.  Outputs are float32 and carry a display window in their metadata, so napari
shows the new value range instead of the source's window."""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import MedcadError
from ..image import MedicalImage
from ..progress import ProgressFn, report, scaled
from .common import as_float32, check_ct, check_image, check_single_channel, derive, display_window

#: name -> (level, width) in HU
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (40.0, 350.0),
    "liver": (60.0, 160.0),
}
CUSTOM_WINDOW = "custom"
#: "unit": rescaled to [0, 1]; "clipped": clipped values in the input's units (HU)
WINDOW_OUTPUTS = ("unit", "clipped")
#: where z-score and histogram statistics are taken
STATISTICS_MASKS = ("none", "nonzero", "body")
#: Nyúl's landmarks: the 1st and 99th percentiles and the deciles between them
DEFAULT_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)

MaskSpec = Union[str, MedicalImage, None]


def window_settings(preset: str, level: float | None, width: float | None) -> tuple[float, float]:
    """(level, width) of a named or custom window; conflicting values are an error."""
    if preset == CUSTOM_WINDOW:
        if level is None or width is None:
            raise MedcadError("a custom window needs both a level and a width")
        if not (math.isfinite(level) and math.isfinite(width)) or width <= 0:
            raise MedcadError(f"window width must be a positive number, got {width}")
        return float(level), float(width)
    if preset not in WINDOW_PRESETS:
        known = ", ".join(list(WINDOW_PRESETS) + [CUSTOM_WINDOW])
        raise MedcadError(f"unknown window preset '{preset}' (choose from {known})")
    preset_level, preset_width = WINDOW_PRESETS[preset]
    if (level is not None and level != preset_level) or (width is not None and width != preset_width):
        raise MedcadError(
            f"the {preset} window is level {preset_level:g} / width {preset_width:g}; "
            "choose the 'custom' preset for other values"
        )
    return preset_level, preset_width


def window(
    image: MedicalImage,
    preset: str = "lung",
    level: float | None = None,
    width: float | None = None,
    output: str = "unit",
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Clip to a CT window (a named preset, or ``preset="custom"`` with level and width).

    Named presets are in HU and refuse images that are not CT; a custom window works on any
    single-channel image (an MR window, say).
    """
    check_image(image, "window")
    if preset == CUSTOM_WINDOW:
        check_single_channel(image, "window")
    else:
        check_ct(image, f"the {preset} window")
    level, width = window_settings(preset, level, width)
    if output not in WINDOW_OUTPUTS:
        raise MedcadError(f"window output must be one of {', '.join(WINDOW_OUTPUTS)}, got '{output}'")
    report(progress, 0, 1, f"{preset} window")
    low, high = level - width / 2.0, level + width / 2.0
    out = as_float32(image.array)
    np.clip(out, low, high, out=out)
    units = None  # clipped values keep their units
    if output == "unit":
        out -= np.float32(low)
        out /= np.float32(width)
        low, high, units = 0.0, 1.0, f"{preset} window [0, 1]"
    report(progress, 1, 1, f"{preset} window")
    return derive(image, out, **display_window(low, high, units))


def check_percentile_range(lower: float, upper: float) -> None:
    if not 0.0 <= lower < upper <= 100.0:
        raise MedcadError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower:g} and {upper:g}")


def percentile_rescale(
    image: MedicalImage,
    lower: float = 0.5,
    upper: float = 99.5,
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Clip to the ``lower``..``upper`` percentiles and rescale that range to [0, 1]."""
    check_image(image, "percentile rescale")
    check_single_channel(image, "percentile rescale")
    check_percentile_range(lower, upper)
    report(progress, 0, 2, "percentiles")
    low, high = (float(v) for v in np.percentile(image.array, (lower, upper)))
    if high <= low:
        raise MedcadError(
            f"percentile rescale: '{image.name}' has the same value ({low:g}) at the "
            f"{lower:g}th and {upper:g}th percentiles"
        )
    report(progress, 1, 2, "rescale")
    out = as_float32(image.array)
    np.clip(out, low, high, out=out)
    out -= np.float32(low)
    out /= np.float32(high - low)
    report(progress, 2, 2, "rescale")
    return derive(image, out, **display_window(0.0, 1.0, "percentile [0, 1]"))


def statistics_mask(image: MedicalImage, mask: MaskSpec) -> np.ndarray | None:
    """The voxels statistics are taken over: all (None), non-zero ones, the body, or a mask."""
    if mask is None or (isinstance(mask, str) and mask == "none"):
        return None
    if isinstance(mask, MedicalImage):
        if mask.spatial_shape != image.spatial_shape or mask.rgb:
            raise MedcadError(
                f"mask '{mask.name}' of shape {mask.array.shape} does not fit the image grid {image.spatial_shape}"
            )
        selected = np.asarray(mask.array) != 0
    elif mask == "nonzero":
        selected = image.array != 0
    elif mask == "body":
        from .masks import body_mask

        selected = body_mask(image).array != 0
    else:
        raise MedcadError(f"mask must be one of {', '.join(STATISTICS_MASKS)}, got '{mask}'")
    if not selected.any():
        raise MedcadError(f"the {mask if isinstance(mask, str) else 'given'} mask of '{image.name}' is empty")
    return selected


def _mean_std(array: np.ndarray, selected: np.ndarray | None) -> tuple[float, float]:
    """Mean and standard deviation in float64, a slice at a time (no float64 volume copy)."""
    chunks = array if array.ndim == 3 else array[None]
    masks = selected if selected is None or selected.ndim == 3 else selected[None]
    shift = None
    count, total, total_sq = 0, 0.0, 0.0
    for index, chunk in enumerate(chunks):
        values = chunk if masks is None else chunk[masks[index]]
        if values.size == 0:
            continue
        values = values.astype(np.float64)
        if shift is None:
            shift = float(values.mean())  # centring keeps the sum of squares accurate
        values -= shift
        count += values.size
        total += float(values.sum())
        total_sq += float(np.dot(values.ravel(), values.ravel()))
    mean = total / count
    return shift + mean, math.sqrt(max(total_sq / count - mean * mean, 0.0))


def zscore(image: MedicalImage, mask: MaskSpec = "none", progress: Optional[ProgressFn] = None) -> MedicalImage:
    """(value - mean) / standard deviation, the statistics taken inside ``mask``.

    ``mask`` is "none", "nonzero" (foreground of skull-stripped MR), "body" (CT body mask) or a
    label image on the same grid; every voxel is normalised with those statistics.
    """
    check_image(image, "z-score")
    check_single_channel(image, "z-score")
    report(progress, 0, 2, "mean and standard deviation")
    mean, std = _mean_std(image.array, statistics_mask(image, mask))
    if std == 0:
        raise MedcadError(f"z-score: '{image.name}' is constant inside the mask")
    report(progress, 1, 2, "z-score")
    out = as_float32(image.array)
    out -= np.float32(mean)
    out /= np.float32(std)
    report(progress, 2, 2, "z-score")
    return derive(image, out, **display_window(-2.0, 2.0, "z-score"))


def _landmarks(array: np.ndarray, selected: np.ndarray | None, percentiles: Sequence[float]) -> np.ndarray:
    values = array if selected is None else array[selected]
    return np.percentile(values, list(percentiles))


def check_landmarks(percentiles: Sequence[float], landmarks: Sequence[float] | None = None) -> None:
    percentiles = np.asarray(percentiles, dtype=float)
    if len(percentiles) < 2 or np.any(np.diff(percentiles) <= 0) or percentiles[0] < 0 or percentiles[-1] > 100:
        raise MedcadError("histogram percentiles must be at least two increasing values between 0 and 100")
    if landmarks is not None:
        if len(landmarks) != len(percentiles):
            raise MedcadError(
                f"histogram standardisation needs one landmark per percentile "
                f"({len(percentiles)}), got {len(landmarks)}"
            )
        if np.any(np.diff(np.asarray(landmarks, dtype=float)) <= 0):
            raise MedcadError("histogram landmarks must increase")


def learn_histogram_landmarks(
    images: Iterable[MedicalImage],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    scale: tuple[float, float] = (0.0, 100.0),
    mask: str = "none",
) -> list[float]:
    """Nyúl's training: each image's percentile landmarks mapped linearly onto ``scale``
    (first and last percentile to its ends), averaged over the images."""
    check_landmarks(percentiles)
    mapped = []
    for image in images:
        check_image(image, "histogram training")
        check_single_channel(image, "histogram training")
        landmarks = _landmarks(image.array, statistics_mask(image, mask), percentiles)
        if landmarks[-1] <= landmarks[0]:
            raise MedcadError(f"histogram training: '{image.name}' has a flat histogram")
        unit = (landmarks - landmarks[0]) / (landmarks[-1] - landmarks[0])
        mapped.append(scale[0] + unit * (scale[1] - scale[0]))
    if not mapped:
        raise MedcadError("histogram training needs at least one image")
    return [float(v) for v in np.mean(mapped, axis=0)]


def _piecewise_linear(values: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """np.interp between landmarks, extended linearly beyond the first and last one."""
    out = np.interp(values, source, target)
    below, above = values < source[0], values > source[-1]
    out[below] = target[0] + (values[below] - source[0]) * (target[1] - target[0]) / (source[1] - source[0])
    out[above] = target[-1] + (values[above] - source[-1]) * (target[-1] - target[-2]) / (source[-1] - source[-2])
    return out


def histogram_standardise(
    image: MedicalImage,
    landmarks: Sequence[float],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    mask: MaskSpec = "none",
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Nyúl-Udupa standardisation: map this image's percentile landmarks onto ``landmarks``
    (learnt with :func:`learn_histogram_landmarks`), piecewise linearly, so MR intensities
    mean the same tissue across scans."""
    check_image(image, "histogram standardisation")
    check_single_channel(image, "histogram standardisation")
    check_landmarks(percentiles, landmarks)
    report(progress, 0, 2, "histogram landmarks")
    source = _landmarks(image.array, statistics_mask(image, mask), percentiles)
    if np.any(np.diff(source) <= 0):
        raise MedcadError(
            f"histogram standardisation: '{image.name}' has equal values at neighbouring "
            "percentiles (try mask 'nonzero' to leave out the background)"
        )
    target = np.asarray(landmarks, dtype=float)
    chunks = image.array if image.array.ndim == 3 else image.array[None]
    out = np.empty(chunks.shape, dtype=np.float32)
    mapping_progress = scaled(progress, 0.5, 1.0)
    for index, chunk in enumerate(chunks):
        report(mapping_progress, index, len(chunks), "histogram mapping")
        out[index] = _piecewise_linear(chunk.astype(np.float64), source, target)
    report(progress, 2, 2, "histogram mapping")
    return derive(image, out.reshape(image.array.shape),
                  **display_window(target[0], target[-1], "standard-scale"))
