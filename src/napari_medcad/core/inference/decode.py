"""From a probability map to findings: connected components, sizes, world positions.

Each connected region of voxels above the card's ``mask_threshold`` is one candidate (its mask);
its probability is the region's peak, and it is a finding when that peak reaches the card's
``threshold`` (the operating point, chosen on validation data).  Keeping the two apart lets the
operating point move without shrinking or splitting the masks; its centre the probability-weighted centroid, its diameter the diameter of a
sphere (or disc, in 2D) of the same volume.  Candidates smaller than the card's minimum
diameter are dropped; the most probable ``max_findings`` are kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..findings import Finding, Findings, equivalent_diameter_mm
from ..image import MedicalImage


def inside_closed_mask(mask: np.ndarray, regions: np.ndarray, number: int, box: tuple[slice, ...],
                       radius_mm: float, spacing_zyx: tuple[float, ...]) -> float:
    """Fraction of region ``number`` inside ``mask`` closed by a ball of ``radius_mm``.

    Computed on the region's box padded by twice the radius, the reach of a closing there.
    """
    from ..preprocess.masks import close_by_distance

    window = tuple(slice(max(0, b.start - pad), min(size, b.stop + pad)) for b, pad, size in
                   zip(box, (int(np.ceil(2 * radius_mm / s)) + 1 for s in spacing_zyx), mask.shape))
    part = mask[window]
    if not part.any():
        return 0.0
    closed = close_by_distance(part, radius_mm, spacing_zyx)
    return float(closed[regions[window] == number].mean())


def decode_components(
    probability: MedicalImage,
    intensity: MedicalImage | None,
    decoding: dict[str, Any],
    label: str = "nodule",
    within: np.ndarray | None = None,
) -> tuple[Findings, np.ndarray]:
    """Findings from ``probability`` (one channel, values 0..1) and their label map.

    ``intensity`` (same grid) gives each finding's mean value (HU on CT). ``decoding`` keys:
    threshold (0.5): a region is kept only if its peak reaches it; mask_threshold (threshold):
    the voxel level of the regions (a threshold below it lowers the level too, so low
    operating points still see weak candidates); min_diameter_mm (0), max_findings (100).
    ``within`` (a boolean mask on the same grid, e.g. the lungs): regions with less than half
    their voxels inside it are dropped (a lung nodule detector has no business in the
    mediastinum or the chest wall, where the windows it ran on also reach).  With
    ``within_closing_mm`` (0) a region that fails is measured again against the mask closed by a
    ball of that radius: a juxtapleural nodule bites a dent into the lung mask that a threshold
    mask leaves open, while the chest wall outside the lung's convex outline stays outside.
    Returns the findings (ids 1..N by decreasing probability) and an int32 map whose value
    for each finding is its ``mask_value``.
    """
    from scipy import ndimage

    threshold = float(decoding.get("threshold", 0.5))
    level = min(float(decoding.get("mask_threshold", threshold)), threshold)
    min_diameter = float(decoding.get("min_diameter_mm", 0.0))
    max_findings = int(decoding.get("max_findings", 100))
    closing_mm = float(decoding.get("within_closing_mm", 0.0))
    values = probability.array
    geometry = probability.geometry
    voxel_mm3 = float(np.prod(geometry.spacing_xyz))
    regions, count = ndimage.label(values >= level)
    findings = Findings(geometry=geometry, shape_zyx=probability.spatial_shape)
    if count == 0:
        return findings, np.zeros(values.shape, dtype=np.int32)
    # the regions' statistics from their voxels alone (a small share of the grid): scipy's
    # ndimage.maximum sorts the whole volume, seconds on a 300 x 512 x 512 CT
    flat = np.flatnonzero(regions)
    numbers = regions.ravel()[flat]
    region_values = values.ravel()[flat].astype(np.float64)
    peaks = np.full(count + 1, -np.inf)
    np.maximum.at(peaks, numbers, region_values)
    peaks = peaks[1:]
    sizes = np.bincount(numbers, minlength=count + 1)[1:].astype(float)

    def region_sums(weights) -> np.ndarray:
        return np.bincount(numbers, weights=weights, minlength=count + 1)[1:]

    mass = region_sums(region_values)  # the probability-weighted centroid, as ndimage.center_of_mass
    centres = np.column_stack([region_sums(axis * region_values) / mass
                               for axis in np.unravel_index(flat, values.shape)]).reshape(count, values.ndim)
    means = (region_sums(intensity.array.ravel()[flat].astype(np.float64)) / sizes if intensity is not None
             else [None] * count)
    boxes = ndimage.find_objects(regions)
    inside = np.ones(count)
    if within is not None:
        within = np.asarray(within, bool)
        inside = region_sums(within.ravel()[flat].astype(np.float64)) / sizes
        if closing_mm > 0:
            spacing_zyx = tuple(float(v) for v in geometry.spacing_xyz[::-1])[-values.ndim:]
            for k in np.flatnonzero((inside < 0.5) & (peaks >= threshold)):
                inside[k] = inside_closed_mask(within, regions, k + 1, boxes[k], closing_mm, spacing_zyx)
    candidates = []
    for k in range(count):
        volume = float(sizes[k]) * voxel_mm3
        diameter = equivalent_diameter_mm(volume, values.ndim)
        if peaks[k] < threshold or diameter < min_diameter or inside[k] < 0.5:
            continue
        candidates.append((float(peaks[k]), k))
    candidates.sort(key=lambda item: -item[0])
    if len(candidates) > max_findings:  # said, not silent: a segmentation loses regions here
        findings.provenance["over_max_findings"] = len(candidates) - max_findings
    relabel = np.zeros(count + 1, dtype=np.int32)  # region number -> finding id (0: dropped)
    for new_id, (peak, k) in enumerate(candidates[:max_findings], start=1):
        box = boxes[k]
        relabel[k + 1] = new_id
        findings.add(Finding(
            id=new_id,
            label=label,
            probability=peak,
            centre_world_mm=tuple(geometry.index_to_world(centres[k])),
            centre_index_zyx=tuple(centres[k]),
            diameter_mm=equivalent_diameter_mm(float(sizes[k]) * voxel_mm3, values.ndim),
            volume_mm3=float(sizes[k]) * voxel_mm3,
            mean_hu=None if means[k] is None else float(means[k]),
            bbox_index_zyx=(tuple(s.start for s in box), tuple(s.stop for s in box)),
            mask_value=new_id,
            scores={"cnn": peak},
        ))
    return findings, relabel[regions]


def decode_classes(
    maps: list[tuple[MedicalImage, str]],
    intensity: MedicalImage | None,
    decoding: dict[str, Any],
    within: np.ndarray | None = None,
) -> tuple[Findings, np.ndarray]:
    """:func:`decode_components` of each class's probability map (``(map, class label)``), as
    one table: ids 1..N by decreasing probability over all classes, ``max_findings`` over all
    of them, one label map (value = finding id).  The maps must not overlap above the mask
    level (a softmax model's maps restricted to the voxels where each class wins)."""
    if len(maps) == 1:
        return decode_components(maps[0][0], intensity, decoding, label=maps[0][1], within=within)
    max_findings = int(decoding.get("max_findings", 100))
    # each class's own best max_findings hold every finding of the best max_findings of all
    parts = [decode_components(values, intensity, decoding, label=label, within=within) for values, label in maps]
    ranked = sorted(((finding, index) for index, (found, _) in enumerate(parts) for finding in found),
                    key=lambda item: -item[0].probability)
    findings = Findings(geometry=maps[0][0].geometry, shape_zyx=maps[0][0].spatial_shape)
    over = sum(found.provenance.get("over_max_findings", 0) for found, _ in parts) + max(0, len(ranked) - max_findings)
    if over:
        findings.provenance["over_max_findings"] = over
    relabels = [np.zeros(len(found) + 1, dtype=np.int32) for found, _ in parts]
    for new_id, (finding, index) in enumerate(ranked[:max_findings], start=1):
        relabels[index][finding.mask_value] = new_id
        finding.id = finding.mask_value = new_id
        findings.add(finding)
    label_map = np.zeros(maps[0][0].spatial_shape, dtype=np.int32)
    for (_, found_map), relabel in zip(parts, relabels):
        mapped = relabel[found_map]
        label_map[mapped > 0] = mapped[mapped > 0]
    return findings, label_map
