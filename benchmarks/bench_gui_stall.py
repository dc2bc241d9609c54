"""How long napari's event loop stalls while the Inference widget runs a model (target <= 100 ms).

A 10 ms QTimer probe records the gap between its ticks while the widget runs ``run_model`` on a
realistic chest CT (the real lung1 scan, 512 x 512 x 48, or a phantom with --phantom) in its
napari worker.  The longest gap during inference is the figure; the longest gap while the
result's layers are added (on the GUI thread, one layer per event-loop turn, after inference)
is printed beside it, and so are the time to build the widget and the longest gap while its
background thread imports torch and MONAI (before the first run, as when a user opens it).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_gui_stall.py \
        [--image PATH | --phantom Z Y X] [--model NAME|PATH] [--device auto]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT.parent / "shared" / "data" / "real" / "lung1_image.nrrd"
TARGET_MS = 100.0


def load_image(args):
    if args.phantom:
        from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct

        case = generate_chest_ct(7, PhantomConfig(shape_zyx=tuple(args.phantom), spacing_xyz=(0.7, 0.7, 1.25)))
        return case.image.with_array(case.image.array, name="phantom_ct")
    from napari_medcad.core.io import read_image

    return read_image(args.image)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(REAL_CT), help="CT to run on (default: the real lung1 scan)")
    parser.add_argument("--phantom", type=int, nargs=3, metavar=("Z", "Y", "X"), help="use a phantom of this size")
    parser.add_argument("--model", default="lung-nodule-ct")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--probe-ms", type=int, default=10)
    parser.add_argument("--rescore", action=argparse.BooleanOptionalAction, default=True,
                        help="switch the model's graph rescorer on (default, the heavier path) or off")
    parser.add_argument("--verbose", action="store_true", help="list the longest gaps and what was running")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_medcad.napari.layers import image_layer_data
    from napari_medcad.napari.widgets.inference import InferenceWidget

    image = load_image(args)
    viewer = napari.Viewer(show=True)
    data, kwargs, kind = image_layer_data(image)
    layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
    built = time.perf_counter()
    widget = InferenceWidget(viewer)
    built = time.perf_counter() - built
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.select_image(layer.name)
    if not widget.select_model(args.model):
        widget.add_model_path(args.model)
    widget.device_combo.setCurrentIndex(max(0, widget.device_combo.findData(args.device)))
    if widget.rescore_check.isEnabled():
        widget.rescore_check.setChecked(args.rescore)
    clock = QElapsedTimer()
    gaps: list[tuple[float, str, float, str]] = []  # (gap ms, phase, at ms, status line)
    phase = ["warm-up"]
    last = [None]

    def tick():
        now = clock.nsecsElapsed() / 1e6
        if last[0] is not None:
            gaps.append((now - last[0], phase[0], now, widget.runner.status.text()))
        last[0] = now

    probe = QTimer()
    probe.setInterval(args.probe_ms)
    probe.timeout.connect(tick)
    clock.start()
    probe.start()

    original_add = widget._add_result

    def add_result(*a, **k):
        phase[0] = phase[0].replace("inference", "adding layers")
        return original_add(*a, **k)

    widget._add_result = add_result
    steps: list[tuple[str, float]] = []  # (what the step made or removed, ms), one per event-loop turn
    original_add_layer = widget._add_layer
    made = [""]

    def add_layer(layer_tuple):
        made[0] = f"add {layer_tuple[2]}"
        return original_add_layer(layer_tuple)

    widget._add_layer = add_layer
    original_step = widget._next_step

    def next_step():
        made[0] = "remove/finish"  # unless the step adds a layer
        started = time.perf_counter()
        original_step()
        steps.append((made[0], (time.perf_counter() - started) * 1000))

    widget._next_step = next_step
    warm_up = time.perf_counter()
    while not (widget.warmed_up.is_set() and widget.devices_checked):  # the user picks image and model
        QApplication.processEvents()
        time.sleep(0.001)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.002)
    warm_up = time.perf_counter() - warm_up
    runs = ("first run (after the widget's warm-up)", "second run")
    seconds = []
    for number, _name in enumerate(runs):
        started = time.perf_counter()
        phase[0] = f"inference {number}"
        if widget.run() is None:
            print(f"could not start: {widget.message.text()}", file=sys.stderr)
            return 2
        while widget.runner.running:
            QApplication.processEvents()
            time.sleep(0.001)
        while widget.busy:  # layers arriving, one per event-loop turn
            QApplication.processEvents()
            time.sleep(0.001)
        phase[0] = f"adding layers {number}"
        for _ in range(50):  # let the new layers draw
            QApplication.processEvents()
            time.sleep(0.002)
        seconds.append(time.perf_counter() - started)
        if widget.runner.last_error is not None:
            break
    probe.stop()

    error = widget.runner.last_error
    command = "xvfb-run -a -s \"-screen 0 1600x1000x24\" .venv/bin/python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/bench_gui_stall.py"] + sys.argv[1:])
    print(f"image: {image.name} {image.spatial_shape[::-1]} (x, y, z) voxels, model {args.model}, device {widget.device}")
    print(f"result: {widget.message.text() or widget.runner.status.text()}" + (f", ERROR {error}" if error else ""))
    warm_gaps = np.array([g for g, p, *_ in gaps if p == "warm-up"])
    print(f"opening the widget: built in {built * 1000:.0f} ms; background warm-up (torch, MONAI) {warm_up:.1f} s, "
          f"longest stall meanwhile {warm_gaps.max() if len(warm_gaps) else 0:.0f} ms")
    for number, name in enumerate(runs[: len(seconds)]):
        inference_gaps = np.array([g for g, p, *_ in gaps if p == f"inference {number}"])
        adding_gaps = np.array([g for g, p, *_ in gaps if p == f"adding layers {number}"])
        if len(inference_gaps):
            print(f"{name}, {seconds[number]:.1f} s: longest event-loop stall during inference "
                  f"{inference_gaps.max():.0f} ms (p99 {np.percentile(inference_gaps, 99):.0f} ms, "
                  f"{len(inference_gaps)} ticks of {args.probe_ms} ms; target <= {TARGET_MS:.0f} ms: "
                  f"{'met' if inference_gaps.max() <= TARGET_MS else 'NOT met'}); "
                  f"adding and drawing the result layers {adding_gaps.max() if len(adding_gaps) else 0:.0f} ms")
    if args.verbose:
        print("  layer steps (GUI thread, ms): " + ", ".join(f"{what} {ms:.0f}" for what, ms in steps))
        for gap, phase_name, at, status in sorted(gaps, reverse=True)[:8]:
            print(f"  gap {gap:.0f} ms at {at / 1000:.2f} s ({phase_name}; status: {status})")
    print(f"command: {command}")
    viewer.close()
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
