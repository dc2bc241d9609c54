"""Review dock widget: go through a findings layer with the keyboard, every decision saved at once.

Thin by design: ``core.review.ReviewSession`` holds the state (undo/redo, atomic autosave tied
to the image's content signature) and ``napari.review_sync.ReviewLayers`` keeps the Points,
boxes and Labels layers in step with it both ways; ``napari.findings_table`` is the table's model.
This module is the controls, the keyboard, and the view following the current row; the table
(``review_table``), the buttons and their keys (``review_buttons``), which review a findings
layer starts (``review_start``) and the export (``review_export``) are beside it.

Deleted model points become *rejected* and stay drawn as hollow red rings (hard negatives for
retraining); deleting a reader's own point removes it.

The current finding is kept by its id, not by its table row (``review_table`` says why).
Only choosing a row (click, N, P, after a decision) moves the view; the row selected for a
finding the reader just edited on the canvas leaves it where it is.
"""

from __future__ import annotations

from contextlib import contextmanager

from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from ...core.errors import MedcadError
from ...core.findings import Finding
from ...core.image import lps_to_napari_world
from ...core.review import ReviewSession, default_review_path
from ..findings_layers import (REPLACES_REVIEW, ROLE_BOXES, ROLE_LABELS, ROLE_POINTS, findings_count,
                              findings_layers_of, role_of)
from ..jobs import notify_error
from ..layers import META_KEY, image_from_layer
from ..review_sync import IN_PLACE, ReviewLayers
from ..source_names import follow_source_renames
from .review_buttons import decision_buttons
from .review_export import CaseExport, export_case
from .review_start import FailedStart, open_session
from .review_table import ReviewTable


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
        self._failure = FailedStart()  # what the last automatic start failed on

        self.findings_combo = QComboBox()
        self.findings_combo.activated.connect(lambda index: self.start_review())
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.table = ReviewTable()
        # the table's parts, under the names the tests and the benchmarks use
        self.model, self.proxy = self.table.findings, self.table.proxy
        self.min_probability, self.status_filter = self.table.min_probability, self.table.status_filter
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
        grid, self.buttons = decision_buttons(self, {
            "accept": self.accept_current, "reject": self.reject_current, "previous": self.previous,
            "next": self.next, "undo": self.undo, "redo": self.redo})

        form = QFormLayout()
        form.addRow("findings", self.findings_combo)
        edit_form = QFormLayout()
        edit_form.addRow("class", self.class_combo)
        edit_form.addRow("note", self.note_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        layout.addLayout(self.table.filter_row())
        layout.addWidget(self.table, 1)
        layout.addLayout(grid)
        layout.addWidget(self.advance_check)
        layout.addLayout(edit_form)
        self.export_button = self.runner = self._export = None
        if export_case is not None:  # without the core's export function there is no Export button
            self._export = CaseExport(self, lambda: (self.session, self.image_layer, self.labels_layer),
                                      self.status_label.setText)
            self.export_button, self.runner = self._export.button, self._export.runner
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
        if automatic and self._failure.failed_before(layer, image_layer):
            return None
        path = None
        self._starting = True
        try:
            if image_layer is None:
                raise MedcadError(f"open the image '{source}' these findings were made on to review them")
            signature = image_from_layer(image_layer).content_signature()
            path = default_review_path(signature)
            session, set_aside = open_session(self, self.viewer, layer, signature, path)
        except MedcadError as err:
            self._failure.remember(layer, image_layer, path)
            self._stop_review(str(err))
            notify_error(err)
            return None
        finally:
            self._starting = False
        self._failure.forget()
        if session is None or layer not in self.viewer.layers or image_layer not in self.viewer.layers:
            self._refresh_layers()  # closed while the reader was asked
            return None
        info.pop(REPLACES_REVIEW, None)  # from now on this layer's review is the one just started
        self._begin(session, layer, image_layer)
        if set_aside:
            self.status_label.setText(self.status_label.text() + f"; the earlier review of this image was kept "
                                      f"aside in {path.parent} (*.replaced-*.review.json)")
        return session

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
        return self.table.visible_ids()

    def select_finding(self, finding_id: int) -> bool:
        """Make the finding the current row (which moves the view); False if it is filtered out."""
        return self.table.select(finding_id)

    def _on_current_row(self, current, previous=None) -> None:
        if self._note_for is not None and self._note_for != self.table.id_at(current):
            self._note_finished()  # the note typed so far goes to the finding it was typed for
        self._current_id = self.table.id_at(current)
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
    def next(self) -> None:
        self.table.step(+1)

    def previous(self) -> None:
        self.table.step(-1)

    def _decide(self, decide) -> None:
        """Apply a decision to the current finding, then go to the one after it in the table."""
        finding = self.current_finding()
        if finding is None or self.session is None:
            return
        next_id = self.table.id_after_current()
        try:
            decide(finding.id)
        except MedcadError as err:
            notify_error(err)
            return
        if not self.advance_check.isChecked():
            if not self.select_finding(finding.id):
                self.table.step(0)
            return
        if next_id is None or not self.select_finding(next_id):
            if not self.select_finding(finding.id):  # filtered out by its new status: stay in place
                self.table.step(0)

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
        return self._export.export(out_dir) if self._export is not None else None


def _camera(viewer):
    """``viewer.scene.camera`` from napari 0.9 on (``viewer.camera`` warns there), else ``viewer.camera``."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera
