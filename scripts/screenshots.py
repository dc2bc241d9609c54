"""Screenshots for the README, taken from a real napari window (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py [NAME ...]

Each shot drives the plugin's own widgets the way a user would and saves docs/<name>.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
PLUGIN = "napari-medcad"


def _settle(app, rounds: int = 20) -> None:
    for _ in range(rounds):
        app.processEvents()


def _wait(app, runner, timeout_s: float = 300) -> None:
    import time

    start = time.monotonic()
    while runner.running and time.monotonic() - start < timeout_s:
        app.processEvents()
        time.sleep(0.01)
    if runner.running or runner.last_error is not None:
        raise SystemExit(f"the job did not finish: {runner.last_error}")


def shot_preprocess(viewer, app):
    """The real CT: a lung-window + Gaussian pipeline and a lung mask made with the Preprocess widget."""
    from napari_medcad.napari.widgets.preprocess import PreprocessWidget

    viewer.open_sample(PLUGIN, "lung_ct")
    widget = PreprocessWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Preprocess (napari-medcad)", area="right")
    widget.set_operation("lung_mask")
    widget.add_step()
    widget.run()
    _wait(app, widget.runner)
    widget.steps.clear()
    for op, params in (("window", {"preset": "lung"}), ("gaussian", {"sigma_mm": 0.7})):
        widget.set_operation(op)
        for name, value in params.items():
            widget.set_param(name, value)
        widget.add_step()
    widget.input_combo.setCurrentText("lung1 CT")
    widget.run()
    _wait(app, widget.runner)
    viewer.layers["lung1 CT"].visible = False
    mask = viewer.layers["lung1 CT [lung_mask]"]
    mask.opacity = 0.3
    viewer.layers.move(viewer.layers.index(mask), len(viewer.layers))  # on top of the windowed CT
    viewer.layers.move(viewer.layers.index("lung1 nodule (expert label)"), len(viewer.layers))
    viewer.layers.selection.active = mask
    return viewer.layers["lung1 nodule (expert label)"]


REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "lung1_image.nrrd"


def shot_findings(viewer, app, rescore: bool | None = None):
    """The built-in detector run from the Inference widget on the real CT (the whole scan when the
    workspace's real data is there, else the shipped crop), with the expert label for comparison.
    ``rescore``: switch the graph rescorer on or off (None: as the model's card advises)."""
    import SimpleITK as sitk

    from napari_medcad.napari.layers import labels_layer_data
    from napari_medcad.napari.widgets.inference import InferenceWidget

    if REAL_CT.exists():
        [image_layer] = viewer.open(str(REAL_CT), plugin=PLUGIN)
        expert = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT.with_name("lung1_label.nrrd"))))
        data, kwargs, _ = labels_layer_data(expert, image_layer, "expert label (lung1)", opacity=0.0)
        viewer.add_labels(data, **kwargs)
    else:
        viewer.open_sample(PLUGIN, "lung_ct")
        image_layer = viewer.layers[0]
    widget = InferenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Inference (napari-medcad)", area="right")
    widget.select_image(image_layer.name)
    widget.heatmap_check.setChecked(True)
    if rescore is not None:
        widget.rescore_check.setChecked(rescore)
    widget.run()
    _wait(app, widget.runner)
    viewer.layers.selection.active = image_layer
    expert_layer = next(layer for layer in viewer.layers if "expert" in layer.name)
    expert_layer.visible = False
    return expert_layer  # show the slice of the expert's nodule


def shot_review(viewer, app):
    """Review of the detector's findings on the phantom CT sample: two decisions made with the
    keyboard actions (accept, reject), the next finding selected and centred."""
    import os
    import tempfile

    from qtpy.QtCore import Qt

    from napari_medcad.napari.widgets.inference import InferenceWidget
    from napari_medcad.napari.widgets.review import ReviewWidget

    os.environ["NAPARI_MEDCAD_REVIEWS"] = tempfile.mkdtemp(prefix="medcad-review-shot-")
    image_layer, truth_layer, _points = viewer.open_sample(PLUGIN, "phantom_ct")
    truth_layer.visible = False
    inference = InferenceWidget(viewer)
    inference.select_image(image_layer.name)
    inference.run()
    _wait(app, inference.runner)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Review findings (napari-medcad)", area="right")
    _settle(app)
    review.start_review()
    ids = review.visible_ids()
    if ids:
        review.select_finding(ids[0])
        review.accept_current()
    if len(ids) > 2:
        review.select_finding(ids[1])
        review.reject_current()
        review.select_finding(ids[2])
    model = review.table.model()
    for column in range(model.columnCount()):  # the shot shows decisions; positions are in the table
        if str(model.headerData(column, Qt.Orientation.Horizontal)).endswith(" mm"):
            review.table.setColumnHidden(column, True)
    review.table.resizeColumnsToContents()
    viewer.window._qt_window.resize(1600, 900)  # room for the table's status column
    image_layer.contrast_limits = (-1000, 300)  # a lung-ish window
    _settle(app)
    return None


def shot_graph(viewer, app):
    """The detector + GNN on the real CT with the candidate graph shown, and the attention map of
    the self-attention classifier over the expert nodule's slice."""
    from napari_medcad.napari.demo import show_labelled_slice
    from napari_medcad.napari.widgets.inference import InferenceWidget

    expert_layer = shot_findings(viewer, app, rescore=True)  # lung-nodule-ct with its GNN rescorer switched on
    widget = next(w for w in viewer.window.dock_widgets.values() if isinstance(w, InferenceWidget))
    while widget.busy:
        _settle(app, 1)
    for layer in viewer.layers:  # the graph over the image: hide masks, boxes and heatmap
        if any(word in layer.name for word in ("findings", "boxes", "masks", "probability")):
            layer.visible = False
    show_labelled_slice(viewer, expert_layer)
    _settle(app)
    widget.explain_combo.setCurrentIndex(widget.explain_combo.findData("nodule-attention2d"))
    widget.explain()
    _wait(app, widget.runner)
    _settle(app)
    return expert_layer


SHOTS = {"preprocess": shot_preprocess, "findings": shot_findings, "review": shot_review, "graph": shot_graph}


def main(names: list[str]) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medcad.napari.demo import show_labelled_slice

    DOCS.mkdir(exist_ok=True)
    for name in names or list(SHOTS):
        viewer = napari.Viewer(title=f"napari-medcad: {name}")
        app = QApplication.instance()
        viewer.window._qt_window.resize(1400, 900)
        _settle(app)
        focus = SHOTS[name](viewer, app)  # the Labels layer whose largest slice to show, if any
        _settle(app)
        if focus is not None:
            show_labelled_slice(viewer, focus)
        viewer.reset_view()
        _settle(app)
        out = DOCS / f"{name}.png"
        viewer.screenshot(str(out), canvas_only=False, flash=False)
        viewer.close()
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
