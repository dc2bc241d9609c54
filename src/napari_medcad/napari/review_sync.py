"""Keeps the findings layers in step with a ``ReviewSession``, and the reader's layer edits with it.

Session -> layers: a decision (accept, reject, class, note) touches one finding, so only that
point's colours and that box's edge are updated; napari rebuilds a whole layer's colours when
it is given a whole array, which with 5,000 findings costs more than the rest of a decision.
Adds, removals, moves and their undo rebuild the Points and boxes layers from the session.

Layers -> session: moving, deleting or adding a point, drawing, moving or resizing a box, and
every stroke in the Labels layer become session actions, read once napari has finished its own
event (a zero-delay timer, or at once when an action or undo comes first, so the history keeps
the order of the reader's gestures).  One gesture is one action (a session batch): deleting two
points, or a fill that gives a mask a new value (an added finding and a rejected one).  A stroke's
action carries the voxels it changed (``core.review.MaskPatch``), so it is saved with them; a
stroke that only trims or grows a finding's mask is a ``mask`` action on that finding.  Undo and
redo write those voxels back and forth, and opening a saved review writes its strokes into the
Labels layer again: the masks are as the reader left them.  The review owns undo on the Labels
layer (Ctrl+Z there is the review's), so napari's own Labels history is kept empty.

When a session action is refused (its save failed), the layers are rebuilt from the session and
a stroke's voxels are taken back, so what the reader sees is what was saved.  A flag keeps the
layer changes made here from being read back as the reader's edits.
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterable, Sequence

import numpy as np
from napari.utils.key_bindings import KeyCode, KeyMod
from qtpy.QtCore import QTimer

from ..core.errors import MedcadError
from ..core.findings import Finding, Status, equivalent_diameter_mm
from ..core.mask_patch import MaskPatch
from ..core.review import Action, ReviewSession
from .findings_layers import (
    box_rectangles,
    data_to_world_mm,
    features_of,
    layer_matrix,
    plane_spacing,
    point_sizes,
    world_mm_to_layer_data,
    MOVED_TOLERANCE_MM,
)
from .jobs import notify_error

#: border colour per status, so a decision is visible on the image (face stays the probability)
STATUS_COLORS = {
    Status.PENDING: (1.0, 1.0, 1.0, 1.0), Status.ACCEPTED: (0.2, 1.0, 0.2, 1.0),
    Status.REJECTED: (1.0, 0.15, 0.15, 1.0), Status.EDITED: (0.2, 0.85, 1.0, 1.0),
    Status.ADDED: (1.0, 0.65, 0.0, 1.0),
}
#: boxes: as the points, but a model's undecided box stays the yellow it was drawn in
BOX_COLORS = {**STATUS_COLORS, Status.PENDING: (1.0, 1.0, 0.0, 1.0)}
#: rejected findings stay drawn (hard negatives) but hollow: no face, red ring
REJECTED_FACE = (0.0, 0.0, 0.0, 0.0)
#: session actions that change what a finding is called or decided, not where it is
IN_PLACE = {"accept", "reject", "status", "label", "note", "mask"}
#: Labels layer -> the ``voxels`` of the session actions whose strokes it shows, in order (so a
#: layer given to a second ReviewLayers, or to another session, is brought to that session's
#: masks by undoing and redoing only the strokes that differ)
_SHOWN_STROKES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: boxes layer -> ({finding id: row}, the (n, 4, ndim) rectangles it was last given): a box edit
#: compares the layer with these at once instead of redrawing every finding's box to compare
_DRAWN_BOXES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def label_value_of(finding: Finding) -> int | None:
    """The finding's value in the label map: its ``mask_value``, else a model finding's id (as
    inference and `predict` write masks); None for a reader's point without a mask."""
    if finding.mask_value is not None:
        return int(finding.mask_value)
    return int(finding.id) if finding.source == "model" else None


