"""Findings (and a model's masks and heatmap) <-> napari layers: the one adapter both ways.

Every layer made here carries its image's transform (``Geometry.napari_transform``), so napari
world = LPS mm in (z, y, x) order, and ``metadata["medcad"]`` naming its role, the model and
the source layer.  The Points layer also keeps the findings it was made from; the way back
(:func:`findings_from_points`) compares the layer with them, so a reader's moves, additions,
deletions and status changes come back as Findings, whatever napari tool made them.  Keeping
these layers in step with a review session, action by action, is ``review_sync``'s job.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..core.findings import Finding, Findings, Status
from ..core.image import Geometry, MedicalImage, lps_to_napari_world, napari_world_to_lps
from .layers import META_KEY, affine_from_transform, labels_layer_data, layer_metadata

ROLE_POINTS = "findings_points"
ROLE_LABELS = "findings_labels"
ROLE_BOXES = "findings_boxes"
ROLE_HEATMAP = "findings_heatmap"
ROLES = (ROLE_HEATMAP, ROLE_LABELS, ROLE_BOXES, ROLE_POINTS)  # bottom to top
#: set (True) in a findings Points layer's ``metadata["medcad"]`` by whoever replaced edited
#: findings with the reader's consent (the Inference widget): the Review widget starts their
#: review over (the saved one is kept aside)
REPLACES_REVIEW = "replaces_review"
#: a point further than this from where the model put it was moved by the reader
MOVED_TOLERANCE_MM = 1e-3
#: napari colormaps: points by probability, heatmap
PROBABILITY_COLORMAP = "plasma"
HEATMAP_COLORMAP = "inferno"
#: on a 3-D image with more findings than this, the boxes layer and the points' id labels are
#: left out: napari's Shapes layer copies every shape's vertices (and redraws its thumbnail) on
#: each slice change, and text costs a third of every canvas repaint; with thousands of findings
#: both make each review step slow (see benchmarks/bench_review_gui.py) while the points (sized
#: to the diameter, drawn on the slices the nodule spans), the masks and the table show them
MANY_FINDINGS_3D = 1000
FEATURE_COLUMNS = ("id", "label", "probability", "diameter_mm", "volume_mm3", "mean_hu", "status", "source", "note")


def _info(role: str, image: MedicalImage, model: str, model_version: str, source_layer: str, **extra) -> dict:
    return layer_metadata(image, role=role, model=model, model_version=model_version, source_layer=source_layer,
                          edited=False, **extra)


def findings_count(number: int) -> str:
    """'1 finding', '3 findings': how the widgets say how many there are."""
    return f"{number} finding" + ("" if number == 1 else "s")


def role_of(layer) -> str | None:
    """The findings role of a layer made here (None for any other layer)."""
    info = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
    return info.get("role") if info.get("role") in ROLES else None


def features_of(findings: Iterable[Finding]):
    """The findings' table as napari features (one row per point)."""
    import pandas as pd

    rows = [{
        "id": f.id, "label": f.label, "probability": f.probability, "diameter_mm": f.diameter_mm,
        "volume_mm3": np.nan if f.volume_mm3 is None else f.volume_mm3,
        "mean_hu": np.nan if f.mean_hu is None else f.mean_hu,
        "status": f.status.value, "source": f.source, "note": f.note,
    } for f in findings]
    table = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    return table.astype({"id": int, "probability": float, "diameter_mm": float})


def _inplane_spacing(image: MedicalImage) -> float:
    """mm per data pixel on screen: napari sizes points in data units of the displayed plane."""
    return float(np.mean(image.geometry.spacing_zyx[-2:]))


