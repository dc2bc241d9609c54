"""Review dock widget: go through a findings layer with the keyboard, every decision saved at once.

Thin by design: ``core.review.ReviewSession`` holds the state (undo/redo, atomic autosave tied
to the image's content signature) and ``napari.review_sync.ReviewLayers`` keeps the Points,
boxes and Labels layers in step with it both ways; ``napari.findings_table`` is the table's model.
This module is the controls, the keyboard, and the view following the current row.

Deleted model points become *rejected* and stay drawn as hollow red rings (hard negatives for
retraining); deleting a reader's own point removes it.

The current finding is kept by its id, not by its table row: the table's model is the session's
own list, so after an add or a removal a row number read before the table is rebuilt names
another finding (or none).  Only choosing a row (click, N, P, after a decision) moves the view;
the row selected for a finding the reader just edited on the canvas leaves it where it is.

Which review a findings layer starts: the one saved for its image if it was made on these
findings; a fresh one (the saved one kept aside) when the Inference widget replaced edited
findings with the reader's consent (``REPLACES_REVIEW`` in the new Points layer's metadata);
and when the saved review was made on other findings, the reader chooses.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from qtpy.QtCore import QItemSelectionModel, Qt
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
    QMessageBox,
    QPushButton,
    QShortcut,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import MedcadError
from ...core.findings import Finding, Status
from ...core.image import lps_to_napari_world
from ...core.review import ReviewSession, default_review_path, file_identity
from ..findings_layers import (REPLACES_REVIEW, ROLE_BOXES, ROLE_LABELS, ROLE_POINTS, base_findings, findings_count,
                              findings_layers_of, role_of)
from ..findings_table import ALL_STATUSES, FindingsFilter, FindingsTableModel
from ..jobs import JobRunner, notify_error
from ..layers import META_KEY, image_from_layer
from ..review_sync import IN_PLACE, ReviewLayers
from ..source_names import follow_source_renames

try:  # the export engineer's core function; without it there is no Export button
    from ...core.export import export_case
except ImportError:  # pragma: no cover - depends on the installed version
    export_case = None

SHORTCUTS = {
    "accept": ("A",), "reject": ("R",), "next": ("N",), "previous": ("P",),
    "undo": ("Ctrl+Z",), "redo": ("Ctrl+Shift+Z", "Ctrl+Y"),
}


class ReviewWidget(QWidget):
    """Choose a findings layer, then review it: table, keyboard decisions, layers in sync."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: ReviewSession | None = None
        self.points_layer = None
        self.labels_layer = None
        self.image_layer = None
        self.layers: ReviewLayers | None = None
        self._follow_view = True  # False while a row is chosen for the reader's canvas click or edit
        self._current_id: int | None = None  # the current row's finding, by id (see the module docstring)
        self._starting = False  # a review is being opened (a dialog may run the event loop meanwhile)
        self._failure: tuple | None = None  # what the last automatic start failed on (see _failed_before)
        self._set_aside = False  # the review just started moved a saved one aside

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
        # a note belongs to the finding it was typed for, even if the row changes before Enter
        self._note_for: int | None = None
        self.note_edit.textEdited.connect(self._note_typed)
        self.note_edit.editingFinished.connect(self._note_finished)

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

        # a renamed image takes its findings along; a renamed findings layer is renamed in the list
        follow_source_renames(self.viewer).listeners.append(lambda layer, old: self._fill_combo())
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._update_controls()

    # choosing the findings ------------------------------------------------------------------
    def _findings_layers(self) -> list:
        return [layer for layer in self.viewer.layers if role_of(layer) == ROLE_POINTS]

    def _fill_combo(self, layers=None) -> None:
        """The findings layers by name, the one under review (or the one chosen) current."""
        layers = self._findings_layers() if layers is None else layers
        current = self.points_layer.name if self.points_layer is not None else self.findings_combo.currentText()
        self.findings_combo.blockSignals(True)
        self.findings_combo.clear()
        self.findings_combo.addItems([layer.name for layer in layers])
        if current:
            self.findings_combo.setCurrentText(current)
        self.findings_combo.blockSignals(False)

    def _refresh_layers(self, event=None) -> None:
        layers = self._findings_layers()
        self._fill_combo(layers)
        if self._starting:  # layers added while a start asks the reader: that start decides
            return
        if self.points_layer is not None and self.points_layer not in layers:
            self._stop_review("the findings layer was closed")
        elif self.layers is not None and any(layer is not None and layer not in self.viewer.layers
                                             for layer in (self.layers.labels, self.layers.boxes)):
            self._begin(self.session, self.points_layer, self.image_layer)  # the masks or boxes were closed
        if self.points_layer is None and layers:  # the newest findings
            self.findings_combo.setCurrentIndex(len(layers) - 1)
            self.start_review(automatic=True)

    # starting a review ------------------------------------------------------------------------------
    def select_findings(self, name: str) -> ReviewSession | None:
        self.findings_combo.setCurrentText(name)
        return self.start_review()

    def start_review(self, automatic: bool = False) -> ReviewSession | None:
        """Start (or resume) the review of the chosen findings; None (and a message) if impossible.

        ``automatic`` (findings layers arrived or left): a start that failed is not retried, nor
        its error shown again, until the findings, their image or the review file change."""
        name = self.findings_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None or self._starting:
            return None
        if layer is self.points_layer and self.session is not None:
            return self.session
        info = layer.metadata.get(META_KEY, {})
        source = info.get("source_layer", "")
        image_layer = self.viewer.layers[source] if source in self.viewer.layers else None
        if automatic and self._failed_before(layer, image_layer):
            return None
        path = None
        self._starting = True
        try:
            if image_layer is None:
                raise MedcadError(f"open the image '{source}' these findings were made on to review them")
            signature = image_from_layer(image_layer).content_signature()
            path = default_review_path(signature)
            session = self._open_session(layer, signature, path)
        except MedcadError as err:
            self._failure = (layer, image_layer, _data_id(image_layer), path, file_identity(path))
            self._stop_review(str(err))
            notify_error(err)
            return None
        finally:
            self._starting = False
        self._failure = None
        if session is None or layer not in self.viewer.layers or image_layer not in self.viewer.layers:
            self._refresh_layers()  # closed while the reader was asked
            return None
        info.pop(REPLACES_REVIEW, None)  # from now on this layer's review is the one just started
        self._begin(session, layer, image_layer)
        if self._set_aside:
            self.status_label.setText(self.status_label.text() + f"; the earlier review of this image was kept "
                                      f"aside in {path.parent} (*.replaced-*.review.json)")
        return session

    def _failed_before(self, layer, image_layer) -> bool:
        """The last automatic start failed on these very layers, and the review file is as it was."""
        if self._failure is None:
            return False
        points, image, data, path, state = self._failure
        return points is layer and image is image_layer and data == _data_id(image_layer) and state == file_identity(path)

    def _open_session(self, layer, signature: str, path: Path) -> ReviewSession | None:
        """The saved review if it was made on these findings; a fresh one (the saved one kept
        aside) if the findings replaced reviewed ones with the reader's consent, or if the reader
        chooses to start over a review made on other findings; None if the layer was closed
        while the reader was asked."""
        findings = base_findings(layer)
        restart = bool(layer.metadata.get(META_KEY, {}).get(REPLACES_REVIEW))
        self._set_aside = False
        if not restart and path.exists():
            saved = ReviewSession.open(path, signature)  # refused here if damaged or of another image
            if saved.began_with(findings):
                return saved  # the file is read once: 5,000 findings take 0.1 s to parse
            restart = not (saved.history or saved.redo_stack) or self._ask_start_over(layer, saved)
            if layer not in self.viewer.layers:
                return None
        self._set_aside = restart and path.exists()
        return ReviewSession.start(findings, signature, path, restart=restart)

    def _ask_start_over(self, layer, saved: ReviewSession) -> bool:
        """Whether the reader starts a new review of ``layer``'s findings rather than resuming
        ``saved``, which was made on other findings of the same image."""
        actions = len(saved.history)
        box = QMessageBox(QMessageBox.Icon.Question, "Resume the saved review?",
                          f"A saved review of this image ({actions} action{'' if actions == 1 else 's'}, "
                          f"{findings_count(len(saved.findings))}) was made on other findings than those in "
                          f"'{layer.name}'.\n\nResume it: its findings replace those shown.\n"
                          f"Start over: review the findings in '{layer.name}'; the saved review is kept "
                          f"aside in {saved.path.parent}.", parent=self)
        resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
        start_over = box.addButton("Start over", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(resume)
        box.setEscapeButton(resume)
        box.exec()
        return box.clickedButton() is start_over

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
        if session is not self.session:
            self._current_id = self._note_for = None
        self.session, self.points_layer, self.image_layer = session, points_layer, image_layer
        made = findings_layers_of(self.viewer.layers, image_layer.name)
        labels = [layer for layer in made if role_of(layer) == ROLE_LABELS]
        boxes = [layer for layer in made if role_of(layer) == ROLE_BOXES]
        self.labels_layer = labels[-1] if labels else None
        self.layers = ReviewLayers(
            session, points_layer, self.labels_layer, boxes[-1] if boxes else None, on_edited=self._after_edit,
            on_point_selected=self._on_point_selected, new_label=lambda: self.class_combo.currentText() or "nodule",
            undo=self.undo, redo=self.redo)
        session.listeners.append(self._on_action)
        self._refresh_table()
        resumed = len(session.history)
        self.status_label.setText(
            f"{findings_count(len(session.findings))} on '{image_layer.name}'"
            + (f", review resumed ({resumed} actions)" if resumed else "") + f"; saved to {session.path}")
        self._fill_classes()
        self._update_controls()
        return session

    def _disconnect_layers(self) -> None:
        if self.session is not None and self._on_action in self.session.listeners:
            self.session.listeners.remove(self._on_action)
        if self.layers is not None:
            self.layers.disconnect()
            self.layers = None

    def _stop_review(self, message: str) -> None:
        self._disconnect_layers()
        self.session = self.points_layer = self.labels_layer = self.image_layer = None
        self._current_id = None
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
        """The current row's finding, found by its id (the row numbers may be stale, see above)."""
        if self.session is None or self._current_id is None:
            return None
        return self._finding(self._current_id)

    def _finding(self, finding_id: int) -> Finding | None:
        items, row = self.model.items, self.model.rows.get(finding_id)
        if row is not None and row < len(items) and items[row].id == finding_id:
            return items[row]
        return next((f for f in self.session.findings if f.id == finding_id), None) if self.session else None

    def _id_at(self, proxy_index) -> int | None:
        """The finding id of a row of the table (None for no row)."""
        if not proxy_index.isValid():
            return None
        row = self.proxy.mapToSource(proxy_index).row()
        return self.model.items[row].id if 0 <= row < len(self.model.items) else None

    @contextmanager
    def _view_stays(self):
        """Rows chosen inside this block select their finding without moving the view."""
        follow, self._follow_view = self._follow_view, False
        try:
            yield
        finally:
            self._follow_view = follow

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
        if self._note_for is not None and self._note_for != self._id_at(current):
            self._note_finished()  # the note typed so far goes to the finding it was typed for
        self._current_id = self._id_at(current)
        finding = self.current_finding()
        if finding is not None and self._follow_view:
            self.go_to(finding)
        elif finding is not None and self.layers is not None:
            self.layers.highlight(finding)
        self._update_controls()

    def _on_point_selected(self, finding_id: int) -> None:
        """A point picked on the canvas selects its row; the view stays where the reader is."""
        with self._view_stays():
            self.select_finding(finding_id)

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
            _camera(self.viewer).center = tuple(float(world[axis]) for axis in displayed)
        if self.layers is not None:
            self.layers.highlight(finding)

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
            if self._note_for is None:  # nothing typed and not yet saved: show this finding's note
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
        next_id = self._id_at(self.proxy.index(index.row() + 1, 0))
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

    def set_note(self, note: str, finding_id: int | None = None) -> None:
        """The note of finding ``finding_id`` (None: the current one)."""
        finding = self.current_finding() if finding_id is None else self._finding(finding_id)
        if finding is not None and " ".join(note.split()) != finding.note:
            self._act(self.session.set_note, finding.id, note)

    def _note_typed(self, _text: str) -> None:
        if self._note_for is None:
            self._note_for = self._current_id

    def _note_finished(self) -> None:
        finding_id, self._note_for = self._note_for, None
        if finding_id is not None:
            self.set_note(self.note_edit.text(), finding_id)

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

    # session -> table (ReviewLayers follows it for the layers) -------------------------------------
    def _on_action(self, action) -> None:
        if self.session is None or (self.layers is not None and self.layers.batch):
            return
        try:
            if action.kind.removeprefix("undo ") in IN_PLACE and action.before is not None \
                    and action.after is not None:
                fields = [key for key in ("label", "status", "note") if action.before.get(key) != action.after.get(key)]
                self.model.finding_changed(action.finding_id, fields)
            else:
                self._refresh_table()
        finally:
            self._update_controls()  # Undo / Redo follow the session after every change

    def _refresh_table(self) -> None:
        """The table rebuilt from the session (after adds, removals, moves, undo of those); the
        current finding stays current (by id: its row may have changed) and the view stays."""
        current = self._current_id
        self.model.set_items(self.session.findings.items if self.session else [])
        self._current_id = None
        if current is not None and self.session is not None:
            with self._view_stays():
                self.select_finding(current)
        self._update_controls()

    def _after_edit(self, finding_id: int | None) -> None:
        """The reader's layer edit became session actions: table rebuilt, the finding edited
        current, and the view left where the reader is drawing."""
        self._refresh_table()
        if finding_id is not None:
            with self._view_stays():
                self.select_finding(finding_id)

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


def _data_id(layer) -> int | None:
    return id(layer.data) if layer is not None else None


def _camera(viewer):
    """``viewer.scene.camera`` from napari 0.9 on (``viewer.camera`` warns there), else ``viewer.camera``."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera
