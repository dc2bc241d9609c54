"""Preprocessing: operations on MedicalImage and pipelines of them, recorded as JSON.

Every operation takes a MedicalImage and returns a new one with correct geometry, works on
2-D, 3-D and 2-D + time stacks (``metadata["axes"] == "tyx"``), takes ``progress`` and never
modifies its input.  No Qt and no napari here; torch is imported only when a step runs on it.
"""

from .backend import DEVICE_CHOICES, REFERENCE, resolve_device, select_device
from .common import AXES_KEY, TIME_AXES, is_time_stack
from .cropping import bounding_box_index, bounding_box_world, crop, world_box_around
from .filters import anisotropic_diffusion, bilateral, clahe, gaussian, grayscale, median, nl_means
from .intensity import (
    DEFAULT_PERCENTILES,
    WINDOW_PRESETS,
    histogram_standardise,
    learn_histogram_landmarks,
    percentile_rescale,
    window,
    zscore,
)
from .masks import body_mask, lung_mask
from .pipeline import Pipeline, Step
from .registry import OPERATIONS, Operation, Param, get_operation
from .resampling import resample, resize

__all__ = [
    "AXES_KEY", "DEFAULT_PERCENTILES", "DEVICE_CHOICES", "OPERATIONS", "REFERENCE", "TIME_AXES",
    "WINDOW_PRESETS", "Operation", "Param", "Pipeline", "Step", "anisotropic_diffusion",
    "bilateral", "body_mask", "bounding_box_index", "bounding_box_world", "clahe", "crop", "gaussian", "get_operation",
    "grayscale", "histogram_standardise", "is_time_stack", "learn_histogram_landmarks",
    "lung_mask", "median", "nl_means", "percentile_rescale", "resample", "resize",
    "resolve_device", "select_device", "window", "world_box_around", "zscore",
]