def _box_corners(finding: Finding, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) voxel-edge corners in index (z, y, x): the finding's box, or its sphere's bounds."""
    if finding.bbox_index_zyx is not None:
        start, stop = finding.bbox_index_zyx
        return np.asarray(start, float) - 0.5, np.asarray(stop, float) - 0.5
    centre = geometry.world_to_index(finding.centre_world_mm)
    half = max(finding.diameter_mm, 1e-3) / 2 / np.asarray(geometry.spacing_zyx)
    return centre - half, centre + half


def box_rectangles(findings: Iterable[Finding], geometry: Geometry,
                   shape_zyx: Sequence[int]) -> tuple[list[np.ndarray], list[int]]:
    """One rectangle (index coordinates) around each finding, in 3-D on the slice of its centre;
    returns the rectangles and their finding ids.

    One per finding rather than one per slice the box spans: napari re-meshes every rectangle of
    a Shapes layer on each slice change, and 5,000 findings spanning ~9 slices each made 46,000
    rectangles and a 290 ms slice change.  The point (drawn on the slices the nodule spans) and
    the mask show the extent through the slices."""
    rectangles, ids = [], []
    for finding in findings:
        low, high = _box_corners(finding, geometry)
        (y0, x0), (y1, x1) = low[-2:], high[-2:]
        plane = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])
        if len(low) == 3:
            centre_z = float(geometry.world_to_index(finding.centre_world_mm)[0])
            top = (shape_zyx[0] - 1) if len(shape_zyx) else centre_z
            plane = np.column_stack([np.full(4, float(np.clip(round(centre_z), 0, max(top, 0)))), plane])
        rectangles.append(plane)
        ids.append(finding.id)
    return rectangles, ids


def _compact_labels(array: np.ndarray) -> np.ndarray:
    """uint8 when the ids fit (napari builds a uint16 Labels layer ~80x slower: a GUI stall)."""
    if array.dtype == np.uint8:
        return array
    top = int(array.max()) if array.size else 0
    return array.astype(np.uint8 if top < 256 else np.int32)


def findings_layer_data(
    findings: Findings,
    image: MedicalImage,
    *,
    labels: MedicalImage | None = None,
    probability: MedicalImage | None = None,
    model: str = "",
    model_version: str = "",
    source_layer: str = "",
    show_heatmap: bool = False,
    details: bool | None = None,
) -> list[tuple[Any, dict, str]]:
    """LayerDataTuples, bottom to top: heatmap, masks, boxes, points; all on ``image``'s grid.

    ``details``: whether to make the boxes layer and label the points with their ids; by default
    on 2-D images, and on 3-D ones with at most ``MANY_FINDINGS_3D`` findings.
    """
    import pandas as pd

    source = source_layer or image.name
    transform = image.geometry.napari_transform()
    meta = {"model": model, "model_version": model_version, "source_layer": source}
    layers: list[tuple[Any, dict, str]] = []

    if probability is not None:
        layers.append((np.asarray(probability.array, dtype=np.float32), {
            "name": f"{source} probability", "colormap": HEATMAP_COLORMAP, "blending": "additive",
            "opacity": 0.6, "contrast_limits": (0.0, 1.0), "visible": bool(show_heatmap),
            "metadata": _info(ROLE_HEATMAP, probability, **meta), **transform,
        }, "image"))

    if labels is not None:
        layers.append(labels_layer_data(
            _compact_labels(np.asarray(labels.array)), labels, f"{source} nodule masks", opacity=0.5,
            metadata=_info(ROLE_LABELS, labels, **meta),
        ))

    if details is None:
        details = image.ndim == 2 or len(findings) <= MANY_FINDINGS_3D
    if details:
        rectangles, box_ids = box_rectangles(findings, image.geometry, image.spatial_shape)
        layers.append((rectangles, {
            "name": f"{source} boxes", "ndim": image.ndim, "shape_type": "rectangle", "edge_color": "yellow",
            "face_color": "transparent", "edge_width": 0.6, "features": pd.DataFrame({"id": np.asarray(box_ids, int)}),
            "metadata": _info(ROLE_BOXES, image, **meta), **transform,
        }, "shapes"))

    centres = np.array([image.world_to_index(f.centre_world_mm) for f in findings]).reshape(-1, image.ndim)
    spacing = _inplane_spacing(image)
    sizes = point_sizes(findings, spacing)
    layers.append((centres, {
        "name": f"{source} findings", "ndim": image.ndim, "size": sizes if len(sizes) else 10.0,
        "features": features_of(findings), "face_color": "probability", "face_colormap": PROBABILITY_COLORMAP,
        "face_contrast_limits": (0.0, 1.0), "border_color": "white", "border_width": 0.08, "opacity": 0.55,
        **({"text": {"string": "{id}", "color": "white", "size": 9, "anchor": "upper_left"}} if details else {}),
        "projection_mode": "rescale_spherical",  # with thick slices a point shrinks like the nodule
        "metadata": _info(ROLE_POINTS, image, findings=findings.to_dict(), **meta), **transform,
    }, "points"))
    return layers


def result_layer_data(result, image: MedicalImage, source_layer: str = "", show_heatmap: bool = False):
    """``findings_layer_data`` for a core ``ModelResult`` (findings, masks, heatmap, report)."""
    model = result.report.get("model", {}) if isinstance(result.report, dict) else {}
    return findings_layer_data(
        result.findings, image, labels=result.labels, probability=result.probability,
        model=str(model.get("name", result.findings.provenance.get("model", ""))),
        model_version=str(model.get("version", result.findings.provenance.get("model_version", ""))),
        source_layer=source_layer, show_heatmap=show_heatmap,
    )


def add_findings_layers(viewer, layer_data: Sequence[tuple[Any, dict, str]]) -> list:
    """Add the layers to ``viewer`` and watch them for the reader's edits; returns them."""
    added = []
    for data, kwargs, kind in layer_data:
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        if kind in ("points", "shapes"):
            layer.feature_defaults = _added_defaults(layer)
        watch_edits(layer)
        added.append(layer)
    return added


