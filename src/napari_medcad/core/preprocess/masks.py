"""CT body and lung masks by threshold, connected components, morphology and hole filling.

They are uint8 label images (1 inside) on the image's own grid.  Inference calls
:func:`lung_mask` to skip windows that cannot hold a lung finding, so it is cheap: in-plane
morphology slice by slice, connected components in 3-D.  Structuring sizes are in mm.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from ..image import MedicalImage
from ..progress import ProgressFn, report, scaled
from .common import check_ct, check_image, derive, is_time_stack, per_slice

#: tissue (and the table) is above this; air, lung and foam pads are below
BODY_THRESHOLD_HU = -500.0
#: in-plane opening that cuts the body loose from the table and cables (mm)
BODY_OPENING_MM = 3.0
#: in-plane closing that brings vessels, airway walls and juxtapleural nodules into the lung (mm)
LUNG_CLOSING_MM = 10.0
#: an air component is lung if it holds at least this fraction of the largest one (at most two)
LUNG_MIN_FRACTION = 0.1
#: a slice whose field-of-view edge runs through tissue for at least this share crops the body
CROPPED_EDGE_TISSUE = 0.25
#: air outside the patient is about -1000 HU; lung parenchyma (vessels included) is far denser
OUTSIDE_AIR_HU = -950.0
#: ... and a cut-open lung is wide; the table's foam core (as dense as lung) is a thin layer
CUT_LUNG_MIN_HALF_WIDTH_MM = 10.0


def _disk(radius_mm: float, spacing_yx: Sequence[float]) -> np.ndarray:
    """An in-plane disk of ``radius_mm`` on voxels of ``spacing_yx`` (an ellipse in voxels)."""
    radii = [max(1, int(round(radius_mm / s))) for s in spacing_yx]
    y, x = np.ogrid[-radii[0] : radii[0] + 1, -radii[1] : radii[1] + 1]
    return (y * spacing_yx[0]) ** 2 + (x * spacing_yx[1]) ** 2 <= radius_mm**2 + 1e-9


def _largest_components(selected: np.ndarray, keep: int, min_fraction: float) -> np.ndarray:
    """The ``keep`` largest connected components holding >= ``min_fraction`` of the largest."""
    from scipy import ndimage

    labels, count = ndimage.label(selected)
    if count == 0:
        return selected
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [label for label in order if sizes[label] >= min_fraction * sizes[order[0]]]
    return np.isin(labels, chosen)


def close_by_distance(binary: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Morphological closing of ``binary`` by a ball (disk in 2-D) of ``radius_mm``, from two
    Euclidean distance transforms in mm, so the cost does not grow with the radius.  The array's edge
    neither grows nor erodes the mask: pad first where the closing must reach past it.  ``binary``
    must hold at least one True voxel."""
    from scipy import ndimage

    dilated = ndimage.distance_transform_edt(~binary, sampling=spacing) <= radius_mm
    return binary | (ndimage.distance_transform_edt(dilated, sampling=spacing) > radius_mm)


def _close_and_fill(plane: np.ndarray, radius_mm: float, spacing_yx: Sequence[float]) -> np.ndarray:
    """In-plane closing with a disk of ``radius_mm`` (:func:`close_by_distance`, on the content's
    bounding box padded by the radius only: a closing never leaves it), then hole filling."""
    from scipy import ndimage

    if plane.any():
        rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        pad = int(np.ceil(radius_mm / min(spacing_yx))) + 1
        closed = close_by_distance(np.pad(plane[window], pad), radius_mm, spacing_yx)
        plane = plane.copy()
        plane[window] |= closed[pad:-pad, pad:-pad]
    return ndimage.binary_fill_holes(plane)


def field_edge(array: np.ndarray) -> np.ndarray:
    """The in-plane rim of the reconstructed field: the image border, or the rim of the circle
    when the scanner padded outside it (air-or-lower values identical in every slice)."""
    from scipy import ndimage

    plane_shape = array.shape[-2:]
    padding = np.zeros(plane_shape, bool)
    if array.ndim == 3 and array.shape[0] > 1:
        padding = (array.min(axis=0) == array.max(axis=0)) & (array[0] <= -1000)
        if padding.mean() > 0.9:  # nothing but a constant: no circle to find
            padding[:] = False
    field = ~padding
    return field & ~ndimage.binary_erosion(field, border_value=0)


def _solid_plane(plane: np.ndarray, threshold_hu: float, edge: np.ndarray, disk: np.ndarray,
                 spacing_yx: Sequence[float]) -> np.ndarray:
    """Tissue of one slice, holes filled, opened.  Where the field of view crops the body (its rim
    runs through tissue), air that the rim closes off is a hole too if it is lung-like: denser than
    outside air on average and wide (not the table's thin foam core).  So lungs the crop cuts
    open stay in the body, the air outside the skin stays out."""
    from scipy import ndimage

    tissue = plane > threshold_hu
    filled = ndimage.binary_fill_holes(tissue)
    if edge.any() and tissue[edge].mean() >= CROPPED_EDGE_TISSUE:
        closed_off, count = ndimage.label(ndimage.binary_fill_holes(tissue | edge) & ~filled)
        if count:
            index = np.arange(1, count + 1)
            dense = np.asarray(ndimage.mean(plane, closed_off, index)) > OUTSIDE_AIR_HU
            depth = ndimage.distance_transform_edt(closed_off > 0, sampling=spacing_yx)
            wide = np.asarray(ndimage.maximum(depth, closed_off, index)) >= CUT_LUNG_MIN_HALF_WIDTH_MM
            filled |= np.isin(closed_off, index[dense & wide])
    return ndimage.binary_opening(filled, structure=disk)


def _body(array: np.ndarray, spacing_zyx: Sequence[float], threshold_hu: float, progress) -> np.ndarray:
    """Per slice: tissue above the threshold, holes filled (lungs, bowel gas), opened to cut it
    loose from the table and cables; then the largest 3-D component.  Filling before opening
    keeps thin chest walls from being opened.  A targeted reconstruction that crops the body
    (see :func:`_solid_plane`) keeps the lungs the crop cuts open."""
    spacing_yx = tuple(spacing_zyx[-2:])
    disk = _disk(BODY_OPENING_MM, spacing_yx)
    edge = field_edge(array)
    solid = per_slice(
        array,
        lambda plane: _solid_plane(plane, threshold_hu, edge, disk, spacing_yx),
        scaled(progress, 0.0, 0.8),
        "body: threshold, fill, opening",
    )
    report(progress, 4, 5, "body: largest component")
    return _largest_components(solid, keep=1, min_fraction=0.0)


def _lungs(array: np.ndarray, spacing_zyx: Sequence[float], threshold_hu: float, progress) -> np.ndarray:
    body = _body(array, spacing_zyx, BODY_THRESHOLD_HU, scaled(progress, 0.0, 0.5))
    report(progress, 1, 2, "lungs: air inside the body")
    air = (array < threshold_hu) & body
    lungs = _largest_components(air, keep=2, min_fraction=LUNG_MIN_FRACTION)
    spacing_yx = tuple(spacing_zyx[-2:])
    return per_slice(
        lungs,
        lambda plane: _close_and_fill(plane, LUNG_CLOSING_MM, spacing_yx),
        scaled(progress, 0.6, 1.0),
        "lungs: closing",
    )


#: metadata key of the note an empty mask carries (a key ending in ``_note``: see core.io.reader_notes)
MASK_NOTE = "mask_note"


def _mask(image: MedicalImage, compute, progress: Optional[ProgressFn], what: str) -> MedicalImage:
    """``compute(array, spacing_zyx, progress)`` on the image, or on each frame of a 2-D + t stack."""
    spacing = image.geometry.spacing_zyx
    if is_time_stack(image):
        selected = per_slice(image.array, lambda frame: compute(frame, spacing, None), progress, what, unit="frame")
    else:
        selected = compute(image.array, spacing, progress)
    report(progress, 1, 1, what)
    # an empty mask says so, not silent: a model limited to it would search nothing
    note = None if selected.any() else f"the {what} is empty: no {what.split()[0]} was found in this image"
    result = derive(image, selected.astype(np.uint8), window_center=None, window_width=None, **{MASK_NOTE: note})
    return replace(result, modality="SEG", name=f"{image.name} {what}")


def body_mask(image: MedicalImage, threshold_hu: float = BODY_THRESHOLD_HU, progress: Optional[ProgressFn] = None) -> MedicalImage:
    """The patient's body (no table, no outside air), holes filled slice by slice."""
    check_image(image, "body mask")
    check_ct(image, "the body mask")
    return _mask(image, lambda a, spacing, p: _body(a, spacing, threshold_hu, p), progress, "body mask")


def lung_mask(image: MedicalImage, threshold_hu: float = -320.0, progress: Optional[ProgressFn] = None) -> MedicalImage:
    """Both lungs: air (below ``threshold_hu``) inside the body, the one or two largest
    components, closed and hole-filled in-plane so vessels and nodules at the pleura are in."""
    check_image(image, "lung mask")
    check_ct(image, "the lung mask")
    return _mask(image, lambda a, spacing, p: _lungs(a, spacing, threshold_hu, p), progress, "lung mask")
