"""The small case the review tests open: a CT with three cubic findings and their masks, on a
grid rotated in-plane (3-D) or a plain 2-D one.  Only tests import it."""

from __future__ import annotations

import numpy as np

from napari_medcad.core.findings import Finding, Findings
from napari_medcad.core.image import Geometry, MedicalImage

GEOMETRY_3D = Geometry((0.8, 0.9, 2.0), (-20.0, 15.0, -40.0), (0, -1, 0, 1, 0, 0, 0, 0, 1))  # rotated in-plane
GEOMETRY_2D = Geometry((0.5, 0.6), (10.0, -5.0), (1, 0, 0, 1))
CENTRES = [(3, 10, 12), (8, 25, 30), (12, 32, 14)]


def make_case(ndim=3, seed=0):
    """(image, findings 1..3 with boxes and mask values, their label map)."""
    geometry = GEOMETRY_3D if ndim == 3 else GEOMETRY_2D
    shape = (16, 40, 44)[-ndim:]
    array = np.random.default_rng(seed).integers(-1000, 400, shape).astype(np.int16)
    image = MedicalImage(array, geometry, modality="CT", name="ct")
    findings = Findings(geometry=geometry, shape_zyx=shape, provenance={"model": "m", "classes": ["nodule", "mass"]})
    labels = np.zeros(shape, np.uint16)
    for number, centre in enumerate(CENTRES, start=1):
        centre = centre[-ndim:]
        start, stop = tuple(c - 2 for c in centre), tuple(c + 3 for c in centre)
        labels[tuple(slice(a, b) for a, b in zip(start, stop))] = number
        findings.add(Finding(
            id=number, label="nodule", probability=0.9 - 0.2 * number,
            centre_world_mm=tuple(geometry.index_to_world(centre)), centre_index_zyx=centre, diameter_mm=5.0,
            bbox_index_zyx=(start, stop), mask_value=number))
    return image, findings, image.with_array(labels, modality="SEG")