def _added_defaults(layer):
    """What a point or box the reader adds starts with: no model id, status 'added'."""
    defaults = layer.feature_defaults.copy()
    for column, value in (("id", 0), ("probability", 1.0), ("status", Status.ADDED.value), ("source", "reader"),
                          ("note", ""), ("volume_mm3", np.nan), ("mean_hu", np.nan)):
        if column in defaults:
            defaults[column] = value
    return defaults


def watch_edits(layer) -> None:
    """Mark the layer as edited when the reader paints, moves, adds or deletes in it."""

    def mark(event=None):
        info = layer.metadata.get(META_KEY)
        if isinstance(info, dict):
            info["edited"] = True

    role = role_of(layer)
    if role == ROLE_LABELS:
        layer.events.paint.connect(mark)
    elif role in (ROLE_POINTS, ROLE_BOXES):
        layer.events.data.connect(mark)
        layer.events.features.connect(mark)


def findings_layers_of(layers: Iterable, source_layer: str) -> list:
    """Our findings layers made from the layer named ``source_layer``."""
    return [layer for layer in layers
            if role_of(layer) and layer.metadata[META_KEY].get("source_layer") == source_layer]


def data_to_world_mm(layer, data: np.ndarray) -> np.ndarray:
    """Layer data coordinates -> LPS (x, y, z) mm through the layer's own transform."""
    matrix = layer_matrix(layer)
    data = np.asarray(data, dtype=float).reshape(-1, layer.ndim)
    world_zyx = data @ matrix[:-1, :-1].T + matrix[:-1, -1]
    return napari_world_to_lps(world_zyx)


def base_findings(points_layer) -> Findings:
    """The findings the Points layer was made from (empty ones for a Points layer made by hand)."""
    info = points_layer.metadata.get(META_KEY, {}) if isinstance(points_layer.metadata, dict) else {}
    data = info.get("findings")
    return Findings.from_dict(data) if data else Findings()


def findings_from_points(points_layer, base: Findings | None = None) -> Findings:
    """The findings as the reader left them in ``points_layer``.

    A point keeps its finding (by the ``id`` feature, first point wins) with the layer's
    position; a moved one becomes ``edited``; a point with no known id is a reader's ``added``
    finding (diameter from its size); findings whose point was deleted are left out.  A status
    set in the features table (accepted, rejected...) is kept.
    """
    base = base_findings(points_layer) if base is None else base
    out = Findings(geometry=base.geometry, shape_zyx=base.shape_zyx, image_signature=base.image_signature,
                   provenance=dict(base.provenance))
    known = {f.id: f for f in base}
    features = points_layer.features
    worlds = data_to_world_mm(points_layer, points_layer.data)
    sizes = np.broadcast_to(np.asarray(points_layer.size, dtype=float), (len(worlds),))
    spacing = plane_spacing(points_layer)
    seen: set[int] = set()
    added = []
    for row, world in enumerate(worlds):
        raw_id = features["id"].iloc[row] if "id" in features else None
        finding_id = int(raw_id) if raw_id is not None and np.isfinite(raw_id) else 0
        status = str(features["status"].iloc[row]) if "status" in features else ""
        index = tuple(base.world_to_index(world)) if base.geometry is not None else ()
        if finding_id in known and finding_id not in seen:
            seen.add(finding_id)
            original = known[finding_id]
            finding = Finding.from_dict(original.to_dict())
            moved = float(np.linalg.norm(np.asarray(world) - np.asarray(original.centre_world_mm))) > MOVED_TOLERANCE_MM
            if moved:
                finding.centre_world_mm = tuple(float(v) for v in world)
                finding.centre_index_zyx = tuple(float(v) for v in index)
                finding.bbox_index_zyx = None  # the model's box no longer surrounds it
                finding.status = Status.EDITED
            if status and status != original.status.value and status in {s.value for s in Status}:
                finding.status = Status(status)
            if "note" in features and isinstance(features["note"].iloc[row], str):
                finding.note = features["note"].iloc[row]
            out.add(finding)
        else:
            added.append((row, world, index))
    label = next((f.label for f in base), "nodule")
    for row, world, index in added:
        out.add(Finding(
            id=max(out.next_id(), base.next_id()), label=label, probability=1.0,
            centre_world_mm=tuple(float(v) for v in world), centre_index_zyx=index,
            diameter_mm=float(sizes[row]) * spacing, status=Status.ADDED, source="reader",
        ))
    return out


def findings_changed(points_layer) -> bool:
    """True if the reader moved, added, deleted or re-classified any finding in the layer."""
    base = base_findings(points_layer)
    now = findings_from_points(points_layer, base)
    if len(now) != len(base):
        return True
    return any(a.id != b.id or a.status != b.status
               or np.linalg.norm(np.subtract(a.centre_world_mm, b.centre_world_mm)) > MOVED_TOLERANCE_MM
               for a, b in zip(sorted(now, key=lambda f: f.id), sorted(base, key=lambda f: f.id)))


def layers_edited(layers: Iterable) -> bool:
    """True if the reader changed any of these findings layers (points, masks or boxes)."""
    for layer in layers:
        info = layer.metadata.get(META_KEY, {})
        if role_of(layer) == ROLE_POINTS and findings_changed(layer):
            return True
        if role_of(layer) in (ROLE_LABELS, ROLE_BOXES) and info.get("edited"):
            return True
    return False


# layer transforms ------------------------------------------------------------------------------
def layer_matrix(layer) -> np.ndarray:
    return affine_from_transform(layer.ndim, scale=layer.scale, translate=layer.translate, rotate=layer.rotate,
                                 shear=layer.shear, affine=layer.affine.affine_matrix)


def world_mm_to_layer_data(layer, world_xyz) -> np.ndarray:
    """LPS (x, y, z) mm -> the layer's data coordinates (inverse of its own transform)."""
    matrix = np.linalg.inv(layer_matrix(layer))
    world_zyx = lps_to_napari_world(np.asarray(world_xyz, dtype=float).reshape(-1, layer.ndim))
    return world_zyx @ matrix[:-1, :-1].T + matrix[:-1, -1]


def point_sizes(findings, mm_per_unit: float) -> np.ndarray:
    """Points layer sizes (data units) of findings: their diameter, at least 3 units so a tiny
    finding stays visible."""
    return np.array([max(f.diameter_mm / mm_per_unit, 3.0) for f in findings], dtype=float)


def plane_spacing(layer) -> float:
    """mm per data unit in the displayed plane (napari sizes points in data units)."""
    return float(np.mean(np.linalg.norm(layer_matrix(layer)[:-1, :-1], axis=0)[-2:]))
