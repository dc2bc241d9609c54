"""Image info dock widget: geometry and safe header fields of the selected layer, the cursor's
position in patient coordinates (LPS mm) with the value under it, and a Labels layer on the
selected image's exact grid for drawing masks that save with the right geometry."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ...core.errors import MedcadError
from ...core.image import napari_world_to_lps
from ..layers import geometry_from_layer, labels_layer_data, META_KEY
from .text_area import description_area


def _fmt(values, digits: int = 3) -> str:
    """Numbers with at most ``digits`` decimals and no trailing zeros: (0.5703, 0.5703, 5)."""

    def one(value) -> str:
        text = f"{float(value):.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    return "(" + ", ".join(one(v) for v in values) + ")"


class ImageInfoWidget(QWidget):
    """Read-only facts about the active layer, kept up to date as selection and cursor move."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._fields: dict[str, QLabel] = {}
        form = QFormLayout()
        for key in ("layer", "modality", "size (x, y, z)", "spacing (mm)", "origin (LPS mm)",
                    "direction", "data type", "header", "cursor (LPS mm)", "value"):
            label = QLabel("-")
            label.setWordWrap(True)
            label.setObjectName(key)
            self._fields[key] = label
            # header fields can run to several lines: they scroll rather than squeeze the rows
            form.addRow(key, description_area(label, lines=2) if key == "header" else label)
        self.new_labels_button = QPushButton("New labels layer on this image's grid")
        self.new_labels_button.setToolTip(
            "A Labels layer with the image's shape, spacing, origin and direction: "
            "what you paint saves (File > Save Selected Layers) with the image's geometry."
        )
        self.new_labels_button.clicked.connect(self.add_labels_layer)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.new_labels_button)
        layout.addStretch(1)

        self.viewer.layers.selection.events.active.connect(self._on_active)
        self.viewer.cursor.events.position.connect(self._on_cursor)
        self._on_active()

    # ---------------------------------------------------------------------------------------
    def _active_image(self):
        layer = self.viewer.layers.selection.active
        return layer if isinstance(layer, (Image, Labels)) else None

    def field(self, key: str) -> str:
        return self._fields[key].text()

    def _on_active(self, event=None) -> None:
        layer = self._active_image()
        self.new_labels_button.setEnabled(isinstance(layer, Image))
        if layer is None:
            for label in self._fields.values():
                label.setText("-")
            return
        info = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
        header = info.get("metadata", {})
        try:
            geometry = geometry_from_layer(layer)
        except MedcadError as err:
            self._fields["layer"].setText(f"{layer.name}: {err}")
            return
        shape = layer.data.shape[: geometry.ndim]
        self._fields["layer"].setText(layer.name)
        self._fields["modality"].setText(info.get("modality", "unknown (not opened by napari-medcad)"))
        self._fields["size (x, y, z)"].setText(_fmt(shape[::-1], 0))
        self._fields["spacing (mm)"].setText(_fmt(geometry.spacing_xyz, 4))
        self._fields["origin (LPS mm)"].setText(_fmt(geometry.origin_xyz, 3))
        self._fields["direction"].setText(_fmt(geometry.direction, 3))
        self._fields["data type"].setText(str(layer.data.dtype))
        shown = {k: v for k, v in header.items() if k not in ("source_file",)}
        self._fields["header"].setText("; ".join(f"{k}: {v}" for k, v in shown.items()) or "-")
        self._on_cursor()

    def _on_cursor(self, event=None) -> None:
        position = np.asarray(self.viewer.cursor.position, dtype=float)
        layer = self._active_image()
        if layer is None or len(position) < layer.ndim:
            return
        world = position[-layer.ndim :]
        self._fields["cursor (LPS mm)"].setText(_fmt(napari_world_to_lps(world), 1))
        value = layer.get_value(position, world=True)
        self._fields["value"].setText("-" if value is None else str(value))

    def add_labels_layer(self):
        """Add an empty Labels layer aligned voxel-for-voxel with the active image."""
        layer = self._active_image()
        if not isinstance(layer, Image):
            return None
        shape = layer.data.shape[: layer.ndim]
        data, kwargs, _ = labels_layer_data(np.zeros(shape, dtype=np.uint8), layer, name=f"{layer.name} labels")
        new = self.viewer.add_labels(data, **kwargs)
        self.viewer.layers.selection.active = new
        return new