def point_colors(findings: Sequence[Finding]) -> tuple[np.ndarray, np.ndarray]:
    """(face, border) RGBA per finding: face by probability, border by status, rejected hollow."""
    from napari.utils.colormaps import ensure_colormap

    from .findings_layers import PROBABILITY_COLORMAP

    probabilities = np.array([f.probability for f in findings], dtype=float)
    face = np.asarray(ensure_colormap(PROBABILITY_COLORMAP).map(np.clip(probabilities, 0, 1)), float).reshape(-1, 4)
    border = np.array([STATUS_COLORS[f.status] for f in findings], dtype=float).reshape(-1, 4)
    face[np.array([f.status == Status.REJECTED for f in findings], dtype=bool)] = REJECTED_FACE
    return face, border


def show_findings_in_points(points_layer, findings: Sequence[Finding]) -> None:
    """Make ``points_layer`` show exactly ``findings``, in their order (row i = finding i).

    Rejected findings are kept, hollow with a red ring: a deleted model finding is a hard
    negative, and the reader sees it was decided rather than lost.
    """
    findings = list(findings)
    ndim = points_layer.ndim
    centres = np.array([f.centre_world_mm for f in findings], dtype=float).reshape(-1, ndim)
    spacing = plane_spacing(points_layer)
    sizes = point_sizes(findings, spacing)
    face, border = point_colors(findings)
    points_layer.selected_data = set()
    points_layer.data = world_mm_to_layer_data(points_layer, centres)
    points_layer.features = features_of(findings)
    if len(findings):
        points_layer.size = sizes
        points_layer.face_color = face
        points_layer.border_color = border


def show_finding_in_points(points_layer, row: int, finding: Finding) -> None:
    """One point's table row, colours and size (a mask edit changes the diameter), touching only
    what changed.

    napari's colour setters validate the whole (5,000 x 4) array again before the points are
    redrawn; the layer's colour managers hold that array, so one row is written in place and the
    layer told (public setters when this napari has no such managers)."""
    features = points_layer.features
    for column, value in (("label", finding.label), ("status", finding.status.value), ("note", finding.note)):
        if column in features and features.at[row, column] != value:
            features.at[row, column] = value
    face, border = point_colors([finding])
    for name, manager, color in (("face_color", "_face", face[0]), ("border_color", "_border", border[0])):
        colors = getattr(points_layer, name)
        if np.allclose(colors[row], color):
            continue
        held = getattr(getattr(points_layer, manager, None), "colors", None)
        if held is colors and colors.flags.writeable:
            colors[row] = color
            getattr(points_layer.events, name)()
        else:  # pragma: no cover - another napari
            colors = np.array(colors, copy=True)
            colors[row] = color
            setattr(points_layer, name, colors)
    size = point_sizes([finding], plane_spacing(points_layer))[0]
    sizes = np.asarray(points_layer.size, dtype=float)
    if sizes.ndim == 1 and row < len(sizes) and not np.isclose(sizes[row], size):
        sizes = sizes.copy()
        sizes[row] = size
        points_layer.size = sizes


def select_point(points_layer, row: int) -> None:
    """Make ``row`` the selected point.  napari's ``selected_data`` setter also copies the point's
    colours, size and features into the layer's "current" values and their controls: with 5,000
    points three quarters of a selection's cost.  Replacing the selection and redrawing the
    highlight skips that (public setter when this napari lacks either)."""
    selection = points_layer.selected_data
    if hasattr(selection, "replace_selection") and hasattr(points_layer, "_set_highlight"):
        selection.replace_selection({row})
        points_layer._set_highlight()
    else:  # pragma: no cover - another napari
        points_layer.selected_data = {row}


