"""Review dock widget: go through a findings layer with the keyboard, every decision saved at once.

Thin by design: ``core.review.ReviewSession`` holds the state (undo/redo, atomic autosave tied
to the image's content signature) and ``napari.findings_layers`` turns it into layer contents
and the reader's layer edits back into session actions.  This module keeps three things in
step: the session, a table (a Qt model over the session's own list, so 5,000 rows stay fast)
and the Points / Labels layers.

Deleted model points become *rejected* and stay drawn as hollow red rings (hard negatives for
retraining); deleting a reader's own point removes it.  Layer edits are handled after napari
has finished its own event (a zero-delay timer), and a guard flag keeps the layer updates the
session causes from being read back as edits.
"""

from __future__ import annotations

import math
from pathlib import Path

from qtpy.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QShortcut,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import MedcadError
from ...core.findings import Finding, Status
from ...core.image import lps_to_napari_world
from ...core.review import ReviewSession, default_review_path
from ..findings_layers import (
    ROLE_LABELS,
    ROLE_POINTS,
    base_findings,
    findings_layers_of,
    label_value_of,
    labels_paint_changes,
    points_edits,
    role_of,
    show_finding_in_points,
    show_findings_in_points,
)
from ..jobs import JobRunner, notify_error
from ..layers import META_KEY, image_from_layer

try:  # the export engineer's core function; without it there is no Export button
    from ...core.export import export_case
except ImportError:  # pragma: no cover - depends on the installed version
    export_case = None

SORT_ROLE = Qt.ItemDataRole.UserRole
COLUMNS = ("id", "class", "probability", "x mm", "y mm", "z mm", "diameter mm", "status", "note")
ALL_STATUSES = "all"
#: session actions that change only what a finding is called or decided, not where it is
_IN_PLACE = {"accept", "reject", "status", "label", "note"}
SHORTCUTS = {
    "accept": ("A",), "reject": ("R",), "next": ("N",), "previous": ("P",),
    "undo": ("Ctrl+Z",), "redo": ("Ctrl+Shift+Z", "Ctrl+Y"),
}


class FindingsTableModel(QAbstractTableModel):
    """The session's findings list itself (no copy): a decision is one ``dataChanged``."""

    def __init__(self):
        super().__init__()
        self.items: list[Finding] = []
        self.rows: dict[int, int] = {}

    def set_items(self, items: list[Finding]) -> None:
        self.beginResetModel()
        self.items = items
        self.rows = {f.id: row for row, f in enumerate(items)}
        self.endResetModel()

    def finding_changed(self, finding_id: int) -> None:
        row = self.rows.get(finding_id)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.items)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def value(self, finding: Finding, column: int):
        name = COLUMNS[column]
        if name == "id":
            return finding.id
        if name == "class":
            return finding.label
        if name == "probability":
            return finding.probability
        if name.endswith(" mm") and name[0] in "xyz":
            axis = "xyz".index(name[0])
            return finding.centre_world_mm[axis] if axis < len(finding.centre_world_mm) else math.nan
        if name == "diameter mm":
            return finding.diameter_mm
        if name == "status":
            return finding.status.value
        return finding.note

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        finding = self.items[index.row()]
        if role == SORT_ROLE:
            return self.value(finding, index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            value = self.value(finding, index.column())
            if isinstance(value, float):
                if math.isnan(value):
                    return ""
                return f"{value:.3f}" if COLUMNS[index.column()] == "probability" else f"{value:.1f}"
            return str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and COLUMNS[index.column()] not in ("class", "status", "note"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class FindingsFilter(QSortFilterProxyModel):
    """Sorts on raw values and hides findings below a probability or of another status."""

    def __init__(self):
        super().__init__()
        self.min_probability = 0.0
        self.status = ALL_STATUSES
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)

    def set_filter(self, min_probability: float, status: str) -> None:
        self.min_probability, self.status = float(min_probability), status
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row, source_parent):
        finding = self.sourceModel().items[source_row]
        if finding.probability < self.min_probability:
            return False
        return self.status == ALL_STATUSES or finding.status.value == self.status


