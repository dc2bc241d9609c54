"""The operations a pipeline can name, with their parameters as data.

Each :class:`Operation` couples a core function with a description of its parameters (kind,
limits, help); defaults are read from the function's signature, so they are stated once.
:meth:`Operation.normalise` checks a parameter dict and completes it with defaults, raising
:class:`MedcadError` with the operation's name on anything wrong.  The widget builds its form
from the same descriptions.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..errors import MedcadError
from ..image import MedicalImage
from ..progress import ProgressFn
from . import cropping, filters, intensity, masks, resampling
from .intensity import WINDOW_OUTPUTS, WINDOW_PRESETS, CUSTOM_WINDOW, STATISTICS_MASKS

_NO_DEFAULT = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One parameter: its kind, allowed values and a help line for the widget.

    Kinds: "float", "int", "choice", "optional_float" (None allowed), "floats"/"ints" (a list;
    a single number means the same on every axis), "index_box"/"world_box" (two corners).
    """

    name: str
    kind: str
    help: str
    choices: tuple[str, ...] = ()
    low: Optional[float] = None  # smallest allowed value ...
    low_open: bool = False  # ... excluded when True

    def _number(self, op: str, value: Any, integer: bool = False, bounded: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise MedcadError(f"{op}: {self.name} must be a finite number, got {value!r}")
        if integer and int(value) != value:
            raise MedcadError(f"{op}: {self.name} must be a whole number, got {value!r}")
        if bounded and self.low is not None and (value <= self.low if self.low_open else value < self.low):
            bound = "greater than" if self.low_open else "at least"
            raise MedcadError(f"{op}: {self.name} must be {bound} {self.low:g}, got {value!r}")
        return int(value) if integer else float(value)

    def _corner(self, op: str, corner: Any, integer: bool) -> list:
        if not isinstance(corner, (list, tuple)):
            raise MedcadError(f"{op}: {self.name} corners must be lists, got {corner!r}")
        return [None if v is None else self._number(op, v, integer, bounded=False) for v in corner]

    def normalise(self, op: str, value: Any) -> Any:
        """The canonical (JSON) form of ``value``, or a MedcadError saying what is wrong."""
        if self.kind == "float":
            return self._number(op, value)
        if self.kind == "int":
            return self._number(op, value, integer=True)
        if self.kind == "optional_float":
            return None if value is None else self._number(op, value)
        if self.kind == "choice":
            if value not in self.choices:
                raise MedcadError(f"{op}: {self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if self.kind in ("floats", "ints"):
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if not values:
                raise MedcadError(f"{op}: {self.name} needs at least one value")
            return [self._number(op, v, integer=self.kind == "ints") for v in values]
        if self.kind in ("index_box", "world_box"):
            if value is None:
                return None
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise MedcadError(f"{op}: {self.name} must be two corners [[...], [...]], got {value!r}")
            corners = [self._corner(op, corner, self.kind == "index_box") for corner in value]
            if len(corners[0]) != len(corners[1]):
                raise MedcadError(f"{op}: the two corners of {self.name} need as many values each, got {value!r}")
            return corners
        raise ValueError(f"unknown parameter kind {self.kind}")


@dataclass(frozen=True)
class Operation:
    """A named preprocessing operation: function, parameters, and what it produces."""

    name: str
    title: str
    family: str
    function: Callable[..., MedicalImage]
    params: tuple[Param, ...]
    makes_labels: bool = False
    #: cross-parameter rules on the normalised dict; returns it completed (e.g. preset values)
    complete: Optional[Callable[[dict], dict]] = None

    @property
    def uses_device(self) -> bool:
        """True when the operation has a torch implementation (takes ``device``)."""
        return "device" in inspect.signature(self.function).parameters

    def defaults(self) -> dict[str, Any]:
        """Default value per parameter; ``inspect.Parameter.empty`` where one is required."""
        signature = inspect.signature(self.function).parameters
        return {param.name: signature[param.name].default for param in self.params}

    def normalise(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(params, Mapping):
            raise MedcadError(f"{self.name}: parameters must be a mapping, got {params!r}")
        known = [param.name for param in self.params]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise MedcadError(f"{self.name}: unknown parameter '{unknown[0]}' (expected: {', '.join(known)})")
        result = {}
        for param, default in zip(self.params, self.defaults().values()):
            if param.name in params:
                result[param.name] = param.normalise(self.name, params[param.name])
            elif default is _NO_DEFAULT:
                raise MedcadError(f"{self.name}: parameter '{param.name}' is required ({param.help})")
            else:
                result[param.name] = param.normalise(self.name, default)
        if self.complete is not None:
            try:
                result = self.complete(result)
            except MedcadError as err:
                raise MedcadError(f"{self.name}: {err}") from None
        return result

    def run(self, image: MedicalImage, params: Mapping[str, Any], progress: ProgressFn | None = None,
            device: str = "auto") -> MedicalImage:
        extra = {"device": device} if self.uses_device else {}
        return self.function(image, **params, progress=progress, **extra)


def _complete_window(params: dict) -> dict:
    level, width = intensity.window_settings(params["preset"], params["level"], params["width"])
    return {**params, "level": level, "width": width}


def _complete_crop(params: dict) -> dict:
    if (params["box_index_zyx"] is None) == (params["box_world_xyz"] is None):
        raise MedcadError("give exactly one box: box_index_zyx or box_world_xyz")
    return params


def _complete_percentiles(params: dict) -> dict:
    intensity.check_percentile_range(params["lower"], params["upper"])
    return params


def _complete_histogram(params: dict) -> dict:
    intensity.check_landmarks(params["percentiles"], params["landmarks"])
    return params


_INTERPOLATION = Param("interpolation", "choice", "linear or B-spline for images, nearest for labels",
                       choices=resampling.INTERPOLATIONS)
_POSITIVE = {"low": 0.0, "low_open": True}

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("window", "CT window", "Intensity", intensity.window, (
            Param("preset", "choice", "named CT window, or custom level/width",
                  choices=tuple(WINDOW_PRESETS) + (CUSTOM_WINDOW,)),
            Param("level", "optional_float", "window centre (HU); custom preset only"),
            Param("width", "optional_float", "window width (HU); custom preset only"),
            Param("output", "choice", "unit: rescaled to [0, 1]; clipped: HU", choices=WINDOW_OUTPUTS),
        ), complete=_complete_window),
        Operation("percentile_rescale", "Percentile clip and rescale", "Intensity", intensity.percentile_rescale, (
            Param("lower", "float", "lower percentile -> 0", low=0.0),
            Param("upper", "float", "upper percentile -> 1", low=0.0),
        ), complete=_complete_percentiles),
        Operation("zscore", "Z-score", "Intensity", intensity.zscore, (
            Param("mask", "choice", "voxels the mean and SD are taken over", choices=STATISTICS_MASKS),
        )),
        Operation("histogram_standardise", "Histogram standardisation (Nyúl)", "Intensity",
                  intensity.histogram_standardise, (
            Param("landmarks", "floats", "standard-scale landmarks, one per percentile (learnt)"),
            Param("percentiles", "floats", "percentiles the landmarks sit at", low=0.0),
            Param("mask", "choice", "voxels the percentiles are taken over", choices=STATISTICS_MASKS),
        ), complete=_complete_histogram),
        Operation("resample", "Resample to spacing", "Geometry", resampling.resample, (
            Param("spacing_xyz", "floats", "target spacing in mm: one value, or x, y[, z]", **_POSITIVE),
            _INTERPOLATION,
        )),
        Operation("resize", "Resize to shape", "Geometry", resampling.resize, (
            Param("shape_zyx", "ints", "voxels per spatial axis, array order (z, y, x)", low=1),
            _INTERPOLATION,
        )),
        Operation("crop", "Crop to box", "Geometry", cropping.crop, (
            Param("box_index_zyx", "index_box", "[start, stop) voxel indices, array order; null: whole axis"),
            Param("box_world_xyz", "world_box", "two corners in LPS mm (x, y[, z]); null: whole axis"),
            Param("margin_mm", "float", "margin added on every side (mm)", low=0.0),
        ), complete=_complete_crop),
        Operation("grayscale", "RGB to grayscale", "Filters", filters.grayscale, ()),
        Operation("gaussian", "Gaussian smoothing", "Filters", filters.gaussian, (
            Param("sigma_mm", "float", "standard deviation (mm)", **_POSITIVE),
        )),
        Operation("median", "Median", "Filters", filters.median, (
            Param("radius_vox", "int", "box radius (voxels)", low=1),
        )),
        Operation("nl_means", "Non-local means", "Filters", filters.nl_means, (
            Param("strength", "float", "filter strength, in units of the estimated noise", **_POSITIVE),
            Param("patch_size", "int", "patch side (voxels)", low=1),
            Param("patch_distance", "int", "search radius (voxels)", low=1),
        )),
        Operation("anisotropic_diffusion", "Anisotropic diffusion", "Filters", filters.anisotropic_diffusion, (
            Param("iterations", "int", "diffusion iterations", low=1),
            Param("conductance", "float", "edge sensitivity (lower keeps more edges)", **_POSITIVE),
        )),
        Operation("bilateral", "Bilateral", "Filters", filters.bilateral, (
            Param("domain_sigma_mm", "float", "spatial sigma (mm)", **_POSITIVE),
            Param("range_sigma", "float", "intensity sigma (image units, HU for CT)", **_POSITIVE),
        )),
        Operation("clahe", "CLAHE", "Filters", filters.clahe, (
            Param("clip_limit", "float", "contrast limit (0..1]", **_POSITIVE),
            Param("kernel_size_vox", "int", "tile size in voxels; 0: 1/8 of each axis", low=0),
            Param("nbins", "int", "histogram bins", low=2),
        )),
        Operation("body_mask", "Body mask (CT)", "Masks", masks.body_mask, (
            Param("threshold_hu", "float", "tissue above this HU"),
        ), makes_labels=True),
        Operation("lung_mask", "Lung mask (CT)", "Masks", masks.lung_mask, (
            Param("threshold_hu", "float", "air below this HU"),
        ), makes_labels=True),
    )
}


def get_operation(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except (KeyError, TypeError):
        raise MedcadError(
            f"unknown preprocessing operation {name!r} (known: {', '.join(OPERATIONS)})"
        ) from None