def show_findings_in_boxes(boxes_layer, findings: Sequence[Finding], geometry, shape_zyx) -> None:
    """Make the boxes layer hold one rectangle per finding (row i = finding i), edged by status.

    The new rectangles are added before the old ones are removed: napari cannot add 2-D shapes
    to a Shapes layer emptied while the view is 3-D (its empty vertex array has three columns)."""
    rectangles, ids = box_rectangles(findings, geometry, shape_zyx)
    try:
        _DRAWN_BOXES[boxes_layer] = ({finding_id: row for row, finding_id in enumerate(ids)},
                                     np.asarray(rectangles, float).reshape(len(ids), 4, -1))
    except ValueError:  # rectangles of mixed dimensions: compared one by one
        _DRAWN_BOXES.pop(boxes_layer, None)
    colors = np.array([BOX_COLORS[f.status] for f in findings], float).reshape(-1, 4)
    old = boxes_layer.data
    features = boxes_layer.features
    same = (len(old) == len(rectangles) and "id" in features and list(features["id"]) == ids
            and (not rectangles or np.allclose(np.stack(old), np.stack(rectangles))))
    if same:  # only colours may differ (a resumed review): recolour those boxes alone
        stale = ~np.all(np.isclose(np.asarray(boxes_layer.edge_color), colors), axis=1)
        for row in np.flatnonzero(stale):
            show_finding_in_boxes(boxes_layer, int(row), findings[row])
        return
    boxes_layer.selected_data = set()
    width = float(boxes_layer.edge_width[0]) if len(old) else float(boxes_layer.current_edge_width)
    if rectangles:
        boxes_layer.add(rectangles, shape_type="rectangle", edge_width=width, edge_color=colors,
                        face_color="transparent")
    if len(old):
        boxes_layer.selected_data = set(range(len(old)))
        boxes_layer.remove_selected()
    boxes_layer.features = {"id": np.asarray(ids, int)}


def show_finding_in_boxes(boxes_layer, row: int, finding: Finding) -> None:
    """One box's edge colour.  napari's public setter recolours every shape in a Python loop
    (~5,000 calls); its shape list recolours one, so that is used when this napari has it."""
    color = np.asarray(BOX_COLORS[finding.status], float)
    if row >= boxes_layer.nshapes or np.allclose(boxes_layer.edge_color[row], color):
        return
    data_view = getattr(boxes_layer, "_data_view", None)
    if hasattr(data_view, "update_edge_color"):
        data_view.update_edge_color(row, color)
        boxes_layer.events.edge_color()
    else:  # pragma: no cover - another napari
        colors = np.array(boxes_layer.edge_color, copy=True)
        colors[row] = color
        boxes_layer.edge_color = colors


def points_edits(points_layer, findings: Sequence[Finding]):
    """What the reader did in ``points_layer`` relative to ``findings``.

    Returns ``(moved, added, deleted)``: ``[(id, centre_world_mm)]`` for points of a known
    finding that are elsewhere now, ``[(centre_world_mm, diameter_mm)]`` for points with no (or
    a repeated, i.e. copied) finding id, and the ids of findings whose point is gone.
    """
    known = {f.id: f for f in findings}
    count = len(points_layer.data)
    worlds = data_to_world_mm(points_layer, points_layer.data) if count else np.zeros((0, points_layer.ndim))
    sizes = np.broadcast_to(np.asarray(points_layer.size, dtype=float), (count,))
    spacing = plane_spacing(points_layer)
    kept, new_rows = rows_by_id(points_layer.features, count, known)
    moved = [(finding_id, tuple(float(v) for v in worlds[row])) for finding_id, row in kept.items()
             if np.linalg.norm(worlds[row] - np.asarray(known[finding_id].centre_world_mm)) > MOVED_TOLERANCE_MM]
    added = [(tuple(float(v) for v in worlds[row]), float(sizes[row]) * spacing) for row in new_rows]
    return moved, added, [finding_id for finding_id in known if finding_id not in kept]


def rows_by_id(features, count: int, known_ids) -> tuple[dict[int, int], list[int]]:
    """Which layer row holds which known finding (by the ``id`` feature), and the rows that are
    new: no known id, or a repeated one (napari copies the selected row's features to a new
    point or shape, so the first row of an id is its finding's)."""
    raw_ids = np.asarray(features["id"], dtype=float) if "id" in features and len(features) == count \
        else np.zeros(count)
    kept, new_rows = {}, []
    for row, value in enumerate(raw_ids):
        finding_id = int(value) if np.isfinite(value) else 0
        if finding_id in known_ids and finding_id not in kept:
            kept[finding_id] = row
        else:
            new_rows.append(row)
    return kept, new_rows


def atom_voxels(atom, shape) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """One napari Labels paint record as (voxel indices, values before, values after)."""
    if hasattr(atom, "slice_key"):  # napari's masked atom: a bounding box, and a mask in it
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(atom.slice_key, shape))
        mask = atom.mask if atom.mask is not None else np.ones(tuple(s.stop - s.start for s in box), bool)
        indices = tuple(axis + s.start for axis, s in zip(np.nonzero(mask), box))
        old = np.asarray(atom.old_values).reshape(-1) if atom.mask is not None else np.asarray(atom.old_values)[mask]
        return indices, old, np.full(len(old), atom.new_value, dtype=old.dtype)
    indices, old_values, new_values = atom  # data_setitem: fancy indices, values before, value(s) after
    indices = tuple(np.asarray(i).reshape(-1) for i in indices)
    old = np.asarray(old_values).reshape(-1)
    return indices, old, np.broadcast_to(np.asarray(new_values), old.shape).astype(old.dtype)


def stroke_patch(labels_layer, atoms) -> MaskPatch | None:
    """The voxels napari's paint records ``atoms`` (one gesture's, in order) changed; None if none."""
    return MaskPatch.of(atom_voxels(atom, labels_layer.data.shape) for atom in atoms)


def voxel_volume_mm3(labels_layer) -> float:
    """mm3 (mm2 in 2-D) of one voxel of the layer, from its data-to-world matrix."""
    return abs(float(np.linalg.det(layer_matrix(labels_layer)[:-1, :-1])))


def mask_changes(labels_layer, patch: MaskPatch, known_values: Iterable[int]):
    """What a stroke (its ``patch``, already in ``labels_layer``) did to the findings' masks.

    Returns ``(new_components, erased)``: for each painted value that no finding has,
    ``(value, centre_world_mm, volume_mm3, diameter_mm)`` (centroid and equivalent-sphere, or
    circle in 2-D, diameter of its voxels in the stroke's box); and the known values the stroke
    took voxels from that no voxel holds any more.
    """
    known = set(int(v) for v in known_values)
    data = labels_layer.data
    ndim = labels_layer.ndim
    region = np.asarray(data[patch.box])
    voxel_mm = voxel_volume_mm3(labels_layer)
    new_components = []
    for value in sorted({int(v) for v in np.unique(patch.after)} - known - {0}):
        where = np.argwhere(region == value)
        if not len(where):
            continue
        centroid = where.mean(axis=0) + np.asarray(patch.start, float)
        volume = len(where) * voxel_mm
        centre = data_to_world_mm(labels_layer, centroid)[0]
        new_components.append((value, tuple(float(v) for v in centre), float(volume),
                               equivalent_diameter_mm(volume, ndim)))
    # a value still in the stroke's box is not gone: only then is the whole layer searched
    erased = [value for value in sorted({int(v) for v in np.unique(patch.before)} & known)
              if value > 0 and not np.any(region == value) and not np.any(np.asarray(data) == value)]
    return new_components, erased


def mask_volume_mm3(labels_layer, patch: MaskPatch, finding: Finding) -> float:
    """``finding``'s mask volume once ``patch`` (already in ``labels_layer``) is applied: its
    volume before, plus the voxels the stroke gave its value, minus those it took.  Only a finding
    with no volume yet has the whole layer counted (a 300 x 512 x 512 layer takes 0.2 s)."""
    value = label_value_of(finding)
    voxel_mm3 = voxel_volume_mm3(labels_layer)
    if finding.volume_mm3 is None:
        return float(np.count_nonzero(np.asarray(labels_layer.data) == value)) * voxel_mm3
    gained = int(np.count_nonzero(patch.after == value)) - int(np.count_nonzero(patch.before == value))
    return max(0.0, float(finding.volume_mm3) + gained * voxel_mm3)


