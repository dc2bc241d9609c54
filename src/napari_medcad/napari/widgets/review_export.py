"""The Review widget's Export: the reviewed case added to a training dataset folder, in a worker.

Apart from the widget because it is optional (without the export engineer's core function,
``core.export.export_case``, there is no Export button) and runs a job of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from qtpy.QtWidgets import QFileDialog, QPushButton, QWidget

from ...core.errors import MedcadError
from ..jobs import JobRunner, notify_error
from ..layers import image_from_layer

try:  # the export engineer's core function; without it there is no Export button
    from ...core.export import export_case
except ImportError:  # pragma: no cover - depends on the installed version
    export_case = None


class CaseExport:
    """The Export button and its job's progress, for the Review widget to place.

    ``case()`` gives what is under review when the reader exports: the session, the image
    layer and the labels layer (any of them None); ``report`` shows the outcome."""

    def __init__(self, parent: QWidget, case: Callable[[], tuple], report: Callable[[str], None]):
        self.parent = parent
        self.case = case
        self.report = report
        self.button = QPushButton("Export case to dataset...")
        self.button.clicked.connect(lambda: self.export())
        self.runner = JobRunner()

    def export(self, out_dir=None):
        """Add the case (reviewed findings, masks) to a training dataset folder, in a worker."""
        session, image_layer, labels_layer = self.case()
        if export_case is None or session is None or image_layer is None:
            return None
        if self.runner.running:
            notify_error(MedcadError("an export is already running"))
            return None
        if out_dir is None:
            out_dir = QFileDialog.getExistingDirectory(self.parent, "Dataset folder (created or added to)")
            if not out_dir:
                return None
        image = image_from_layer(image_layer)
        labels = image_from_layer(labels_layer) if labels_layer is not None else None
        source = getattr(getattr(image_layer, "source", None), "path", None)
        self.button.setEnabled(False)
        return self.runner.start(
            export_case, image, session.reviewed_findings(), Path(out_dir), labels=labels,
            source_path=source, on_result=self._exported, on_finish=lambda: self.button.setEnabled(True))

    def _exported(self, result) -> None:
        text = result.summary() if hasattr(result, "summary") else f"exported {getattr(result, 'case', '')}"
        self.report(text)
        from napari.utils.notifications import show_info

        show_info(text)
