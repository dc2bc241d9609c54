"""What the Inference widget runs off the GUI thread: the model run, the explanation, the warm-up.

Kept apart from the widget (``widgets/inference.py``) because none of it touches a widget: the
jobs run in :class:`~napari_medcad.napari.jobs.JobRunner`'s worker and hand back plain values
(layer data tuples, a heatmap, or a :class:`UserError` to show once), and the warm-up thread
only reports the devices it found through a signal.  torch is imported by these threads, never
here at import time.
"""

from __future__ import annotations

import threading

from qtpy.QtCore import QObject, Signal

from ..core.errors import Cancelled, MedcadError
from ..core.inference.devices import DEVICE_CHOICES
from ..core.inference.run import run_model
from .findings_layers import result_layer_data
from .graph_layers import graph_layer_data
from .jobs import UserError


def run_job(image, card, device: str, source_name: str = "", show_heatmap: bool = False,
            warmed_up: threading.Event | None = None, rescore: bool = True, progress=None):
    """In the worker: the model's result and its layers' data (LayerDataTuples), or an error.

    When a graph rescorer ran, its candidate graph comes too (edges and nodes, every candidate
    with its CNN and GNN scores), so the reader sees what the GNN raised and lowered."""
    if warmed_up is not None:  # importing MONAI in two threads at once is not safe
        warmed_up.wait()
    try:
        result = run_model(image, card, device=device, progress=progress, rescore=rescore)
    except MedcadError as err:
        return UserError(err)
    except Cancelled:
        return None
    source = source_name or image.name
    layers = result_layer_data(result, image, source, show_heatmap=show_heatmap)
    if result.graph is not None and result.graph.n_nodes:
        rescorer = result.report.get("rescoring", {})
        layers += graph_layer_data(result.graph, image, source_layer=source, model=str(rescorer.get("model", "")),
                                   model_version=str(rescorer.get("model_version", "")))
    return result, layers


def explain_job(image, card, slices, warmed_up: threading.Event | None = None, progress=None):
    """In the worker: the classifier's explanation heatmap on the image's grid, or an error."""
    from ..core.explain import explain

    if warmed_up is not None:
        warmed_up.wait()
    try:
        return explain(image, card, slices=slices, progress=progress)
    except MedcadError as err:
        return UserError(err)
    except Cancelled:
        return None


class WarmUpSignals(QObject):
    """Carries the warm-up thread's answer to the GUI thread."""

    devices_known = Signal(object)


def warm_up_in_background(signals: WarmUpSignals, done: threading.Event) -> None:
    """Background thread: import what a run needs, then find the devices (needs torch)."""
    try:
        from ..core.inference.run import warm_up

        warm_up()
        available = available_devices()
    except Exception:  # noqa: BLE001 - torch or MONAI missing or broken: Run will say why
        available = {name: name in ("auto", "cpu") for name in DEVICE_CHOICES}
    finally:
        done.set()
    try:
        signals.devices_known.emit(available)
    except RuntimeError:  # the widget was closed meanwhile
        pass


def available_devices() -> dict[str, bool]:
    """Which device choices work on this machine (auto and cpu always do)."""
    from ..core.inference.devices import cuda_available, mps_available

    return {"auto": True, "cpu": True, "cuda": cuda_available(), "mps": mps_available()}
