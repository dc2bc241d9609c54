"""The training label map of a reviewed case: reader decisions turned into voxels.

Positive findings (accepted, edited, added) get their class value; rejected and pending ones
are background.  A positive finding's voxels are its component in the findings' label map
when it has one there (value ``mask_value``, or its id for model findings, as `predict`
writes it); otherwise (a point the reader added, or a finding moved away from its mask) they
are a ball of the finding's diameter in world millimetres, so anisotropic and oblique grids
give a round lesion in the patient, not in the voxel grid.

The instance map numbers the positive findings 1, 2, ... itself (``CaseLabels.instance_of``)
rather than using their ids: ids come from CSV files, where 0-based numbering is common, and
0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MedcadError
from ..findings import Finding, Findings
from ..image import Geometry, MedicalImage


@dataclass
class CaseLabels:
    """Instance map (positives only: ``instance_of[finding id]`` per voxel, 0 elsewhere), class
    map, and how each finding was drawn."""

    instances: np.ndarray
    classes: np.ndarray
    instance_of: dict[int, int] = field(default_factory=dict)  # finding id -> its value in ``instances``
    drawn: dict[int, str] = field(default_factory=dict)  # finding id -> "mask" | "ball"
    unmatched_label_values: int = 0  # components of the input label map that belong to no finding


def centre_on_grid(finding: Finding, ndim: int) -> np.ndarray:
    """The finding's LPS centre with as many coordinates as the image (CSV rows of 2D images carry z = 0)."""
    centre = np.asarray(finding.centre_world_mm, dtype=float)
    if centre.size < ndim:
        raise MedcadError(f"finding {finding.id} has a {centre.size}D position but the image is {ndim}D")
    if centre.size > ndim and np.any(np.abs(centre[ndim:]) > 1e-6):
        raise MedcadError(f"finding {finding.id} lies off the plane of this 2D image (z = {centre[ndim]:g} mm)")
    return centre[:ndim]


