"""Detection lists in LUNA16's columns, merged across cases (world mm, LPS).

``annotations.csv`` lists true lesions (accepted, edited, added) with their diameter;
``candidates.csv`` lists every finding with class 1 (positive) or 0 (rejected: the hard
negatives a detector learns most from).  ``seriesuid`` is the case name, never a DICOM UID.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from ..errors import MedcadError
from ..findings import Findings, Status
from .labelmap import centre_on_grid

ANNOTATION_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
CANDIDATE_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "class"]


def _xyz(finding, ndim: int) -> list[str]:
    centre = list(centre_on_grid(finding, ndim)) + [0.0] * (3 - ndim)
    return [f"{value:.3f}" for value in centre]


def annotation_rows(case: str, findings: Findings, ndim: int) -> list[list[str]]:
    return [[case, *_xyz(f, ndim), f"{f.diameter_mm:.3f}"] for f in findings if f.status.is_positive]


def candidate_rows(case: str, findings: Findings, ndim: int, include_pending: bool) -> list[list[str]]:
    """Positives as class 1, rejected (and, when included, pending) as class 0."""
    rows = []
    for f in findings:
        if f.status == Status.PENDING and not include_pending:
            continue
        rows.append([case, *_xyz(f, ndim), "1" if f.status.is_positive else "0"])
    return rows


def merged_csv(existing: Path, columns: list[str], new_rows: list[list[str]], drop_cases: Iterable[str]) -> str:
    """The existing table without rows of ``drop_cases``, plus ``new_rows``, as CSV text."""
    drop = set(drop_cases)
    kept: list[list[str]] = []
    if existing.is_file():
        try:
            with open(existing, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is not None and header != columns:
                    raise MedcadError(f"unexpected columns {header} (expected {columns})", existing)
                kept = [row for row in reader if row and row[0] not in drop]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise MedcadError(f"cannot read the dataset's table ({err})", existing) from None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(kept + new_rows)
    return buffer.getvalue()
