"""A folder of phantom cases for training and benchmarks: NIfTI images, labels, LUNA16 annotations."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import write_text
from ..errors import MedcadError
from ..io import write_image
from .config import PhantomConfig
from .ct import generate_chest_ct

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a set: independent of the set's size."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def case_name(seed: int, index: int) -> str:
    return f"phantom_s{seed}_{index:03d}"


def write_phantom_cases(out_dir: str | os.PathLike, n_cases: int, seed: int, config: PhantomConfig | None = None,
                        progress: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Write ``n_cases`` cases into ``out_dir``; return the image paths in case order.

    Each case is ``<name>.nii.gz`` (int16 HU) with ``<name>_label.nii.gz`` (nodule instances
    1..N) beside it; ``annotations.csv`` lists every nodule in LUNA16 columns (world LPS mm,
    ``seriesuid`` = case name).  ``progress(done, total, message)`` is called after each case.
    """
    if int(n_cases) != n_cases or n_cases < 0:
        raise MedcadError(f"the number of cases must be a whole number of at least 0, got {n_cases}")
    if int(seed) != seed or seed < 0:
        raise MedcadError(f"the seed must be a whole number of at least 0, got {seed}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedcadError(f"cannot create the output folder ({err.strerror or err})", out_dir) from None
    images, rows = [], []
    for index in range(int(n_cases)):
        name = case_name(int(seed), index)
        case = generate_chest_ct(case_seed(seed, index), config)
        image = case.image.with_array(case.image.array, name=name)
        images.append(write_image(image, out_dir / f"{name}.nii.gz"))
        write_image(case.labels.with_array(case.labels.array, name=f"{name}_label"), out_dir / f"{name}_label.nii.gz")
        rows.extend((name, *(f"{c:.3f}" for c in nodule.centre_world_mm), f"{nodule.diameter_mm:.3f}")
                    for nodule in case.nodules)
        if progress is not None:
            progress(index + 1, int(n_cases), f"wrote {name} ({len(case.nodules)} nodules)")
    _write_csv(out_dir / "annotations.csv", rows)
    return images


def _write_csv(path: Path, rows) -> None:
    """Write atomically: a reader never sees half a table."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ANNOTATION_COLUMNS)
    writer.writerows(rows)
    try:
        write_text(path, buffer.getvalue())
    except OSError as err:
        raise MedcadError(f"could not write the annotations ({err.strerror or err})", path) from None
