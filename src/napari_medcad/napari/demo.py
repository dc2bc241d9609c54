"""`napari-medcad demo`: napari with a sample and every dock widget of this plugin."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import MedcadError

PLUGIN = "napari-medcad"


def plugin_widget_names() -> list[str]:
    """Display names of the dock widgets this plugin contributes, in manifest order."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN)
    return [widget.display_name for widget in manifest.contributions.widgets or []]


def open_demo_viewer(sample: str = "lung_ct", show: bool = True):
    """A viewer holding ``sample`` with all our widgets docked (tests call this too)."""
    import napari
    from napari.layers import Image

    viewer = napari.Viewer(title="napari-medcad demo", show=show)
    try:
        viewer.open_sample(PLUGIN, sample)
    except KeyError:
        viewer.close()
        raise MedcadError(f"no sample called '{sample}'") from None
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.9 keeps overlays on the canvas
    scale_bar = canvas.overlays.scale_bar if canvas is not None else viewer.scale_bar
    scale_bar.visible = True
    for name in plugin_widget_names():
        viewer.window.add_plugin_dock_widget(PLUGIN, name)
    images = [layer for layer in viewer.layers if isinstance(layer, Image)]
    if images:
        viewer.layers.selection.active = images[0]
    show_labelled_slice(viewer)
    return viewer


def show_labelled_slice(viewer, layer=None) -> None:
    """Show the slice where ``layer``'s labels (a nodule) are largest; by default the first
    Labels layer's, so a 3-D sample opens on its finding, not in the middle."""
    import numpy as np
    from napari.layers import Labels

    for layer in [layer] if layer is not None else list(viewer.layers):
        if isinstance(layer, Labels) and layer.data.ndim == 3 and layer.data.any():
            counts = np.count_nonzero(np.asarray(layer.data), axis=(1, 2))
            index = np.zeros(3)
            index[0] = int(np.argmax(counts))
            viewer.dims.set_point(0, layer.data_to_world(index)[0])
            return


def run_demo(sample: str = "lung_ct", screenshot: str | None = None) -> int:
    import napari

    viewer = open_demo_viewer(sample)
    if screenshot is None:
        napari.run()
        return 0
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_window.resize(1400, 900)
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()  # fit the image to the canvas at its final size
    QApplication.processEvents()
    out = Path(screenshot)
    if not out.parent.exists():
        viewer.close()
        raise MedcadError("the folder for the screenshot does not exist", out.parent)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    viewer.close()
    print(out)
    return 0
