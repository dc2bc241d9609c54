"""Inference dock widget: run a model on an image layer off the GUI thread, findings as layers.

Thin by design: ``core.inference.run.run_model`` does the work (in a napari generator worker
through :class:`JobRunner`, with progress and Cancel) and ``napari.findings_layers`` turns its
result into Points / Labels / Shapes / heatmap layers.  This module only picks the inputs,
asks before replacing findings a reader has edited, and swaps the layers.  When the reader
agrees to replace edited findings, the new Points layer is marked (``REPLACES_REVIEW``) so the
Review widget starts a fresh review of them, keeping the old review file aside, instead of
resuming the old review on findings that are no longer shown.  What runs off the GUI thread
(the jobs, the warm-up) is in ``napari.inference_jobs``; the model choice in ``model_chooser``.

Keeping napari's event loop free (benchmarks/bench_gui_stall.py):

* torch, MONAI, SciPy and SimpleITK are imported in a background thread when the widget opens
  (``run.warm_up``), not in the first run's worker, where their imports held the GIL for
  hundreds of milliseconds; the device list is filled in when that thread is done;
* the layers' data (masks made compact, boxes, features) is made in the worker too;
* the old layers are removed and the new ones added one per event-loop turn, so the loop
  never waits for all of them at once;
* napari runs a full ``gc.collect()`` on every layer removal, which walks every live object
  (half a million once torch and MONAI are loaded): 0.7 s per removed layer on this machine.
  When a run replaces its old layers, the objects alive at that moment are frozen
  (``gc.freeze()``) just for the removal and unfrozen right after (0.05 s per layer), so
  nothing stays out of the collector's reach: the old layers' garbage is collected by the next
  automatic collection instead of at once.  (A permanent freeze would be faster still, but
  would keep any layer alive at that time, and its array, from ever being collected once closed.)
"""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING, Callable

from napari.layers import Image, Layer
from napari.viewer import Viewer
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget

from ...core.errors import MedcadError
from ...core.inference.devices import DEVICE_CHOICES
from ..findings_layers import (
    REPLACES_REVIEW,
    ROLE_HEATMAP,
    ROLE_POINTS,
    add_findings_layers,
    findings_count,
    findings_layers_of,
    layers_edited,
    role_of,
)
from ..explain_layers import add_explanation_layer, is_explanation, show_explanations
from ..graph_layers import ROLE_GRAPH_EDGES, ROLE_GRAPH_NODES, add_graph_layers, graph_layers_of
from ..inference_jobs import WarmUpSignals, explain_job, run_job, warm_up_in_background
from ..jobs import JobRunner, UserError, notify_error
from ..layers import META_KEY, image_from_layer
from ..source_names import follow_source_renames
from .model_chooser import ModelChooser, default_model_name

if TYPE_CHECKING:  # pragma: no cover
    from ...core.models.card import ModelCard

PLUGIN = "napari-medcad"
WIDGET_NAME = "Inference"


def _replacing_review(layer_tuple):
    """A findings Points layer's data marked so that its review starts over (others unchanged)."""
    data, kwargs, kind = layer_tuple
    info = (kwargs.get("metadata") or {}).get(META_KEY, {})
    if info.get("role") != ROLE_POINTS:
        return layer_tuple
    metadata = {**kwargs["metadata"], META_KEY: {**info, REPLACES_REVIEW: True}}
    return data, {**kwargs, "metadata": metadata}, kind


def _remove_layer(layers, layer) -> None:
    """Remove ``layer`` without napari's full collection walking every object (see above)."""
    if layer not in layers:
        return
    gc.freeze()
    try:
        layers.remove(layer)
    finally:
        gc.unfreeze()


def _windows_note(metadata: dict) -> str:
    """Why parts of a heatmap are empty: the windows left out because they hold no lung."""
    skipped = int(metadata.get("windows_skipped", 0) or 0)
    if metadata.get("mask") in ("lung_mask", "given") and skipped:
        where = "the lungs" if metadata["mask"] == "lung_mask" else "the mask"
        return f"; only windows in {where} were explained ({skipped} of {skipped + int(metadata.get('windows', 0))} skipped)"
    return ""


class InferenceWidget(QWidget):
    """Image layer, model and device in; findings, masks, boxes and heatmap layers out."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.models = ModelChooser(self, self.image_layer, self._fail)
        # the chooser's controls, under the names the layout, the tests and the benchmarks use
        self.model_combo, self.explain_combo = self.models.model_combo, self.models.explain_combo
        self.about, self.rescore_check = self.models.about, self.models.rescore_check
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self.models.fit_models)
        self.device_combo = QComboBox()
        self.heatmap_check = QCheckBox("show probability heatmap")
        self.heatmap_check.toggled.connect(self._show_heatmap)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setToolTip("Grad-CAM (CNN, LSTM) or the model's own attention (attention, MIL) "
                                       "as a heatmap over the image; a 2-D model explains the current slice")
        self.explain_button.clicked.connect(lambda: self.explain())
        self.explain_check = QCheckBox("show explanations")
        self.explain_check.setChecked(True)
        self.explain_check.toggled.connect(self._show_explanations)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(lambda: self.run())
        self.runner = JobRunner()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self._pending: list[Callable[[], None]] = []  # layer changes still to make, one per turn
        self.devices_checked = False
        self.warmed_up = threading.Event()
        self._background = WarmUpSignals(self)
        self._background.devices_known.connect(self._set_devices)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.models.about_area)
        layout.addWidget(self.heatmap_check)
        layout.addWidget(self.rescore_check)
        layout.addWidget(self.run_button)
        explain_form = QFormLayout()
        explain_form.addRow("explain with", self.explain_combo)
        layout.addLayout(explain_form)
        layout.addWidget(self.explain_button)
        layout.addWidget(self.explain_check)
        layout.addWidget(self.runner)
        layout.addWidget(self.message)
        layout.addStretch(1)

        self._fill_devices()
        threading.Thread(target=warm_up_in_background, args=(self._background, self.warmed_up), name="medcad-warm-up",
                         daemon=True).start()
        self.refresh_models()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        follow_source_renames(self.viewer)  # a renamed image keeps its findings (a re-run replaces them)
        self._refresh_layers()

    # choices --------------------------------------------------------------------------------
    def _fill_devices(self) -> None:
        """auto and cpu at once; cuda and mps once the warm-up thread has asked torch."""
        model = self.device_combo.model()
        for name in DEVICE_CHOICES:
            checked = name in ("auto", "cpu")
            self.device_combo.addItem(name if checked else f"{name} (checking...)", name)
            model.item(self.device_combo.count() - 1).setEnabled(checked)

    def _set_devices(self, available: dict) -> None:
        """GUI thread, after the warm-up: the devices found."""
        model = self.device_combo.model()
        for index in range(self.device_combo.count()):
            name = self.device_combo.itemData(index)
            self.device_combo.setItemText(index, name if available.get(name) else f"{name} (not available)")
            model.item(index).setEnabled(bool(available.get(name)))
        self.devices_checked = True

    def refresh_models(self) -> None:
        """The registered models (built-in, then the user's folder), plus Browse..."""
        self.models.refresh_models()

    def add_model_path(self, path) -> ModelCard | None:
        """Use the model in folder (or card file) ``path`` and select it."""
        return self.models.add_model_path(path)

    def select_model(self, name: str) -> bool:
        return self.models.select_model(name)

    def model_card(self) -> ModelCard:
        return self.models.model_card()

    def _refresh_layers(self, event=None) -> None:
        current = self.image_combo.currentText()
        # images to run on: not the heatmaps and explanations this plugin made (they are not scans)
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Image) and not layer.rgb and role_of(layer) is None and not is_explanation(layer)]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def select_image(self, name: str) -> None:
        self._refresh_layers()
        self.image_combo.setCurrentText(name)

    def image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def device(self) -> str:
        return self.device_combo.currentData() or "auto"

    @property
    def busy(self) -> bool:
        """A model is running, or its layers are still being added."""
        return self.runner.running or bool(self._pending)

    # running --------------------------------------------------------------------------------
    def _inputs(self, action: str, chosen_card):
        """The chosen image layer, its MedicalImage and the chosen card; MedcadError if not ready."""
        self.message.setText("")
        if self.busy:
            raise MedcadError("a model is already running; wait for it or cancel it")
        layer = self.image_layer()
        if layer is None:
            raise MedcadError(f"choose an image layer to {action}")
        card = chosen_card()
        return layer, image_from_layer(layer), card

    def _explainer_card(self) -> ModelCard:
        return self.models.explainer_card()

    def run(self):
        """Start the model on the chosen image; returns the worker, or None if nothing started."""
        try:
            layer, image, card = self._inputs("run the model on", self.model_card)
        except MedcadError as err:
            return self._fail(err)
        try:
            if not self.models.trusted_or_asked(card):
                self.message.setText(f"'{card.name}' was not trusted; nothing was run")
                return None
        except MedcadError as err:
            return self._fail(err)
        previous = findings_layers_of(self.viewer.layers, layer.name)
        replaces_edits = bool(previous) and layers_edited(previous)
        if replaces_edits and not self._confirm_replace(layer.name):
            self.message.setText("kept the edited findings; nothing was run")
            return None
        self.run_button.setEnabled(False)
        return self.runner.start(
            run_job, image, card, self.device, layer.name, self.heatmap_check.isChecked(), self.warmed_up,
            self.rescore_check.isChecked(),
            on_result=lambda result: self._add_result(result, layer.name, replaces_edits),
            on_finish=lambda: self.run_button.setEnabled(not self.busy),
        )

    def explain(self):
        """Explain the chosen image with the chosen classifier (2-D models: the current slice)."""
        try:
            layer, image, card = self._inputs("explain", self._explainer_card)
        except MedcadError as err:
            return self._fail(err)
        slices = None
        if card.dims == 2 and image.ndim == 3:
            slices = [int(round(layer.world_to_data(self.viewer.dims.point)[0]))]
        self.explain_check.setChecked(True)
        return self.runner.start(explain_job, image, card, slices, self.warmed_up,
                                 on_result=lambda heat: self._add_explanation(heat, layer))

    def _add_explanation(self, heat, layer) -> None:
        if heat is None:  # cancelled
            return
        if isinstance(heat, UserError):
            return self._fail(heat.error)
        if layer in self.viewer.layers:
            add_explanation_layer(self.viewer, heat, layer)
            self.message.setText(f"explanation of '{layer.name}' added{_windows_note(heat.metadata)} "
                                 "(adjust its opacity in the layer controls)")

    def _show_explanations(self, checked: bool) -> None:
        layer = self.image_layer()
        if layer is not None:
            show_explanations(self.viewer, layer.name, bool(checked))

    def _confirm_replace(self, name: str) -> bool:
        answer = QMessageBox.question(
            self, "Replace edited findings?",
            f"The findings on '{name}' were edited (points moved, added or deleted, masks or boxes "
            "changed). Running the model again replaces them, and their review starts over (the saved review "
            "is kept aside). Replace them?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _add_result(self, outcome, source_name: str, replaces_edits: bool = False) -> None:
        """Swap the old findings layers for the new ones, one layer per event-loop turn.

        ``replaces_edits``: the reader agreed to replace edited findings, so the review of the
        new ones starts over (the Review widget keeps the old review file aside)."""
        if outcome is None:  # cancelled: nothing is added, nothing is removed
            return None
        if isinstance(outcome, UserError):
            self.runner.status.setText(str(outcome.error))
            return self._fail(outcome.error)
        result, layer_data = outcome
        if replaces_edits:
            layer_data = [_replacing_review(one) for one in layer_data]
        added: list = []
        steps: list[Callable[[], None]] = [
            (lambda old=old: _remove_layer(self.viewer.layers, old))
            for old in findings_layers_of(self.viewer.layers, source_name) + graph_layers_of(self.viewer.layers,
                                                                                               source_name)
        ]
        steps += [(lambda one=one: added.extend(self._add_layer(one))) for one in layer_data]
        steps.append(lambda: self._layers_added(result, source_name, added))
        self._pending = steps
        self._next_step()
        return None

    def _add_layer(self, layer_tuple) -> list:
        data, kwargs, kind = layer_tuple
        role = (kwargs.get("metadata") or {}).get(META_KEY, {}).get("role")
        if role == ROLE_HEATMAP:
            kwargs = {**kwargs, "visible": self.heatmap_check.isChecked()}  # as the box is now
        if role in (ROLE_GRAPH_EDGES, ROLE_GRAPH_NODES):
            return add_graph_layers(self.viewer, [(data, kwargs, kind)])
        return add_findings_layers(self.viewer, [(data, kwargs, kind)])

    def _next_step(self) -> None:
        if not self._pending:
            return
        step = self._pending.pop(0)
        try:
            step()
        except Exception as err:  # noqa: BLE001 - shown, and the remaining steps dropped
            self._pending = []
            self.run_button.setEnabled(not self.runner.running)
            self._fail(err)
            return
        if self._pending:
            QTimer.singleShot(0, self._next_step)

    def _layers_added(self, result, source_name: str, layers: list) -> None:
        seconds = result.report.get("timings_s", {}).get("total_s", 0.0)
        self.message.setText(
            f"{findings_count(len(result.findings))} on '{source_name}' "
            f"({result.report.get('model', {}).get('name', '?')}, {result.report.get('device', '?')}, {seconds:.1f} s)"
            + "".join(f"\n{note}" for note in result.report.get("notes", []))
        )
        if layers:
            self.viewer.layers.selection.active = layers[-1]
        self.run_button.setEnabled(not self.runner.running)

    def _show_heatmap(self, checked: bool) -> None:
        layer = self.image_layer()
        for heatmap in findings_layers_of(self.viewer.layers, layer.name if layer is not None else ""):
            if role_of(heatmap) == ROLE_HEATMAP:
                heatmap.visible = bool(checked)

    def _fail(self, err: BaseException) -> None:
        self.message.setText(str(err))
        notify_error(err)
        return None


def run_default_model(viewer: Viewer, layer: Layer) -> None:
    """Layer context menu: dock the Inference widget and run the default model on ``layer``."""
    if not isinstance(layer, Image):
        notify_error(MedcadError("the default model runs on an image layer"))
        return
    try:
        name = default_model_name(layer)
    except MedcadError as err:
        notify_error(err)
        return
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET_NAME)
    widget.select_image(layer.name)
    if not widget.select_model(name):
        notify_error(MedcadError(f"model '{name}' is not registered"))
        return
    widget.run()
