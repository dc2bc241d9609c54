"""Benchmark: review actions on a table of 5,000 findings, each saved atomically and durably.

    python benchmarks/bench_review.py [--findings 5000] [--actions 200]

Prints the median and 95th percentile time of accept / move / undo, each including the fsync'd
atomic rewrite of the review file (target: accept at most 50 ms median).  The viewer side of the
same target (selecting a row and moving the view) is measured by bench_review_gui.py once the
review widget exists.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from napari_medcad.core.findings import Finding, Findings
    from napari_medcad.core.image import Geometry
    from napari_medcad.core.review import ReviewSession

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=5000)
    parser.add_argument("--actions", type=int, default=200)
    args = parser.parse_args(argv)

    geometry = Geometry((0.7, 0.7, 1.25), (-180.0, -180.0, -300.0), tuple(np.eye(3).ravel()))
    rng = np.random.default_rng(0)
    findings = Findings(geometry=geometry, shape_zyx=(300, 512, 512), provenance={"model": "bench"})
    for i in range(1, args.findings + 1):
        index = rng.uniform((0, 0, 0), (300, 512, 512))
        findings.add(Finding(id=i, label="nodule", probability=float(rng.uniform()), diameter_mm=float(rng.uniform(3, 30)),
                             centre_world_mm=tuple(geometry.index_to_world(index)), centre_index_zyx=tuple(index),
                             volume_mm3=100.0, mean_hu=-50.0, bbox_index_zyx=((1, 2, 3), (4, 5, 6))))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "review.json"
        started = time.perf_counter()
        session = ReviewSession.start(findings, "bench", path)
        first_save = time.perf_counter() - started
        timings: dict[str, list[float]] = {"accept": [], "move": [], "undo": []}
        ids = rng.choice(np.arange(1, args.findings + 1), size=args.actions, replace=False)
        for finding_id in ids:
            for kind, act in (("accept", lambda: session.accept(int(finding_id))),
                              ("move", lambda: session.move(int(finding_id), rng.uniform(-100, 100, 3))),
                              ("undo", session.undo)):
                t = time.perf_counter()
                act()
                timings[kind].append(time.perf_counter() - t)
        size_mb = path.stat().st_size / 1e6
    print(f"review of {args.findings} findings, {args.actions} actions of each kind; file {size_mb:.1f} MB; "
          f"first save {first_save * 1000:.0f} ms")
    print(f"{'action':8s} {'median ms':>10s} {'p95 ms':>8s}")
    for kind, values in timings.items():
        values_ms = np.asarray(values) * 1000
        print(f"{kind:8s} {np.median(values_ms):10.1f} {np.percentile(values_ms, 95):8.1f}")
    print("target: accept <= 50 ms median ->", "met" if np.median(timings["accept"]) * 1000 <= 50 else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