def _boxes_not_as_drawn(boxes_layer, data, kept: dict[int, int]) -> list[int]:
    """The ids of ``kept`` (finding id -> layer row) whose box may differ from the one last drawn
    for it: all of them when the layer's drawing is not known."""
    drawn = _DRAWN_BOXES.get(boxes_layer)
    if drawn is None or not kept or any(finding_id not in drawn[0] for finding_id in kept):
        return list(kept)
    ids = list(kept)
    try:
        now = np.asarray([data[kept[finding_id]] for finding_id in ids], float)
        before = drawn[1][[drawn[0][finding_id] for finding_id in ids]]
        same = np.all(np.isclose(now, before, rtol=0, atol=1e-6), axis=(1, 2)) if now.shape == before.shape else None
    except ValueError:  # boxes of different shapes now (a rectangle became a polygon)
        same = None
    return ids if same is None else [finding_id for finding_id, unchanged in zip(ids, same) if not unchanged]


def box_change(findings, finding: Finding, corners: np.ndarray, mm_per_unit: np.ndarray):
    """How the reader moved or resized ``finding``'s box (``corners``, index coordinates as
    ``box_rectangles`` draws them): None if it is where it is drawn, else ``(centre_world_mm,
    bbox_index_zyx or None, diameter_mm or None)``: a moved box moves the centre by as much (the
    session shifts the finding's box with it); a resized one also gives the new box (its extent
    across the slices kept) and, as a drawn box does, its mean side as the diameter."""
    drawn = box_rectangles([finding], findings.geometry, findings.shape_zyx)[0][0]
    if corners.shape != drawn.shape:
        return None
    if np.allclose(corners, drawn, rtol=0, atol=1e-6):
        return None
    shift = corners.mean(axis=0) - drawn.mean(axis=0)
    index = np.asarray(findings.world_to_index(finding.centre_world_mm), float) + shift
    centre = findings.index_to_world(index)
    size, drawn_size = np.ptp(corners, axis=0), np.ptp(drawn, axis=0)
    if np.allclose(size, drawn_size, rtol=0, atol=1e-6):
        return centre, None, None
    low, high = corners.min(axis=0), corners.max(axis=0)
    start = np.round(low + 0.5).astype(int)
    stop = np.maximum(np.round(high + 0.5).astype(int), start + 1)
    if finding.bbox_index_zyx is not None and len(start) == 3:  # the box is drawn on one slice: keep its depth
        step = int(round(shift[0]))
        start[0], stop[0] = finding.bbox_index_zyx[0][0] + step, finding.bbox_index_zyx[1][0] + step
    bbox = (tuple(int(v) for v in start), tuple(int(v) for v in stop)) if finding.bbox_index_zyx is not None else None
    diameter = float(np.mean((size * mm_per_unit)[-2:]))
    return centre, bbox, diameter


#: the keys napari's Labels layer binds to its own undo / redo (Cmd on macOS, Ctrl elsewhere)
UNDO_KEY = KeyMod.CtrlCmd | KeyCode.KeyZ
REDO_KEY = KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ


class ReviewLayers:
    """The Points (and boxes, and Labels) layers of one review, in both directions.

    ``on_edited(finding_id)`` is called after the reader's layer edits became session actions
    (the table must be rebuilt; ``finding_id`` is the one to show, or None);
    ``on_point_selected(finding_id)`` when the reader selects a single point on the canvas.
    ``undo`` / ``redo``: what Ctrl+Z / Ctrl+Shift+Z do on the canvas while the Labels layer is
    active.  Every stroke there is a review action with its voxels, so the review's undo takes
    back the reader's last stroke (or decision, whichever came last) and puts its voxels back;
    napari's own Labels undo would write voxels back without any event, so it is not used and
    its history is kept empty.
    """

    def __init__(self, session: ReviewSession, points, labels=None, boxes=None, *,
                 on_edited: Callable[[int | None], None], on_point_selected: Callable[[int], None],
                 new_label: Callable[[], str] = lambda: "nodule",
                 undo: Callable[[], None] | None = None, redo: Callable[[], None] | None = None):
        self.session, self.points, self.labels, self.boxes = session, points, labels, boxes
        self.on_edited, self.on_point_selected, self.new_label = on_edited, on_point_selected, new_label
        self._layer_keys = {UNDO_KEY: undo or session.undo, REDO_KEY: redo or session.redo}
        self.batch = False  # True while one layer edit becomes a session action
        self.rows: dict[int, int] = {}
        self._syncing = self._closed = False
        self._pending_points = self._pending_selection = self._pending_boxes = False
        self._pending_atoms: list = []
        session.listeners.append(self.on_action)
        session.before_action.append(self.flush)
        points.events.data.connect(self._on_points_data)
        points.selected_data.events.items_changed.connect(self._on_points_selection)
        if labels is not None:
            self._show_strokes()
            self._forget_napari_history()
            labels.events.paint.connect(self._on_paint)
        if boxes is not None:
            boxes.events.data.connect(self._on_boxes_data)
        # Ctrl+Z on the canvas is the review's undo while any of its layers is active (a layer's
        # keymap comes before napari's own, e.g. the Labels layer's paint history)
        self._keyed = [layer for layer in (points, labels, boxes) if layer is not None]
        for layer in self._keyed:
            for key, act in self._layer_keys.items():
                layer.bind_key(key, lambda layer, act=act: act(), overwrite=True)
        self.show_all()

    def disconnect(self) -> None:
        self._closed = True  # edits still queued (zero-delay timers) are dropped
        if self.on_action in self.session.listeners:
            self.session.listeners.remove(self.on_action)
        if self.flush in self.session.before_action:
            self.session.before_action.remove(self.flush)
        self.points.events.data.disconnect(self._on_points_data)
        self.points.selected_data.events.items_changed.disconnect(self._on_points_selection)
        if self.labels is not None:
            self.labels.events.paint.disconnect(self._on_paint)
        if self.boxes is not None:
            self.boxes.events.data.disconnect(self._on_boxes_data)
        for layer in self._keyed:
            for key in self._layer_keys:
                layer.bind_key(key, None)  # napari's own again

    # session -> layers -----------------------------------------------------------------------
    def _quietly(self, change, *args) -> None:
        self._syncing = True
        try:
            change(*args)
        finally:
            self._syncing = False

    def show_all(self) -> None:
        """Points and boxes rebuilt from the session (after adds, removals, moves, undo)."""
        items = self.session.findings.items
        self.rows = {f.id: row for row, f in enumerate(items)}
        self._quietly(show_findings_in_points, self.points, items)
        findings = self.session.findings
        if self.boxes is not None and findings.geometry is not None:
            self._quietly(show_findings_in_boxes, self.boxes, items, findings.geometry, findings.shape_zyx)

    def show_finding(self, finding: Finding) -> None:
        row = self.rows.get(finding.id)
        if row is None or row >= len(self.points.data):
            return
        self._quietly(show_finding_in_points, self.points, row, finding)
        if self.boxes is not None:
            self._quietly(show_finding_in_boxes, self.boxes, row, finding)

    def highlight(self, finding: Finding) -> None:
        """Select the finding's point and its mask's label value."""
        row = self.rows.get(finding.id)
        if row is not None and row < len(self.points.data) and set(self.points.selected_data) != {row}:
            self._quietly(select_point, self.points, row)
        value = label_value_of(finding)
        if self.labels is not None and value is not None and self.labels.selected_label != value:
            self._quietly(setattr, self.labels, "selected_label", value)

    def on_action(self, action: Action) -> None:
        """Session listener: write an undone or redone stroke's voxels; recolour one finding, or rebuild."""
        if action.voxels is not None and self.labels is not None:
            if not self.batch:  # the reader's own stroke is in the layer already
                self._write_strokes([action.voxels], undoing=action.kind.startswith("undo "))
            _SHOWN_STROKES[self.labels] = self._session_strokes()
        if self.batch:
            return
        if action.kind.removeprefix("undo ") in IN_PLACE and action.before is not None and action.after is not None:
            self.show_finding(self.session.findings[action.finding_id])
        else:
            self.show_all()

    def _session_strokes(self) -> list[dict]:
        return [action.voxels for action in self.session.history if action.voxels is not None]

    def _show_strokes(self) -> None:
        """Bring the Labels layer to the session's masks: the strokes it shows that the session
        has not are undone, the session's strokes it does not show yet are written (a reopened
        review's, on the model's masks)."""
        shown, wanted = _SHOWN_STROKES.get(self.labels, []), self._session_strokes()
        same = 0
        while same < min(len(shown), len(wanted)) and shown[same] == wanted[same]:
            same += 1
        if same < len(shown):
            self._write_strokes(list(reversed(shown[same:])), undoing=True)
        if same < len(wanted):
            self._write_strokes(wanted[same:], undoing=False)
        _SHOWN_STROKES[self.labels] = wanted

    def _write_strokes(self, strokes: Sequence[dict | MaskPatch], undoing: bool) -> None:
        """Write mask voxels into the Labels layer (not read back as the reader's strokes)."""
        try:
            for stroke in strokes:
                patch = stroke if isinstance(stroke, MaskPatch) else MaskPatch.from_dict(stroke)
                self._quietly(patch.apply, self.labels.data, undoing)
        except (MedcadError, ValueError, TypeError) as err:
            notify_error(err if isinstance(err, MedcadError) else MedcadError(f"mask edits not shown ({err})"))
        finally:
            self._quietly(self.labels.refresh)

    def _forget_napari_history(self) -> None:
        """The review owns undo on the Labels layer: napari's own history would replay strokes
        the review has undone or redone already, without telling it, so it is kept empty."""
        for name in ("_undo_history", "_redo_history"):
            history = getattr(self.labels, name, None)
            if hasattr(history, "clear"):
                history.clear()

    # layers -> session -----------------------------------------------------------------------
    def _later(self, flag: str, handler) -> None:
        """Run ``handler`` once after napari has finished the current edit (selection, refresh)."""
        if not getattr(self, flag):
            setattr(self, flag, True)
            QTimer.singleShot(0, lambda: self._closed or handler())

    def flush(self) -> None:
        """Read the layer edits still waiting for their timer now (the session calls this before
        any other action, undo or redo: the history keeps the order of the reader's gestures)."""
        if self._closed or self.batch:
            return
        if self._pending_atoms:
            self.sync_from_labels()
        if self._pending_points:
            self.sync_from_points()
        if self._pending_boxes:
            self.sync_from_boxes()

    def _on_points_data(self, event) -> None:
        if not self._syncing and str(getattr(event, "action", "")) in ("added", "removed", "changed"):
            self._later("_pending_points", self.sync_from_points)

    def _on_points_selection(self, *args) -> None:
        if not self._syncing:
            self._later("_pending_selection", self._selection_to_table)

    def _selection_to_table(self) -> None:
        self._pending_selection = False
        selected = list(self.points.selected_data)
        features = self.points.features
        if len(selected) != 1 or "id" not in features or selected[0] >= len(features):
            return
        finding_id = int(features["id"].iloc[selected[0]])
        if self.rows.get(finding_id) == selected[0]:
            self.on_point_selected(finding_id)

    def _run_batch(self, actions, voxels: MaskPatch | None = None) -> None:
        """Make the session actions of one layer edit as one (a session batch, with the stroke's
        ``voxels``), then rebuild the layers and the table.  If the session refuses them (a save
        failed) the error is shown once and the layers go back to what the session holds: the
        stroke's voxels are taken back out of the Labels layer."""
        last = None
        self.batch = True
        try:
            with self.session.batch(voxels):
                last = actions()
        except MedcadError as err:
            notify_error(err)
            last = None
            if voxels is not None and self.labels is not None:
                self._write_strokes([voxels], undoing=True)
        finally:
            self.batch = False
            self.show_all()
        self.on_edited(last)

    def sync_from_points(self) -> None:
        """Turn the reader's moves, deletions and additions in the Points layer into actions."""
        self._pending_points = False
        self._apply_edits(*points_edits(self.points, self.session.findings.items))

    def _apply_edits(self, moved, added, deleted) -> None:
        """Moves ``(id, centre[, bbox, diameter])``, additions ``(centre, diameter)`` and deletions
        as one action (see ``_run_batch``); deleting a model finding rejects it, so deleting a
        rejected one again does nothing."""
        if not (moved or added or deleted):
            return

        def actions():
            last = None
            for finding_id, centre, *box in moved:
                bbox, diameter = (list(box) + [None, None])[:2]
                last = self.session.move(finding_id, centre, bbox).id
                if diameter is not None:
                    self.session.resize(finding_id, diameter)
            for finding_id in deleted:
                if self.session.findings[finding_id].status != Status.REJECTED:
                    self.session.remove(finding_id)
            for centre, diameter in added:
                last = self.session.add(centre, diameter, label=self.new_label()).id
            return last

        self._run_batch(actions)

    def _on_boxes_data(self, event) -> None:
        if not self._syncing and str(getattr(event, "action", "")) in ("added", "removed", "changed"):
            self._later("_pending_boxes", self.sync_from_boxes)

    def sync_from_boxes(self) -> None:
        """A box the reader drew is an added finding (centre, and the mean side as diameter); a
        box moved or resized with the select tool moves (and resizes) its finding; a deleted box
        removes its finding as deleting its point does."""
        self._pending_boxes = False
        findings = self.session.findings
        known = {f.id: f for f in findings}
        data = self.boxes.data  # napari builds this list on every access: 5,000 accesses took 1.4 s
        kept, new_rows = rows_by_id(self.boxes.features, len(data), known)
        spacing = np.linalg.norm(layer_matrix(self.boxes)[:-1, :-1], axis=0)  # mm per data unit, per axis
        added, moved = [], []
        for row in new_rows:
            corners = np.asarray(data[row], float)
            centre = data_to_world_mm(self.boxes, corners.mean(axis=0))[0]
            extent_mm = ((corners.max(axis=0) - corners.min(axis=0)) * spacing)[-2:]
            added.append((tuple(float(v) for v in centre), float(np.mean(extent_mm))))
        if findings.geometry is not None:
            for finding_id in _boxes_not_as_drawn(self.boxes, data, kept):
                change = box_change(findings, known[finding_id], np.asarray(data[kept[finding_id]], float), spacing)
                if change is not None:
                    moved.append((finding_id, *change))
        self._apply_edits(moved, added, [finding_id for finding_id in known if finding_id not in kept])

    def _on_paint(self, event) -> None:
        if self._syncing:
            return
        # napari emits `paint` before data_setitem writes the voxels: read them once it has
        if not self._pending_atoms:
            QTimer.singleShot(0, lambda: self._closed or self.sync_from_labels())
        self._pending_atoms.extend(event.value)

    def sync_from_labels(self) -> None:
        """One stroke (the paint records since the last read) is one session action carrying its
        voxels: a new label value is an added finding, a mask erased to nothing rejects its model
        finding (removes a reader's), and a mask only trimmed or grown is a ``mask`` action on
        its finding (edited, unless added or rejected; its volume and diameter follow the mask);
        voxels of no finding are an action of their own.  So every stroke is saved, and undone,
        with its voxels."""
        atoms, self._pending_atoms = self._pending_atoms, []
        if self.labels is None or not atoms:
            return
        self._forget_napari_history()
        try:
            patch = stroke_patch(self.labels, atoms)
        except (TypeError, ValueError, IndexError) as err:  # an unknown kind of paint record
            notify_error(err)
            return
        if patch is None:
            return
        by_value = {label_value_of(f): f for f in self.session.findings}
        by_value.pop(None, None)
        new_components, erased = mask_changes(self.labels, patch, by_value)
        trimmed = [by_value[value] for value in sorted(patch.values()) if value in by_value and value not in erased]
        volumes = {finding.id: mask_volume_mm3(self.labels, patch, finding) for finding in trimmed}

        def actions():
            last = None
            for value, centre, volume, diameter in new_components:
                last = self.session.add(centre, diameter, label=self.new_label(), mask_value=value,
                                        volume_mm3=volume).id
            for value in erased:
                finding = by_value[value]
                if finding.status == Status.REJECTED:
                    self.session.edit_mask(finding.id)  # stays rejected; its voxels are saved with the action
                else:
                    self.session.remove(finding.id)
            for finding in trimmed:  # its volume and diameter follow the corrected mask
                self.session.edit_mask(finding.id, volumes[finding.id])
                last = finding.id if last is None else last
            return last

        self._run_batch(actions, voxels=patch)