def ball(geometry: Geometry, shape_zyx: tuple[int, ...], centre_world: np.ndarray, diameter_mm: float):
    """``(slices, mask)``: voxels whose centres lie within ``diameter_mm / 2`` of the centre.

    The box is exact for any direction matrix: a world offset ``w`` moves index axis ``i`` by
    ``inv(L)[i] @ w``, at most ``|inv(L)[i]| * r``.  A ball smaller than a voxel keeps the
    voxel nearest the centre, so every positive finding leaves a mark.  ``None`` if outside.
    """
    radius = max(float(diameter_mm), 0.0) / 2.0
    linear = geometry.direction_matrix * np.asarray(geometry.spacing_xyz)[None, :]
    half_zyx = (radius * np.linalg.norm(np.linalg.inv(linear), axis=1))[::-1]
    centre_index = geometry.world_to_index(centre_world)
    shape = np.asarray(shape_zyx)
    low = np.clip(np.floor(centre_index - half_zyx).astype(int), 0, shape)
    high = np.clip(np.ceil(centre_index + half_zyx).astype(int) + 1, 0, shape)
    nearest = np.round(centre_index).astype(int)
    inside_image = bool(np.all(nearest >= 0) and np.all(nearest < shape))
    if np.any(high <= low):
        if not inside_image:
            return None
        low, high = nearest, nearest + 1
    axes = [np.arange(lo, hi) for lo, hi in zip(low, high)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    distance = np.linalg.norm(geometry.index_to_world(grid) - centre_world, axis=-1)
    mask = distance <= radius + 1e-9
    if not mask.any():
        if not inside_image:
            return None
        mask[tuple(np.clip(nearest - low, 0, np.asarray(mask.shape) - 1))] = True
    return tuple(slice(lo, hi) for lo, hi in zip(low, high)), mask


def _mask_value(finding: Finding) -> int | None:
    if finding.mask_value is not None:
        return int(finding.mask_value)
    return int(finding.id) if finding.source != "reader" else None


def _mask_fits(finding: Finding, box, centre_index: np.ndarray) -> bool:
    """The component is this finding's when its centre lies in (or one voxel beside) its box;
    a finding the reader moved elsewhere has left its old component behind."""
    if box is None:
        return False
    return all(s.start - 1 <= c <= s.stop for s, c in zip(box, centre_index))


def build_case_labels(image: MedicalImage, findings: Findings, labels: MedicalImage | None,
                      class_values: dict[str, int]) -> CaseLabels:
    """Instance and class maps on the image's grid (see the module docstring for the rules).

    A positive finding of which no voxel lies in the image is refused: its row in
    annotations.csv would name a lesion the image does not show (most often the table belongs
    to another image, or holds voxel instead of world coordinates).
    """
    shape = image.spatial_shape
    geometry = image.geometry
    positives = [f for f in findings if f.status.is_positive]
    instance_of = {finding.id: number for number, finding in enumerate(positives, start=1)}
    instance_dtype = np.uint16 if len(positives) < 2**16 else np.uint32
    instances = np.zeros(shape, dtype=instance_dtype)
    result = CaseLabels(instances=instances, classes=np.zeros(shape, dtype=np.uint8), instance_of=instance_of)
    if labels is not None:
        _take_masks(image, findings, labels, result)

    for finding in positives:
        if finding.id in result.drawn:
            continue
        drawn = ball(geometry, shape, centre_on_grid(finding, image.ndim), finding.diameter_mm)
        if drawn is None:
            centre = ", ".join(f"{v:g}" for v in finding.centre_world_mm)
            raise MedcadError(f"finding {finding.id} ({finding.status.value}) lies outside the image (centre "
                              f"{centre} mm, world LPS); reject it, or check that the findings belong to this "
                              "image and give world coordinates")
        box, mask = drawn
        instances[box][mask] = instance_of[finding.id]
        result.drawn[finding.id] = "ball"

    class_dtype = np.uint8 if max(class_values.values(), default=0) < 256 else np.uint16
    class_of_instance = np.zeros(len(positives) + 1, dtype=class_dtype)
    for finding in positives:
        class_of_instance[instance_of[finding.id]] = class_values[finding.label]
    result.classes = class_of_instance[instances]
    return result


def _take_masks(image: MedicalImage, findings: Findings, labels: MedicalImage, result: CaseLabels) -> None:
    """Copy the components of the findings' label map that belong to positive findings into
    ``result.instances`` (value ``mask_value``, or the id of a model finding)."""
    from scipy import ndimage

    geometry = image.geometry
    if labels.spatial_shape != image.spatial_shape or not _same_grid(labels.geometry, geometry):
        raise MedcadError("the findings' label map does not lie on the image's grid (size, spacing, origin or "
                          "direction differ)")
    label_array = np.asarray(labels.array)
    if label_array.dtype.kind not in "ui" or (label_array.size and label_array.min() < 0):
        raise MedcadError("the findings' label map must hold non-negative whole numbers")
    label_array = label_array.astype(np.int64, copy=False) if label_array.dtype.kind == "i" else label_array
    boxes = ndimage.find_objects(label_array) if label_array.size else []

    def component(finding: Finding):
        value = _mask_value(finding)
        return value if value is not None and 0 < value <= len(boxes) and boxes[value - 1] is not None else None

    claimed = {component(f) for f in findings} - {None}
    lookup = np.zeros(len(boxes) + 1, dtype=result.instances.dtype)
    for finding in findings:
        value = component(finding)
        if value is None or finding.id not in result.instance_of:
            continue
        centre_index = geometry.world_to_index(centre_on_grid(finding, image.ndim))
        if _mask_fits(finding, boxes[value - 1], centre_index):
            lookup[value] = result.instance_of[finding.id]
            result.drawn[finding.id] = "mask"
    result.unmatched_label_values = sum(1 for v, box in enumerate(boxes, 1) if box is not None and v not in claimed)
    if lookup.any():
        np.take(lookup, label_array, out=result.instances)


def _same_grid(a: Geometry, b: Geometry) -> bool:
    return (a.ndim == b.ndim and np.allclose(a.spacing_xyz, b.spacing_xyz, rtol=1e-5, atol=1e-6)
            and np.allclose(a.origin_xyz, b.origin_xyz, atol=1e-4)
            and np.allclose(a.direction, b.direction, atol=1e-5))
