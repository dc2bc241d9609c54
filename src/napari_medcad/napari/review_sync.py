"""Keeps the findings layers in step with a ``ReviewSession``, and the reader's layer edits with it.

Session -> layers: a decision (accept, reject, class, note) touches one finding, so only that
point's colours and that box's edge are updated; napari rebuilds a whole layer's colours when
it is given a whole array, which with 5,000 findings costs more than the rest of a decision.
Adds, removals, moves and their undo rebuild the Points and boxes layers from the session.

Layers -> session: moving, deleting or adding a point, drawing a box, painting a new label
value or erasing a finding's mask become session actions, read once napari has finished its
own event (a zero-delay timer).  Undoing an action that came from the Labels layer puts its
voxels back (and redoing takes them away again), so the layer and the table never disagree.
A flag keeps the layer changes made here from being read back as the reader's edits.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
from napari.utils.key_bindings import KeyCode, KeyMod
from qtpy.QtCore import QTimer

from ..core.errors import MedcadError
from ..core.findings import Finding, Status
from ..core.review import Action, ReviewSession
from .findings_layers import (
    box_rectangles,
    data_to_world_mm,
    features_of,
    layer_matrix,
    plane_spacing,
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
IN_PLACE = {"accept", "reject", "status", "label", "note"}


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
    """One point's table row and colours, touching only the colours that changed.

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
    for indices, old, new in (atom_voxels(atom, data.shape) for atom in atoms):
        touched.update(int(v) for v in np.unique(old))
        for value in (int(v) for v in np.unique(new)):
            if value > 0 and value not in known and len(indices[0]):
                painted.setdefault(value, []).append(indices)
    voxel_mm = abs(float(np.linalg.det(layer_matrix(labels_layer)[:-1, :-1])))
    new_components = []
    for value, stroke in painted.items():
        low = [min(int(i[d].min()) for i in stroke) for d in range(ndim)]
        high = [max(int(i[d].max()) for i in stroke) + 1 for d in range(ndim)]
        where = np.argwhere(np.asarray(data[tuple(slice(a, b) for a, b in zip(low, high))]) == value)
        if not len(where):
            continue
        centroid = where.mean(axis=0) + np.asarray(low, float)
        volume = len(where) * voxel_mm
        diameter = (6 * volume / np.pi) ** (1 / 3) if ndim == 3 else 2 * np.sqrt(volume / np.pi)
        centre = data_to_world_mm(labels_layer, centroid)[0]
        new_components.append((value, tuple(float(v) for v in centre), float(volume), float(diameter)))
    erased = [value for value in sorted(touched & known) if value > 0 and not np.any(np.asarray(data) == value)]
    return new_components, erased


class VoxelPatch:
    """Voxels a review action changed in the Labels layer, to put back on undo and redo.

    Only voxels still holding what the action left are reverted, so a later stroke elsewhere
    in the mask is not overwritten."""

    def __init__(self, indices, before, after):
        self.indices, self.before, self.after = indices, before, after

    @classmethod
    def of(cls, voxels: list) -> "VoxelPatch":
        ndim = len(voxels[0][0])
        return cls(tuple(np.concatenate([v[0][d] for v in voxels]) for d in range(ndim)),
                   np.concatenate([v[1] for v in voxels]), np.concatenate([v[2] for v in voxels]))

    def apply(self, labels_layer, undoing: bool) -> None:
        source, target = (self.after, self.before) if undoing else (self.before, self.after)
        data = labels_layer.data
        here = np.asarray(data[self.indices]) == source
        data[tuple(i[here] for i in self.indices)] = target[here]
        labels_layer.refresh()


#: the keys napari's Labels layer binds to its own undo / redo (Cmd on macOS, Ctrl elsewhere)
UNDO_KEY = KeyMod.CtrlCmd | KeyCode.KeyZ
REDO_KEY = KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ


class ReviewLayers:
    """The Points (and boxes, and Labels) layers of one review, in both directions.

    ``on_edited(finding_id)`` is called after the reader's layer edits became session actions
    (the table must be rebuilt; ``finding_id`` is the one to show, or None);
    ``on_point_selected(finding_id)`` when the reader selects a single point on the canvas.
    ``undo`` / ``redo``: what Ctrl+Z / Ctrl+Shift+Z do on the canvas while the Labels layer is
    active.  napari's own Labels undo writes the voxels back without any event, so the session
    would keep a paint the layer no longer shows; the review's undo puts the voxels back itself.
    """

    def __init__(self, session: ReviewSession, points, labels=None, boxes=None, *,
                 on_edited: Callable[[int | None], None], on_point_selected: Callable[[int], None],
                 new_label: Callable[[], str] = lambda: "nodule",
                 undo: Callable[[], None] | None = None, redo: Callable[[], None] | None = None):
        self.session, self.points, self.labels, self.boxes = session, points, labels, boxes
        self.on_edited, self.on_point_selected, self.new_label = on_edited, on_point_selected, new_label
        self._layer_keys = {UNDO_KEY: undo or session.undo, REDO_KEY: redo or session.redo}
        self.batch = False  # True while one layer edit becomes several session actions
        self.rows: dict[int, int] = {}
        self._syncing = self._closed = False
        self._pending_points = self._pending_selection = self._pending_boxes = False
        self._pending_atoms: list = []
        self._erased: dict[int, list] = {}  # label value -> voxels erased from it so far
        self._patches: dict[int, tuple[Action, VoxelPatch]] = {}  # id(action) -> its voxels
        session.listeners.append(self.on_action)
        points.events.data.connect(self._on_points_data)
        points.selected_data.events.items_changed.connect(self._on_points_selection)
        if labels is not None:
            labels.events.paint.connect(self._on_paint)
            for key, act in self._layer_keys.items():  # this layer's keymap comes before Labels' own
                labels.bind_key(key, lambda layer, act=act: act(), overwrite=True)
        if boxes is not None:
            boxes.events.data.connect(self._on_boxes_data)
        self.show_all()

    def disconnect(self) -> None:
        self._closed = True  # edits still queued (zero-delay timers) are dropped
        if self.on_action in self.session.listeners:
            self.session.listeners.remove(self.on_action)
        self.points.events.data.disconnect(self._on_points_data)
        self.points.selected_data.events.items_changed.disconnect(self._on_points_selection)
        if self.labels is not None:
            self.labels.events.paint.disconnect(self._on_paint)
            for key in self._layer_keys:
                self.labels.bind_key(key, None)  # napari's own undo again
        if self.boxes is not None:
            self.boxes.events.data.disconnect(self._on_boxes_data)

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
        """Session listener: recolour one finding, or rebuild; replay the action's voxels."""
        undoing = action.kind.startswith("undo ")
        original = self.session.redo_stack[-1] if undoing and self.session.redo_stack else action
        patch = self._patches.get(id(original))
        if patch is not None and patch[0] is original and self.labels is not None:
            self._quietly(patch[1].apply, self.labels, undoing)
        if self.batch:
            return
        if action.kind.removeprefix("undo ") in IN_PLACE and action.before is not None and action.after is not None:
            self.show_finding(self.session.findings[action.finding_id])
        else:
            self.show_all()

    # layers -> session -----------------------------------------------------------------------
    def _later(self, flag: str, handler) -> None:
        """Run ``handler`` once after napari has finished the current edit (selection, refresh)."""
        if not getattr(self, flag):
            setattr(self, flag, True)
            QTimer.singleShot(0, lambda: self._closed or handler())

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

    def _run_batch(self, actions) -> None:
        """Apply several session actions as one edit, then rebuild the layers and the table."""
        last = None
        self.batch = True
        try:
            last = actions()
        except MedcadError as err:
            notify_error(err)
        finally:
            self.batch = False
            self.show_all()
        self.on_edited(last)

    def sync_from_points(self) -> None:
        """Turn the reader's moves, deletions and additions in the Points layer into actions."""
        self._pending_points = False
        self._apply_edits(*points_edits(self.points, self.session.findings.items))

    def _apply_edits(self, moved, added, deleted) -> None:
        """Moves, additions ``(centre, diameter)`` and deletions as one edit (see ``_run_batch``);
        deleting a model finding rejects it, so deleting a rejected one again does nothing."""
        if not (moved or added or deleted):
            return

        def actions():
            last = None
            for finding_id, centre in moved:
                last = self.session.move(finding_id, centre).id
            for finding_id in deleted:
                if self.session.findings[finding_id].status != Status.REJECTED:
                    self.session.remove(finding_id)
            for centre, diameter in added:
                last = self.session.add(centre, diameter, label=self.new_label()).id
            return last

        self._run_batch(actions)

    def _on_boxes_data(self, event) -> None:
        if not self._syncing and str(getattr(event, "action", "")) in ("added", "removed"):
            self._later("_pending_boxes", self.sync_from_boxes)

    def sync_from_boxes(self) -> None:
        """A box the reader drew is an added finding (centre, and the mean side as diameter); a
        deleted box removes its finding as deleting its point does."""
        self._pending_boxes = False
        known = {f.id for f in self.session.findings}
        kept, new_rows = rows_by_id(self.boxes.features, len(self.boxes.data), known)
        spacing = np.linalg.norm(layer_matrix(self.boxes)[:-1, :-1], axis=0)  # mm per data unit, per axis
        added = []
        for row in new_rows:
            corners = np.asarray(self.boxes.data[row], float)
            centre = data_to_world_mm(self.boxes, corners.mean(axis=0))[0]
            extent_mm = ((corners.max(axis=0) - corners.min(axis=0)) * spacing)[-2:]
            added.append((tuple(float(v) for v in centre), float(np.mean(extent_mm))))
        self._apply_edits([], added, [finding_id for finding_id in known if finding_id not in kept])

    def _on_paint(self, event) -> None:
        if self._syncing:
            return
        # napari emits `paint` before data_setitem writes the voxels: read them once it has
        if not self._pending_atoms:
            QTimer.singleShot(0, lambda: self._closed or self.sync_from_labels())
        self._pending_atoms.extend(event.value)

    def sync_from_labels(self) -> None:
        """Paint strokes: a new label value is an added finding, a mask erased to nothing rejects.
        The voxels each of those actions changed are kept so its undo can restore them."""
        atoms, self._pending_atoms = self._pending_atoms, []
        if self.labels is None or not atoms:
            return
        by_value = {label_value_of(f): f for f in self.session.findings}
        by_value.pop(None, None)
        try:
            voxels = [atom_voxels(atom, self.labels.data.shape) for atom in atoms]
            new_components, erased = labels_paint_changes(self.labels, atoms, by_value)
        except (TypeError, ValueError, IndexError) as err:  # an unknown kind of paint record
            notify_error(err)
            return
        for indices, old, new in voxels:  # what each known mask lost, kept until it is gone
            for value in np.unique(old[old != new]):
                if int(value) in by_value:
                    keep = (old == value) & (new != value)
                    self._erased.setdefault(int(value), []).append(
                        (tuple(i[keep] for i in indices), old[keep], new[keep]))
        if not (new_components or erased):
            return

        def actions():
            last = None
            for value, centre, volume, diameter in new_components:
                last = self.session.add(centre, diameter, label=self.new_label(), mask_value=value,
                                        volume_mm3=volume).id
                painted = [(tuple(i[new == value] for i in indices), old[new == value], new[new == value])
                           for indices, old, new in voxels]
                self._keep_patch(VoxelPatch.of(painted))
            for value in erased:
                if by_value[value].status != Status.REJECTED:
                    self.session.remove(by_value[value].id)
                    self._keep_patch(VoxelPatch.of(self._erased.pop(value)))
            return last

        self._run_batch(actions)

    def _keep_patch(self, patch: VoxelPatch) -> None:
        """Tie ``patch`` to the session's latest action; forget patches of actions gone for good."""
        action = self.session.history[-1]
        alive = {id(a) for a in self.session.history} | {id(a) for a in self.session.redo_stack}
        self._patches = {key: value for key, value in self._patches.items() if key in alive}
        self._patches[id(action)] = (action, patch)
