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


SHOTS = {"preprocess": shot_preprocess}


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
