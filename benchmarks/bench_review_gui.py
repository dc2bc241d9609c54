"""Review widget on a table of 5,000 findings in a real napari viewer (target: <= 50 ms median each).

Two figures, each including Qt's processing of the events the action queued (table, layers,
canvas):
  * select: make a row current -> slice and camera move to the finding, its point and mask highlighted;
  * accept: accept the current finding (atomic, fsync'd review file rewrite, table row, point
    colours); and the same followed by going on to the next row (which moves the view again).
A reference row times napari alone changing the slice and centring the camera (no widget), the
floor under "select".  Each row gives the wall-clock median and the median CPU time of this
process (all its threads, llvmpipe's rendering included): on a machine shared with other jobs
the wall clock also counts waiting for a core, the CPU time does not.  The load average is
printed for that reason.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_review_gui.py \
        [--findings 5000] [--actions 60] [--shape 120 256 256] [--details | --without-details] \
        [--window 1400 900]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time

import numpy as np

TARGET_MS = 50.0


def build_case(count: int, shape_zyx, seed: int = 0):
    from napari_medcad.core.findings import Finding, Findings
    from napari_medcad.core.image import Geometry, MedicalImage

    rng = np.random.default_rng(seed)
    geometry = Geometry((0.7, 0.7, 1.25), (-180.0, -160.0, -300.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    array = rng.integers(-1000, 400, shape_zyx).astype(np.int16)
    image = MedicalImage(array, geometry, modality="CT", name="ct")
    labels = np.zeros(shape_zyx, np.uint16)
    findings = Findings(geometry=geometry, shape_zyx=tuple(shape_zyx), provenance={"model": "bench"})
    centres = np.column_stack([rng.integers(2, s - 2, count) for s in shape_zyx])
    for number, centre in enumerate(centres, start=1):
        labels[tuple(slice(c - 1, c + 2) for c in centre)] = number
        findings.add(Finding(id=number, label="nodule", probability=float(rng.random()),
                             centre_world_mm=tuple(geometry.index_to_world(centre)), centre_index_zyx=tuple(centre),
                             diameter_mm=float(rng.uniform(3, 20)), mask_value=number))
    return image, findings, image.with_array(labels, modality="SEG")


def timed(action, app) -> tuple[float, float]:
    """(wall ms, CPU ms) of the action and the Qt events it queued (table, layers, canvas)."""
    start, cpu = time.perf_counter(), time.process_time()
    action()
    app.processEvents()
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=5000)
    parser.add_argument("--actions", type=int, default=60)
    details = parser.add_mutually_exclusive_group()
    details.add_argument("--details", action="store_true", help="add the boxes layer (one rectangle per finding) "
                         "and the points' id labels even where they are left out by default (over 1,000 in 3-D)")
    details.add_argument("--without-details", action="store_true", help="never add the boxes layer and id labels")
    parser.add_argument("--shape", type=int, nargs=3, default=(120, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--window", type=int, nargs=2, default=(1400, 900), metavar=("WIDTH", "HEIGHT"),
                        help="viewer window size (default 1400 900, as the screenshots; set, because napari reopens "
                             "at its last saved size, and software rendering grows with the canvas' pixels)")
    args = parser.parse_args(argv)

    os.environ["NAPARI_MEDCAD_REVIEWS"] = tempfile.mkdtemp(prefix="medcad-bench-reviews-")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medcad.core.image import lps_to_napari_world
    from napari_medcad.napari.findings_layers import add_findings_layers, findings_layer_data
    from napari_medcad.napari.layers import image_layer_data
    from napari_medcad.napari.widgets.review import ReviewWidget, _camera

    load_before = os.getloadavg()[0]
    image, findings, labels = build_case(args.findings, args.shape)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    data, kwargs, _ = image_layer_data(image)
    viewer.add_image(data, **kwargs)
    layer_data = findings_layer_data(findings, image, labels=labels, source_layer="ct",
                                     details=True if args.details else False if args.without_details else None)
    add_findings_layers(viewer, layer_data)
    boxes = sum(len(item[0]) for item in layer_data if item[2] == "shapes")
    start = time.perf_counter()
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review findings")
    viewer.window._qt_window.resize(*args.window)
    app.processEvents()
    startup_ms = (time.perf_counter() - start) * 1000
    assert widget.session is not None and widget.model.rowCount() == args.findings

    rng = np.random.default_rng(1)
    ids = [f.id for f in findings]
    def napari_alone(world_zyx):  # the floor: napari changing slice and centring the camera
        point = list(viewer.dims.point)
        point[0] = world_zyx[0]
        viewer.dims.point = tuple(point)
        _camera(viewer).center = tuple(world_zyx[1:])

    worlds = [lps_to_napari_world(findings[int(i)].centre_world_mm) for i in rng.choice(ids, args.actions)]
    napari_ms = [timed(lambda w=w: napari_alone(w), app) for w in worlds]
    select_ms = [timed(lambda i=int(i): widget.select_finding(i), app) for i in rng.choice(ids, args.actions)]
    widget.select_finding(widget.visible_ids()[0])
    accept_next_ms = [timed(widget.accept_current, app) for _ in range(args.actions)]
    widget.advance_check.setChecked(False)
    accept_ms = []
    for finding_id in widget.visible_ids()[args.actions + 1:2 * args.actions + 1]:
        widget.select_finding(finding_id)
        app.processEvents()
        accept_ms.append(timed(widget.accept_current, app))
    accepted = sum(f.status.value == "accepted" for f in widget.session.findings)
    assert accepted == 2 * args.actions, accepted

    command = "xvfb-run -a -s \"-screen 0 1600x1000x24\" .venv/bin/python benchmarks/bench_review_gui.py " + \
        shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"command: {command.strip()}")
    print(f"{args.findings} findings, image {tuple(args.shape)}, {boxes} box rectangles, {args.actions} actions each; "
          f"widget start (review file written, table and layers filled): {startup_ms:.0f} ms; "
          f"load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"canvas {'x'.join(str(n) for n in viewer.window._qt_viewer.canvas.size[::-1])} px (width x height)")
    ok = True
    rows = (("napari alone: slice + camera", napari_ms, False), ("select row + move view", select_ms, True),
            ("accept", accept_ms, True), ("accept + go to next", accept_next_ms, True))
    for name, values, targeted in rows:
        wall, cpu = np.asarray(values).T
        median = np.median(wall)
        line = (f"{name:30s} median {median:6.1f} ms   p95 {np.percentile(wall, 95):6.1f} ms   "
                f"CPU median {np.median(cpu):6.1f} ms   ")
        if not targeted:
            print(line + "(reference)")
            continue
        ok &= median <= TARGET_MS
        print(line + f"target <= {TARGET_MS:.0f} ms: {'met' if median <= TARGET_MS else 'MISSED'}")
    viewer.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