class ReviewWidget(QWidget):
    """Choose a findings layer, then review it: table, keyboard decisions, layers in sync."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: ReviewSession | None = None
        self.points_layer = None
        self.labels_layer = None
        self.image_layer = None
        self._syncing = False  # True while the widget itself changes the layers
        self._batch = False  # True while a layer edit is turned into several session actions
        self._pending_points_sync = False
        self._pending_atoms: list = []

        self.findings_combo = QComboBox()
        self.findings_combo.activated.connect(lambda index: self.start_review())
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.min_probability = QDoubleSpinBox()
        self.min_probability.setRange(0.0, 1.0)
        self.min_probability.setSingleStep(0.05)
        self.min_probability.setDecimals(2)
        self.status_filter = QComboBox()
        self.status_filter.addItems([ALL_STATUSES] + [s.value for s in Status])
        self.min_probability.valueChanged.connect(self._apply_filter)
        self.status_filter.currentIndexChanged.connect(self._apply_filter)

        self.model = FindingsTableModel()
        self.proxy = FindingsFilter()
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row)

        self.class_combo = QComboBox()
        self.class_combo.activated.connect(lambda index: self.set_class(self.class_combo.itemText(index)))
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("note on this finding (Enter saves)")
        self.note_edit.editingFinished.connect(lambda: self.set_note(self.note_edit.text()))

        self.advance_check = QCheckBox("go to the next finding after accept / reject")
        self.advance_check.setChecked(True)
        self.buttons: dict[str, QPushButton] = {}
        actions = {"accept": self.accept_current, "reject": self.reject_current, "previous": self.previous,
                   "next": self.next, "undo": self.undo, "redo": self.redo}
        titles = {"previous": "Previous (P, Up)", "next": "Next (N, Down)", "accept": "Accept (A)",
                  "reject": "Reject (R)", "undo": "Undo (Ctrl+Z)", "redo": "Redo (Ctrl+Shift+Z / Ctrl+Y)"}
        grid = QGridLayout()
        for position, name in enumerate(("accept", "reject", "previous", "next", "undo", "redo")):
            button = QPushButton(titles[name])
            button.clicked.connect(lambda checked=False, act=actions[name]: act())
            self.buttons[name] = button
            grid.addWidget(button, position // 2, position % 2)
            for keys in SHORTCUTS[name]:
                shortcut = QShortcut(QKeySequence(keys), self)
                shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                shortcut.activated.connect(actions[name])

        filters = QHBoxLayout()
        filters.addWidget(QLabel("min probability"))
        filters.addWidget(self.min_probability)
        filters.addWidget(QLabel("status"))
        filters.addWidget(self.status_filter, 1)
        form = QFormLayout()
        form.addRow("findings", self.findings_combo)
        edit_form = QFormLayout()
        edit_form.addRow("class", self.class_combo)
        edit_form.addRow("note", self.note_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addLayout(grid)
        layout.addWidget(self.advance_check)
        layout.addLayout(edit_form)
        self.export_button = None
        self.runner = None
        if export_case is not None:
            self.export_button = QPushButton("Export case to dataset...")
            self.export_button.clicked.connect(lambda: self.export())
            self.runner = JobRunner()
            layout.addWidget(self.export_button)
            layout.addWidget(self.runner)

        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._update_controls()

    # choosing the findings ------------------------------------------------------------------
    def _findings_layers(self) -> list:
        return [layer for layer in self.viewer.layers if role_of(layer) == ROLE_POINTS]

    def _refresh_layers(self, event=None) -> None:
        layers = self._findings_layers()
        current = self.findings_combo.currentText()
        self.findings_combo.blockSignals(True)
        self.findings_combo.clear()
        self.findings_combo.addItems([layer.name for layer in layers])
        self.findings_combo.blockSignals(False)
        if self.points_layer is not None and self.points_layer not in layers:
            self._stop_review("the findings layer was closed")
        if self.points_layer is None and layers:  # the newest findings
            self.findings_combo.setCurrentIndex(len(layers) - 1)
            self.start_review()
        elif current:
            self.findings_combo.setCurrentText(current)

    def select_findings(self, name: str) -> ReviewSession | None:
        self.findings_combo.setCurrentText(name)
        return self.start_review()

    def start_review(self) -> ReviewSession | None:
        """Start (or resume) the review of the chosen findings; None (and a message) if impossible."""
        name = self.findings_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None:
            return None
        if layer is self.points_layer and self.session is not None:
            return self.session
        source = layer.metadata.get(META_KEY, {}).get("source_layer", "")
        try:
            if source not in self.viewer.layers:
                raise MedcadError(f"open the image '{source}' these findings were made on to review them")
            image = image_from_layer(self.viewer.layers[source])
            signature = image.content_signature()
            session = ReviewSession.start(base_findings(layer), signature, default_review_path(signature))
        except MedcadError as err:
            self._stop_review(str(err))
            notify_error(err)
            return None
        return self._begin(session, layer, self.viewer.layers[source])

    def open_review_file(self, path) -> ReviewSession | None:
        """Continue a review saved elsewhere; refused if it was made on another image."""
        if self.image_layer is None or self.points_layer is None:
            notify_error(MedcadError("choose the findings to review first"))
            return None
        try:
            signature = image_from_layer(self.image_layer).content_signature()
            session = ReviewSession.open(path, signature)
        except MedcadError as err:
            self.status_label.setText(str(err))
            notify_error(err)
            return None
        return self._begin(session, self.points_layer, self.image_layer)

    def _begin(self, session: ReviewSession, points_layer, image_layer) -> ReviewSession:
        self._disconnect_layers()
        self.session, self.points_layer, self.image_layer = session, points_layer, image_layer
        labels = [lay for lay in findings_layers_of(self.viewer.layers, image_layer.name) if role_of(lay) == ROLE_LABELS]
        self.labels_layer = labels[-1] if labels else None
        session.listeners.append(self._on_action)
        points_layer.events.data.connect(self._on_points_data)
        if self.labels_layer is not None:
            self.labels_layer.events.paint.connect(self._on_paint)
        self._refresh_all()
        resumed = len(session.history)
        self.status_label.setText(
            f"{len(session.findings)} findings on '{image_layer.name}'"
            + (f", review resumed ({resumed} actions)" if resumed else "") + f"; saved to {session.path}")
        self._fill_classes()
        self._update_controls()
        return session

    def _disconnect_layers(self) -> None:
        if self.session is not None and self._on_action in self.session.listeners:
            self.session.listeners.remove(self._on_action)
        if self.points_layer is not None:
            self.points_layer.events.data.disconnect(self._on_points_data)
        if self.labels_layer is not None:
            self.labels_layer.events.paint.disconnect(self._on_paint)

    def _stop_review(self, message: str) -> None:
        self._disconnect_layers()
        self.session = self.points_layer = self.labels_layer = self.image_layer = None
        self.model.set_items([])
        self.status_label.setText(message)
        self._update_controls()

    def _fill_classes(self) -> None:
        """Classes from the model's card (kept in the findings' provenance) and those in use."""
        classes = list(self.session.findings.provenance.get("classes", []) or []) if self.session else []
        classes = [str(c) for c in classes if isinstance(c, str)]
        for finding in self.session.findings if self.session else []:
            if finding.label not in classes:
                classes.append(finding.label)
        self.class_combo.clear()
        self.class_combo.addItems(classes or ["nodule"])

    # the table and the view -----------------------------------------------------------------
    def _apply_filter(self, *args) -> None:
        self.proxy.set_filter(self.min_probability.value(), self.status_filter.currentText())

    def current_finding(self) -> Finding | None:
        index = self.table.selectionModel().currentIndex()
        if self.session is None or not index.isValid():
            return None
        return self.model.items[self.proxy.mapToSource(index).row()]

    def visible_ids(self) -> list[int]:
        """Finding ids in table order (after sorting and filtering)."""
        return [self.model.items[self.proxy.mapToSource(self.proxy.index(row, 0)).row()].id
                for row in range(self.proxy.rowCount())]

    def select_finding(self, finding_id: int) -> bool:
        """Make the finding the current row (which moves the view); False if it is filtered out."""
        row = self.model.rows.get(finding_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index)
        return True

    def _on_current_row(self, current, previous=None) -> None:
        finding = self.current_finding()
        if finding is not None:
            self.go_to(finding)
        self._update_controls()

    def go_to(self, finding: Finding) -> None:
        """Move the slice to the finding, centre the camera on it and highlight it in the layers."""
        world = lps_to_napari_world(finding.centre_world_mm)
        dims = self.viewer.dims
        offset = dims.ndim - len(world)
        if offset >= 0:
            point = list(dims.point)
            point[offset:] = (float(v) for v in world)
            # only a new slice costs a reslice of every layer: leave dims alone when it is the same
            if any(abs(point[axis] - dims.point[axis]) > dims.range[axis].step / 2 for axis in dims.not_displayed):
                dims.point = tuple(point)
            displayed = [axis - offset for axis in dims.displayed if axis >= offset]
            self.viewer.camera.center = tuple(float(world[axis]) for axis in displayed)
        self._syncing = True
        try:
            row = self.model.rows.get(finding.id)
            if self.points_layer is not None and row is not None and row < len(self.points_layer.data):
                self.points_layer.selected_data = {row}
            value = label_value_of(finding)
            if self.labels_layer is not None and value is not None:
                self.labels_layer.selected_label = value
        finally:
            self._syncing = False

    def _update_controls(self) -> None:
        finding = self.current_finding()
        has = finding is not None
        for name in ("accept", "reject"):
            self.buttons[name].setEnabled(has)
        self.buttons["undo"].setEnabled(bool(self.session and self.session.can_undo))
        self.buttons["redo"].setEnabled(bool(self.session and self.session.can_redo))
        self.class_combo.setEnabled(has)
        self.note_edit.setEnabled(has)
        if self.export_button is not None:
            self.export_button.setEnabled(self.session is not None)
        if has:
            if self.class_combo.findText(finding.label) < 0:
                self.class_combo.addItem(finding.label)
            self.class_combo.setCurrentText(finding.label)
            if not self.note_edit.hasFocus():
                self.note_edit.setText(finding.note)

    # keyboard review ------------------------------------------------------------------------
    def _step(self, delta: int) -> None:
        rows = self.proxy.rowCount()
        if not rows:
            return
        index = self.table.selectionModel().currentIndex()
        row = 0 if not index.isValid() else min(max(index.row() + delta, 0), rows - 1)
        target = self.proxy.index(row, 0)
        self.table.selectionModel().setCurrentIndex(
            target, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(target)

    def next(self) -> None:
        self._step(+1)

    def previous(self) -> None:
        self._step(-1)

    def _decide(self, decide) -> None:
        """Apply a decision to the current finding, then go to the one after it in the table."""
        finding = self.current_finding()
        if finding is None or self.session is None:
            return
        index = self.table.selectionModel().currentIndex()
        following = self.proxy.index(index.row() + 1, 0)
        next_id = (self.model.items[self.proxy.mapToSource(following).row()].id if following.isValid() else None)
        try:
            decide(finding.id)
        except MedcadError as err:
            notify_error(err)
            return
        if not self.advance_check.isChecked():
            if not self.select_finding(finding.id):
                self._step(0)
            return
        if next_id is None or not self.select_finding(next_id):
            if not self.select_finding(finding.id):  # filtered out by its new status: stay in place
                self._step(0)

    def accept_current(self) -> None:
        if self.session is not None:
            self._decide(self.session.accept)

    def reject_current(self) -> None:
        if self.session is not None:
            self._decide(self.session.reject)

    def set_class(self, label: str) -> None:
        finding = self.current_finding()
        if finding is not None and label and label != finding.label:
            self._act(self.session.set_label, finding.id, label)

    def set_note(self, note: str) -> None:
        finding = self.current_finding()
        if finding is not None and " ".join(note.split()) != finding.note:
            self._act(self.session.set_note, finding.id, note)

    def undo(self) -> None:
        if self.session is not None:
            self._act(self.session.undo)

    def redo(self) -> None:
        if self.session is not None:
            self._act(self.session.redo)

    def _act(self, action, *args):
        try:
            return action(*args)
        except MedcadError as err:
            notify_error(err)
            return None

    # session -> table and layers --------------------------------------------------------------
    def _on_action(self, action) -> None:
        if self._batch or self.session is None:
            return
        kind = action.kind.removeprefix("undo ")
        if kind in _IN_PLACE and action.before is not None and action.after is not None:
            finding = self.session.findings[action.finding_id]
            self.model.finding_changed(finding.id)
            row = self.model.rows.get(finding.id)
            if self.points_layer is not None and row is not None and row < len(self.points_layer.data):
                self._syncing = True
                try:
                    show_finding_in_points(self.points_layer, row, finding)
                finally:
                    self._syncing = False
        else:
            self._refresh_all()
        self._update_controls()

    def _refresh_all(self) -> None:
        """Table and Points layer rebuilt from the session (after adds, removals, moves, undo)."""
        current = self.current_finding()
        self.model.set_items(self.session.findings.items if self.session else [])
        if self.session is not None and self.points_layer is not None:
            self._syncing = True
            try:
                show_findings_in_points(self.points_layer, self.session.findings.items)
            finally:
                self._syncing = False
        if current is not None:
            self.select_finding(current.id)
        self._update_controls()

    # layers -> session ------------------------------------------------------------------------
    def _on_points_data(self, event) -> None:
        if self._syncing or str(getattr(event, "action", "")) not in ("added", "removed", "changed"):
            return
        if not self._pending_points_sync:  # after napari has finished the edit (selection, refresh)
            self._pending_points_sync = True
            QTimer.singleShot(0, self.sync_from_points)

    def sync_from_points(self) -> None:
        """Turn the reader's moves, deletions and additions in the Points layer into actions."""
        self._pending_points_sync = False
        if self.session is None or self.points_layer is None:
            return
        moved, added, deleted = points_edits(self.points_layer, self.session.findings.items)
        if not (moved or added or deleted):
            return
        label = self.class_combo.currentText() or "nodule"
        last = None
        self._batch = True
        try:
            for finding_id, centre in moved:
                self.session.move(finding_id, centre)
                last = finding_id
            for finding_id in deleted:
                if self.session.findings[finding_id].status != Status.REJECTED:
                    self.session.remove(finding_id)
            for centre, diameter in added:
                last = self.session.add(centre, diameter, label=label).id
        except MedcadError as err:
            notify_error(err)
        finally:
            self._batch = False
            self._refresh_all()
        if last is not None:
            self.select_finding(last)

    def _on_paint(self, event) -> None:
        if self._syncing or self.session is None:
            return
        # napari emits `paint` before data_setitem writes the voxels: read them once it has
        if not self._pending_atoms:
            QTimer.singleShot(0, self.sync_from_labels)
        self._pending_atoms.extend(event.value)

    def sync_from_labels(self) -> None:
        """Paint strokes: a new label value is an added finding, a mask erased to nothing rejects."""
        atoms, self._pending_atoms = self._pending_atoms, []
        if self.session is None or self.labels_layer is None or not atoms:
            return
        by_value = {label_value_of(f): f for f in self.session.findings}
        by_value.pop(None, None)
        try:
            new_components, erased = labels_paint_changes(self.labels_layer, atoms, by_value)
        except (TypeError, ValueError, IndexError) as err:  # an unknown kind of paint record
            notify_error(err)
            return
        if not (new_components or erased):
            return
        label = self.class_combo.currentText() or "nodule"
        last = None
        self._batch = True
        try:
            for value, centre, volume, diameter in new_components:
                last = self.session.add(centre, diameter, label=label, mask_value=value, volume_mm3=volume).id
            for value in erased:
                if by_value[value].status != Status.REJECTED:
                    self.session.remove(by_value[value].id)
        except MedcadError as err:
            notify_error(err)
        finally:
            self._batch = False
            self._refresh_all()
        if last is not None:
            self.select_finding(last)

    # export -------------------------------------------------------------------------------------
    def export(self, out_dir=None):
        """Add this case (reviewed findings, masks) to a training dataset folder, in a worker."""
        if export_case is None or self.session is None or self.image_layer is None or self.runner is None:
            return None
        if self.runner.running:
            notify_error(MedcadError("an export is already running"))
            return None
        if out_dir is None:
            out_dir = QFileDialog.getExistingDirectory(self, "Dataset folder (created or added to)")
            if not out_dir:
                return None
        image = image_from_layer(self.image_layer)
        labels = image_from_layer(self.labels_layer) if self.labels_layer is not None else None
        source = getattr(getattr(self.image_layer, "source", None), "path", None)
        self.export_button.setEnabled(False)
        return self.runner.start(
            export_case, image, self.session.reviewed_findings(), Path(out_dir), labels=labels,
            source_path=source, on_result=self._exported, on_finish=lambda: self.export_button.setEnabled(True))

    def _exported(self, result) -> None:
        text = result.summary() if hasattr(result, "summary") else f"exported {getattr(result, 'case', '')}"
        self.status_label.setText(text)
        from napari.utils.notifications import show_info

        show_info(text)
