"""Benchmark: lung window + resampling to 1 mm isotropic + Gaussian smoothing (sigma 1 mm) of a
300 x 512 x 512 int16 CT with 0.7 x 0.7 x 2.5 mm voxels.

Compares, in one run, napari-medcad's pipeline (device "auto": on a CPU, torch for resampling
and SciPy for smoothing; and device "reference": SciPy/NumPy only) with the same steps written
in plain NumPy/SciPy.  Each variant runs in a fresh subprocess so its peak resident memory
(``ru_maxrss``, which sees NumPy and torch buffers, unlike tracemalloc) is its own.

    python benchmarks/bench_preprocess.py            # prints a table and the ratios
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE_ZYX = (300, 512, 512)
SPACING_XYZ = (0.7, 0.7, 2.5)
LUNG_WINDOW = (-600.0, 1500.0)
TARGET_MM = 1.0
SIGMA_MM = 1.0
VARIANTS = ("medcad auto", "medcad reference", "plain SciPy")


def synthetic_ct(path: Path) -> None:
    """A CT-like volume: air, an elliptic body with two lungs and a spine, noise (seeded)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE_ZYX[1], : SHAPE_ZYX[2]]
    plane = np.full(SHAPE_ZYX[1:], -1000, np.int16)
    plane[((yy - 256) / 180.0) ** 2 + ((xx - 256) / 230.0) ** 2 <= 1] = 40
    for centre_x in (160, 352):
        plane[((yy - 240) / 120.0) ** 2 + ((xx - centre_x) / 70.0) ** 2 <= 1] = -850
    plane[(yy - 380) ** 2 + (xx - 256) ** 2 <= 30**2] = 700
    volume = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16, shape=SHAPE_ZYX)
    for z in range(SHAPE_ZYX[0]):
        volume[z] = plane + rng.integers(-40, 41, SHAPE_ZYX[1:], dtype=np.int16)
    volume.flush()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def run_variant(name: str, input_path: Path, output_path: Path) -> dict:
    """One variant in this process; returns seconds and memory figures."""
    volume = np.load(input_path)
    if name.startswith("medcad"):
        from napari_medcad.core.image import Geometry, MedicalImage
        from napari_medcad.core.preprocess import Pipeline

        if name == "medcad auto":
            import torch  # noqa: F401  (imported up front so its memory counts in the baseline)
        pipeline = Pipeline.from_list([
            {"op": "window", "params": {"preset": "lung", "output": "unit"}},
            {"op": "resample", "params": {"spacing_xyz": TARGET_MM}},
            {"op": "gaussian", "params": {"sigma_mm": SIGMA_MM}},
        ])
        image = MedicalImage(volume, Geometry.identity(3, SPACING_XYZ), modality="CT", name="ct")
        device = "auto" if name == "medcad auto" else "reference"
        baseline = peak_mb()
        start = time.perf_counter()
        result = pipeline.run(image, device=device).array
    else:
        from scipy import ndimage

        baseline = peak_mb()
        start = time.perf_counter()
        level, width = LUNG_WINDOW
        windowed = (np.clip(volume.astype(np.float32), level - width / 2, level + width / 2)
                    - (level - width / 2)) / width
        zoom = np.asarray(SPACING_XYZ[::-1]) / TARGET_MM
        resampled = ndimage.zoom(windowed, zoom, order=1)
        del windowed
        sigma = SIGMA_MM / TARGET_MM
        result = ndimage.gaussian_filter(resampled, sigma)
    seconds = time.perf_counter() - start
    peak = peak_mb()
    np.save(output_path, result)
    return {"seconds": seconds, "baseline_mb": baseline, "peak_mb": peak, "shape": list(result.shape)}


def max_difference(first: Path, second: Path) -> float:
    a, b = np.load(first, mmap_mode="r"), np.load(second, mmap_mode="r")
    return max(float(np.abs(a[z] - b[z]).max()) for z in range(a.shape[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.input, args.output)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as folder:
        folder = Path(folder)
        synthetic_ct(folder / "ct.npy")
        results = {}
        for index, name in enumerate(VARIANTS):
            output = folder / f"out{index}.npy"
            completed = subprocess.run(
                [sys.executable, __file__, "--variant", name, "--input", str(folder / "ct.npy"),
                 "--output", str(output)],
                check=True, capture_output=True, text=True,
            )
            results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
            results[name]["output"] = output
        torch_vs_reference = max_difference(results["medcad auto"]["output"], results["medcad reference"]["output"])

    import torch

    print(f"window {LUNG_WINDOW} + resample to {TARGET_MM} mm + Gaussian {SIGMA_MM} mm of a "
          f"{'x'.join(map(str, SHAPE_ZYX))} int16 CT, spacing {SPACING_XYZ} mm")
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads\n")
    print(f"{'variant':<18}{'time s':>8}{'peak MB':>9}{'above start MB':>16}  output shape")
    for name, figures in results.items():
        print(f"{name:<18}{figures['seconds']:>8.2f}{figures['peak_mb']:>9.0f}"
              f"{figures['peak_mb'] - figures['baseline_mb']:>16.0f}  {tuple(figures['shape'])}")
    plain, auto = results["plain SciPy"], results["medcad auto"]
    print(f"\nspeed-up of medcad auto over plain SciPy: {plain['seconds'] / auto['seconds']:.2f}x")
    print(f"peak memory ratio medcad auto / plain SciPy: {auto['peak_mb'] / plain['peak_mb']:.2f} "
          f"(above start: {(auto['peak_mb'] - auto['baseline_mb']) / (plain['peak_mb'] - plain['baseline_mb']):.2f})")
    print(f"max |auto - reference| on the [0, 1] output: {torch_vs_reference:.2e}")


if __name__ == "__main__":
    main()
