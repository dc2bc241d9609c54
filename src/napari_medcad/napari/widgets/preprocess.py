"""Preprocess dock widget: build a pipeline step by step, run it on a layer off the GUI thread,
save and load it as JSON.

Thin by design: operations, parameter checks and running live in
``napari_medcad.core.preprocess``; the form is generated from the operation registry, and
this module only turns form fields into a :class:`Pipeline` and results into layers.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any, Optional

import numpy as np
from napari.layers import Image, Labels, Shapes
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import Cancelled, MedcadError
from ...core.image import napari_world_to_lps
from ...core.preprocess import (
    AXES_KEY,
    DEVICE_CHOICES,
    OPERATIONS,
    TIME_AXES,
    Param,
    Pipeline,
    Step,
    bounding_box_index,
    bounding_box_world,
    world_box_around,
)
from ...core.preprocess.masks import MASK_NOTE
from ..jobs import JobRunner, UserError, notify_error
from ..layers import META_KEY, image_from_layer, image_layer_data, labels_layer_data, layer_metadata


def _text_for(param: Param, value: Any) -> str:
    """How a value of a text-edited parameter is shown: "1, 1, 2.5", JSON for boxes, "" for None."""
    if value is None:
        return ""
    if param.kind in ("floats", "ints"):
        values = value if isinstance(value, (list, tuple)) else [value]
        return ", ".join(f"{v:g}" for v in values)
    if param.kind == "optional_float":
        return f"{value:g}"
    return json.dumps(value)


def _value_from_text(op: str, param: Param, text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        if param.kind in ("index_box", "world_box"):
            return json.loads(text)
        values = [float(part) for part in re.split(r"[,\s]+", text.strip("[]() ")) if part]
        if param.kind == "optional_float":
            (value,) = values
            return value
        return values
    except ValueError:
        raise MedcadError(f"{op}: cannot read {param.name} from '{text}'") from None


class PreprocessWidget(QWidget):
    """Pipeline builder and runner over the selected Image or Labels layer."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.steps: list[Step] = []
        self._editors: dict[str, QWidget] = {}

        self.input_combo = QComboBox()
        self.time_check = QCheckBox("3-D layer is 2-D + time (first axis)")
        self.op_combo = QComboBox()
        for operation in OPERATIONS.values():
            self.op_combo.addItem(f"{operation.family}: {operation.title}", operation.name)
        self.op_combo.currentIndexChanged.connect(self._build_form)
        self.form = QFormLayout()
        self.region_combo = QComboBox()
        self.region_button = QPushButton("Box from region layer")
        self.region_button.setToolTip("Selected shapes of a Shapes layer, or the labelled voxels of a Labels layer")
        self.region_button.clicked.connect(lambda: self.use_region())
        region_row = QHBoxLayout()
        region_row.addWidget(self.region_combo, 1)
        region_row.addWidget(self.region_button)
        self.region_row = QWidget()
        self.region_row.setLayout(region_row)

        self.step_list = QListWidget()
        buttons = QGridLayout()
        for column, (text, slot) in enumerate((
            ("Add step", self.add_step),
            ("Remove", lambda: self.remove_step(self.step_list.currentRow())),
            ("Up", lambda: self.move_step(self.step_list.currentRow(), -1)),
            ("Down", lambda: self.move_step(self.step_list.currentRow(), 1)),
        )):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button, 0, column)
        for column, (text, slot) in enumerate((("Save...", self._save_dialog), ("Load...", self._load_dialog))):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button, 1, column * 2, 1, 2)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICE_CHOICES)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.runner = JobRunner()
        self.message = QLabel("")
        self.message.setWordWrap(True)

        top = QFormLayout()
        top.addRow("input", self.input_combo)
        top.addRow("", self.time_check)
        top.addRow("operation", self.op_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(self.form)
        layout.addWidget(self.region_row)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("pipeline"))
        layout.addWidget(self.step_list)
        run_row = QHBoxLayout()
        run_row.addWidget(QLabel("device"))
        run_row.addWidget(self.device_combo, 1)
        run_row.addWidget(self.run_button)
        layout.addLayout(run_row)
        layout.addWidget(self.runner)
        layout.addWidget(self.message)

        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self.input_combo.currentIndexChanged.connect(self._on_input_changed)
        self._refresh_layers()
        self._build_form()

    # layers -----------------------------------------------------------------------------------
    def _refresh_layers(self, event=None) -> None:
        for combo, kinds in ((self.input_combo, (Image, Labels)), (self.region_combo, (Shapes, Labels))):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, kinds)])
            if current:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._on_input_changed()

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def input_layer(self):
        return self._layer(self.input_combo.currentText())

    def _on_input_changed(self, index=None) -> None:
        layer = self.input_layer()
        self.time_check.setChecked(_layer_header(layer).get(AXES_KEY) == TIME_AXES)

    # parameter form ---------------------------------------------------------------------------
    @property
    def operation(self):
        return OPERATIONS[self.op_combo.currentData()]

    def set_operation(self, name: str) -> None:
        self.op_combo.setCurrentIndex(self.op_combo.findData(name))

    def _build_form(self, index=None) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)
        self._editors = {}
        operation = self.operation
        for param, default in zip(operation.params, operation.defaults().values()):
            if param.kind == "float":
                editor = QDoubleSpinBox()
                editor.setRange(-1e6, 1e6)
                editor.setDecimals(4)
            elif param.kind == "int":
                editor = QSpinBox()
                editor.setRange(-1_000_000, 1_000_000)
            elif param.kind == "choice":
                editor = QComboBox()
                editor.addItems(param.choices)
            else:
                editor = QLineEdit()
                editor.setPlaceholderText("empty: none" if default is None else "")
            editor.setToolTip(param.help)
            self._editors[param.name] = editor
            self.form.addRow(param.name, editor)
            self.set_param(param.name, default)
        self.region_row.setVisible(operation.name == "crop")

    def set_param(self, name: str, value: Any) -> None:
        """Show ``value`` in a parameter's editor (text editors also take text as typed)."""
        param = next(p for p in self.operation.params if p.name == name)
        editor = self._editors[name]
        if value is inspect.Parameter.empty:  # a required parameter: start empty
            value = None
        if isinstance(editor, (QDoubleSpinBox, QSpinBox)):
            editor.setValue(value)
        elif isinstance(editor, QComboBox):
            editor.setCurrentText(value)
        else:
            editor.setText(value if isinstance(value, str) else _text_for(param, value))

    def params(self) -> dict[str, Any]:
        """The form's values; text fields that are empty are left out (defaults apply)."""
        values = {}
        for param in self.operation.params:
            editor = self._editors[param.name]
            if isinstance(editor, (QDoubleSpinBox, QSpinBox)):
                values[param.name] = editor.value()
            elif isinstance(editor, QComboBox):
                values[param.name] = editor.currentText()
            else:
                value = _value_from_text(self.operation.name, param, editor.text())
                if value is not None:
                    values[param.name] = value
        return values

    # steps ------------------------------------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline:
        return Pipeline(tuple(self.steps))

    def set_pipeline(self, pipeline: Pipeline) -> None:
        self.steps = list(pipeline.steps)
        self._show_steps()

    def _show_steps(self, current: int = -1) -> None:
        self.step_list.clear()
        for step in self.steps:
            self.step_list.addItem(step.describe())
        self.step_list.setCurrentRow(current)

    def add_step(self) -> Optional[Step]:
        self.message.setText("")
        try:
            step = Step(self.operation.name, self.params())
        except MedcadError as err:
            return self._fail(err)
        self.steps.append(step)
        self._show_steps(len(self.steps) - 1)
        return step

    def remove_step(self, row: int) -> None:
        if 0 <= row < len(self.steps):
            del self.steps[row]
            self._show_steps(min(row, len(self.steps) - 1))

    def move_step(self, row: int, offset: int) -> None:
        target = row + offset
        if 0 <= row < len(self.steps) and 0 <= target < len(self.steps):
            self.steps[row], self.steps[target] = self.steps[target], self.steps[row]
            self._show_steps(target)

    def save_pipeline(self, path) -> None:
        try:
            self.pipeline.save(path)
            self.message.setText(f"pipeline saved to {path}")
        except (MedcadError, OSError) as err:
            self._fail(err)

    def load_pipeline(self, path) -> None:
        try:
            self.set_pipeline(Pipeline.load(path))
            self.message.setText(f"pipeline loaded from {path}")
        except MedcadError as err:
            self._fail(err)

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save pipeline", "pipeline.json", "JSON (*.json)")
        if path:
            self.save_pipeline(path)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load pipeline", "", "JSON (*.json)")
        if path:
            self.load_pipeline(path)

    # crop region ------------------------------------------------------------------------------
    def use_region(self, layer=None) -> None:
        """Fill the crop box from a Shapes layer's selected shapes (all if none are selected),
        in world mm, or from the labelled voxels of a Labels layer: in voxels when it lies on
        the input's grid (exact, also on oblique grids), else in world mm."""
        layer = layer or self._layer(self.region_combo.currentText())
        image_layer = self.input_layer()
        index_box = world_box = None
        try:
            if layer is None or image_layer is None:
                raise MedcadError("choose an input layer and a Shapes or Labels layer for the region")
            target = image_from_layer(image_layer)
            if isinstance(layer, Shapes):
                chosen = sorted(layer.selected_data) or range(len(layer.data))
                vertices = [vertex for index in chosen for vertex in layer.data[index]]
                if not vertices:
                    raise MedcadError(f"Shapes layer '{layer.name}' has no shapes")
                world = np.array([napari_world_to_lps(layer.data_to_world(v)) for v in vertices])
                world_box = world_box_around(world, target.ndim)
            else:
                region = image_from_layer(layer)
                same_grid = region.spatial_shape == target.spatial_shape and np.allclose(
                    region.geometry.affine_zyx, target.geometry.affine_zyx, atol=1e-6
                )
                if same_grid:
                    index_box = bounding_box_index(region)
                else:
                    world_box = bounding_box_world(region)
        except MedcadError as err:
            self._fail(err)
            return
        self.set_operation("crop")
        self.set_param("box_index_zyx", index_box)
        self.set_param("box_world_xyz", world_box)

    # running ----------------------------------------------------------------------------------
    def run(self):
        """Start the pipeline on the input layer in a worker; returns the worker (None on error)."""
        self.message.setText("")
        layer = self.input_layer()
        try:
            if layer is None:
                raise MedcadError("choose an input Image or Labels layer")
            if not self.steps:
                raise MedcadError("add at least one step to the pipeline")
            image = image_from_layer(layer)
            if self.time_check.isChecked():
                image.metadata[AXES_KEY] = TIME_AXES
        except MedcadError as err:
            return self._fail(err)
        if self.runner.running:
            return self._fail(MedcadError("a pipeline is already running"))
        pipeline = self.pipeline
        self.run_button.setEnabled(False)
        return self.runner.start(
            _run_pipeline,
            pipeline,
            image,
            device=self.device_combo.currentText(),
            on_result=lambda result: self._add_result(result, pipeline, layer.name),
            on_finish=lambda: self.run_button.setEnabled(True),
        )

    def _add_result(self, result, pipeline: Pipeline, source_name: str):
        if result is None:  # cancelled
            return None
        if isinstance(result, UserError):
            self.runner.status.setText(str(result.error))
            return self._fail(result.error)
        metadata = layer_metadata(result, source_layer=source_name)
        if pipeline.makes_labels:
            data, kwargs, kind = labels_layer_data(result.array, result, result.name, metadata=metadata)
        else:
            data, kwargs, kind = image_layer_data(result, metadata=metadata)
        self.message.setText(result.metadata.get(MASK_NOTE, ""))  # an empty mask says so
        return getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    def _fail(self, err: BaseException) -> None:
        self.message.setText(str(err))
        notify_error(err)
        return None


def _run_pipeline(pipeline: Pipeline, image, device: str, progress=None):
    """``pipeline.run`` for the worker.  A user error comes back as the result and a cancelled
    run as None: raised, either would also reach the Qt event loop through the worker's error
    path (a second notice, with a traceback, or a "Cancelled" error after Cancel)."""
    try:
        return pipeline.run(image, progress=progress, device=device)
    except MedcadError as err:
        return UserError(err)
    except Cancelled:
        return None


def _layer_header(layer) -> dict:
    """Our safe header fields of a layer (empty for layers napari-medcad did not make)."""
    if layer is None or not isinstance(layer.metadata, dict):
        return {}
    return dict(layer.metadata.get(META_KEY, {}).get("metadata", {}))
