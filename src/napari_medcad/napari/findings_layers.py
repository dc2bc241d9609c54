"""Findings (and a model's masks and heatmap) <-> napari layers: the one adapter both ways.

Every layer made here carries its image's transform (``Geometry.napari_transform``), so napari
world = LPS mm in (z, y, x) order, and ``metadata["medcad"]`` naming its role, the model and
the source layer.  The Points layer also keeps the findings it was made from; the way back
(:func:`findings_from_points`) compares the layer with them, so a reader's moves, additions,
deletions and status changes come back as Findings, whatever napari tool made them.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..core.findings import Finding, Findings, Status
from ..core.image import MedicalImage, lps_to_napari_world, napari_world_to_lps
from .layers import META_KEY, affine_from_transform, labels_layer_data, layer_metadata

ROLE_POINTS = "findings_points"
ROLE_LABELS = "findings_labels"
ROLE_BOXES = "findings_boxes"
ROLE_HEATMAP = "findings_heatmap"
ROLES = (ROLE_HEATMAP, ROLE_LABELS, ROLE_BOXES, ROLE_POINTS)  # bottom to top
#: a point further than this from where the model put it was moved by the reader
MOVED_TOLERANCE_MM = 1e-3
#: napari colormaps: points by probability, heatmap
PROBABILITY_COLORMAP = "plasma"
HEATMAP_COLORMAP = "inferno"
FEATURE_COLUMNS = ("id", "label", "probability", "diameter_mm", "volume_mm3", "mean_hu", "status", "source", "note")


def _info(role: str, image: MedicalImage, model: str, model_version: str, source_layer: str, **extra) -> dict:
    return layer_metadata(image, role=role, model=model, model_version=model_version, source_layer=source_layer,
                          edited=False, **extra)


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


def _in_plane_spacing(image: MedicalImage) -> float:
    """mm per data pixel on screen: napari sizes points in data units of the displayed plane."""
    return float(np.mean(image.geometry.spacing_zyx[-2:]))


def _box_corners(finding: Finding, image: MedicalImage) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) voxel-edge corners in index (z, y, x): the finding's box, or its sphere's bounds."""
    if finding.bbox_index_zyx is not None:
        start, stop = finding.bbox_index_zyx
        return np.asarray(start, float) - 0.5, np.asarray(stop, float) - 0.5
    centre = image.world_to_index(finding.centre_world_mm)
    half = max(finding.diameter_mm, 1e-3) / 2 / np.asarray(image.geometry.spacing_zyx)
    return centre - half, centre + half


def box_rectangles(findings: Findings, image: MedicalImage) -> tuple[list[np.ndarray], list[int]]:
    """Rectangles (index coordinates) around each finding: in 3-D one per slice it spans, so the
    box is seen on every slice of the nodule; returns the rectangles and their finding ids."""
    rectangles, ids = [], []
    for finding in findings:
        low, high = _box_corners(finding, image)
        (y0, x0), (y1, x1) = low[-2:], high[-2:]
        plane = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])
        if image.ndim == 2:
            rectangles.append(plane)
            ids.append(finding.id)
            continue
        first = max(0, int(np.ceil(low[0])))
        last = min(image.spatial_shape[0] - 1, int(np.floor(high[0])))
        for z in range(first, max(first, last) + 1):
            rectangles.append(np.column_stack([np.full(4, float(z)), plane]))
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
) -> list[tuple[Any, dict, str]]:
    """LayerDataTuples, bottom to top: heatmap, masks, boxes, points; all on ``image``'s grid."""
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

    rectangles, box_ids = box_rectangles(findings, image)
    layers.append((rectangles, {
        "name": f"{source} boxes", "ndim": image.ndim, "shape_type": "rectangle", "edge_color": "yellow",
        "face_color": "transparent", "edge_width": 0.6, "features": pd.DataFrame({"id": np.asarray(box_ids, int)}),
        "metadata": _info(ROLE_BOXES, image, **meta), **transform,
    }, "shapes"))

    centres = np.array([image.world_to_index(f.centre_world_mm) for f in findings]).reshape(-1, image.ndim)
    spacing = _in_plane_spacing(image)
    sizes = np.array([max(f.diameter_mm / spacing, 3.0) for f in findings])
    layers.append((centres, {
        "name": f"{source} findings", "ndim": image.ndim, "size": sizes if len(sizes) else 10.0,
        "features": features_of(findings), "face_color": "probability", "face_colormap": PROBABILITY_COLORMAP,
        "face_contrast_limits": (0.0, 1.0), "border_color": "white", "border_width": 0.08, "opacity": 0.55,
        "text": {"string": "{id}", "color": "white", "size": 9, "anchor": "upper_left"},
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
        if kind == "points":
            layer.feature_defaults = _added_defaults(layer)
        watch_edits(layer)
        added.append(layer)
    return added


def _added_defaults(layer):
    """What a point the reader adds starts with: no model id, status 'added'."""
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


def _data_to_world_mm(layer, data: np.ndarray) -> np.ndarray:
    """Layer data coordinates -> LPS (x, y, z) mm through the layer's own transform."""
    matrix = _layer_matrix(layer)
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
    worlds = _data_to_world_mm(points_layer, points_layer.data)
    sizes = np.broadcast_to(np.asarray(points_layer.size, dtype=float), (len(worlds),))
    spacing = _plane_spacing(points_layer)
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


# review: the Points / Labels layers follow a ReviewSession, and the reader's edits come back --------
#: border colour per status, so a decision is visible on the image (face stays the probability)
STATUS_COLORS = {
    Status.PENDING: (1.0, 1.0, 1.0, 1.0), Status.ACCEPTED: (0.2, 1.0, 0.2, 1.0),
    Status.REJECTED: (1.0, 0.15, 0.15, 1.0), Status.EDITED: (0.2, 0.85, 1.0, 1.0),
    Status.ADDED: (1.0, 0.65, 0.0, 1.0),
}
#: rejected findings stay drawn (hard negatives) but hollow: no face, red ring
REJECTED_FACE = (0.0, 0.0, 0.0, 0.0)


def label_value_of(finding: Finding) -> int | None:
    """The finding's value in the label map: its ``mask_value``, else a model finding's id (as
    inference and `predict` write masks); None for a reader's point without a mask."""
    if finding.mask_value is not None:
        return int(finding.mask_value)
    return int(finding.id) if finding.source == "model" else None


def _layer_matrix(layer) -> np.ndarray:
    return affine_from_transform(layer.ndim, scale=layer.scale, translate=layer.translate, rotate=layer.rotate,
                                 shear=layer.shear, affine=layer.affine.affine_matrix)


def world_mm_to_layer_data(layer, world_xyz) -> np.ndarray:
    """LPS (x, y, z) mm -> the layer's data coordinates (inverse of its own transform)."""
    matrix = np.linalg.inv(_layer_matrix(layer))
    world_zyx = lps_to_napari_world(np.asarray(world_xyz, dtype=float).reshape(-1, layer.ndim))
    return world_zyx @ matrix[:-1, :-1].T + matrix[:-1, -1]


def _plane_spacing(layer) -> float:
    """mm per data unit in the displayed plane (napari sizes points in data units)."""
    return float(np.mean(np.linalg.norm(_layer_matrix(layer)[:-1, :-1], axis=0)[-2:]))


def point_colors(findings: Sequence[Finding]) -> tuple[np.ndarray, np.ndarray]:
    """(face, border) RGBA per finding: face by probability, border by status, rejected hollow."""
    from napari.utils.colormaps import ensure_colormap

    probabilities = np.array([f.probability for f in findings], dtype=float)
    face = np.asarray(ensure_colormap(PROBABILITY_COLORMAP).map(np.clip(probabilities, 0, 1)), float).reshape(-1, 4)
    border = np.array([STATUS_COLORS[f.status] for f in findings], dtype=float).reshape(-1, 4)
    rejected = np.array([f.status == Status.REJECTED for f in findings], dtype=bool)
    face[rejected] = REJECTED_FACE
    return face, border


def show_findings_in_points(points_layer, findings: Sequence[Finding]) -> None:
    """Make ``points_layer`` show exactly ``findings``, in their order (row i = finding i).

    Rejected findings are kept, hollow with a red ring: a deleted model finding is a hard
    negative, and the reader sees it was decided rather than lost.
    """
    findings = list(findings)
    ndim = points_layer.ndim
    centres = np.array([f.centre_world_mm for f in findings], dtype=float).reshape(-1, ndim)
    spacing = _plane_spacing(points_layer)
    sizes = np.array([max(f.diameter_mm / spacing, 3.0) for f in findings], dtype=float)
    face, border = point_colors(findings)
    points_layer.selected_data = set()
    points_layer.data = world_mm_to_layer_data(points_layer, centres)
    points_layer.features = features_of(findings)
    if len(findings):
        points_layer.size = sizes
        points_layer.face_color = face
        points_layer.border_color = border


def show_finding_in_points(points_layer, row: int, finding: Finding) -> None:
    """Cheap update of one point's table row and colours (status, class, note changed)."""
    features = points_layer.features
    for column, value in (("label", finding.label), ("status", finding.status.value), ("note", finding.note)):
        if column in features:
            features.loc[row, column] = value
    face, border = point_colors([finding])
    face_colors = np.array(points_layer.face_color, copy=True)
    border_colors = np.array(points_layer.border_color, copy=True)
    face_colors[row], border_colors[row] = face[0], border[0]
    points_layer.face_color = face_colors
    points_layer.border_color = border_colors


def points_edits(points_layer, findings: Sequence[Finding]):
    """What the reader did in ``points_layer`` relative to ``findings``.

    Returns ``(moved, added, deleted)``: ``[(id, centre_world_mm)]`` for points of a known
    finding that are elsewhere now, ``[(centre_world_mm, diameter_mm)]`` for points with no (or
    a repeated, i.e. copied) finding id, and the ids of findings whose point is gone.
    """
    known = {f.id: f for f in findings}
    count = len(points_layer.data)
    worlds = _data_to_world_mm(points_layer, points_layer.data) if count else np.zeros((0, points_layer.ndim))
    features = points_layer.features
    raw_ids = np.asarray(features["id"], dtype=float) if "id" in features and len(features) == count \
        else np.zeros(count)
    sizes = np.broadcast_to(np.asarray(points_layer.size, dtype=float), (count,))
    spacing = _plane_spacing(points_layer)
    moved, added, seen = [], [], set()
    for row in range(count):
        finding_id = int(raw_ids[row]) if np.isfinite(raw_ids[row]) else 0
        if finding_id in known and finding_id not in seen:
            seen.add(finding_id)
            if np.linalg.norm(worlds[row] - np.asarray(known[finding_id].centre_world_mm)) > MOVED_TOLERANCE_MM:
                moved.append((finding_id, tuple(float(v) for v in worlds[row])))
        else:
            added.append((tuple(float(v) for v in worlds[row]), float(sizes[row]) * spacing))
    deleted = [finding_id for finding_id in known if finding_id not in seen]
    return moved, added, deleted


def _atom_parts(atom):
    """(region slices, old values, new values) of one napari Labels paint record."""
    if hasattr(atom, "slice_key"):  # napari's masked atom: a bounding box (and a mask in it)
        return tuple(atom.slice_key), np.asarray(atom.old_values), np.atleast_1d(np.asarray(atom.new_value))
    indices, old_values, new_values = atom  # data_setitem: fancy indices, values before, value(s) after
    region = tuple(slice(int(np.min(i)), int(np.max(i)) + 1) for i in indices) if len(indices[0]) else None
    return region, np.asarray(old_values), np.unique(np.asarray(new_values))


def labels_paint_changes(labels_layer, atoms, known_values: Iterable[int]):
    """What paint/erase strokes in ``labels_layer`` did to the findings' masks (call it after
    napari has written the voxels: it emits ``paint`` before ``data_setitem`` writes them).

    Returns ``(new_components, erased_values)``: for each painted value that no finding has,
    ``(value, centre_world_mm, volume_mm3, diameter_mm)`` (centroid and equivalent-sphere, or
    circle in 2-D, diameter of all its voxels); and the known values that no voxel holds any more.
    """
    known = set(int(v) for v in known_values)
    data = labels_layer.data
    ndim = labels_layer.ndim
    painted: dict[int, list] = {}
    touched: set[int] = set()
    for atom in atoms:
        region, old_values, new_values = _atom_parts(atom)
        touched.update(int(v) for v in np.unique(old_values))
        if region is None:
            continue
        for value in (int(v) for v in new_values):
            if value > 0 and value not in known:
                painted.setdefault(value, []).append(region)
    matrix = _layer_matrix(labels_layer)
    voxel_mm = abs(float(np.linalg.det(matrix[:-1, :-1])))
    new_components = []
    for value, regions in painted.items():
        low = [min(r[d].start or 0 for r in regions) for d in range(ndim)]
        high = [max(r[d].stop if r[d].stop is not None else data.shape[d] for r in regions) for d in range(ndim)]
        box = tuple(slice(a, b) for a, b in zip(low, high))
        where = np.argwhere(np.asarray(data[box]) == value)
        if not len(where):
            continue
        centroid = where.mean(axis=0) + np.asarray(low, float)
        volume = len(where) * voxel_mm
        diameter = (6 * volume / np.pi) ** (1 / 3) if ndim == 3 else 2 * np.sqrt(volume / np.pi)
        centre = _data_to_world_mm(labels_layer, centroid)[0]
        new_components.append((value, tuple(float(v) for v in centre), float(volume), float(diameter)))
    erased = [value for value in sorted(touched & known) if value > 0 and not np.any(np.asarray(data) == value)]
    return new_components, erased
