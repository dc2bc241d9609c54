"""Findings: the one table that flows from inference through layers and review to export.

A finding is one candidate lesion: where it is (voxel and LPS world mm), how big, how sure the
model is, and what the reader decided.  Inference creates them, the napari adapter turns them
into Points / Labels / Shapes layers and back, review changes their status, export writes them.
World positions are the truth; voxel positions are kept for the grid they were found on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import MedcadError
from .image import Geometry

#: LUNA16's submission columns, then ours
LUNA_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
CSV_COLUMNS = LUNA_COLUMNS + ["diameter_mm", "label", "id", "status", "volume_mm3", "mean_hu", "note"]


class Status(str, Enum):
    """What the reader decided about a finding."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EDITED = "edited"
    ADDED = "added"

    @property
    def is_positive(self) -> bool:
        """Findings a training set should treat as true lesions."""
        return self in (Status.ACCEPTED, Status.EDITED, Status.ADDED)


@dataclass
class Finding:
    id: int
    label: str
    probability: float
    centre_world_mm: tuple[float, ...]  # LPS (x, y, z) or (x, y) for 2D images
    diameter_mm: float
    centre_index_zyx: tuple[float, ...] = ()
    volume_mm3: float | None = None
    mean_hu: float | None = None
    bbox_index_zyx: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (start, stop)
    mask_value: int | None = None  # its value in the findings' label map, if any
    status: Status = Status.PENDING
    note: str = ""
    source: str = "model"  # "model" or "reader"
    scores: dict[str, float] = field(default_factory=dict)  # e.g. cnn, gnn probabilities

    def __post_init__(self):
        self.status = Status(self.status)
        self.centre_world_mm = tuple(float(v) for v in self.centre_world_mm)
        self.centre_index_zyx = tuple(float(v) for v in self.centre_index_zyx)
        self.probability = float(self.probability)
        self.diameter_mm = float(self.diameter_mm)
        if self.bbox_index_zyx is not None:
            start, stop = self.bbox_index_zyx
            self.bbox_index_zyx = (tuple(int(v) for v in start), tuple(int(v) for v in stop))
        if not all(math.isfinite(v) for v in self.centre_world_mm):
            raise MedcadError(f"finding {self.id} has a non-finite position")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        data = dict(data)
        if data.get("bbox_index_zyx") is not None:
            data["bbox_index_zyx"] = tuple(tuple(v) for v in data["bbox_index_zyx"])
        return cls(**data)


@dataclass
class Findings:
    """The findings of one image, with the grid they refer to and where they came from."""

    items: list[Finding] = field(default_factory=list)
    geometry: Geometry | None = None
    shape_zyx: tuple[int, ...] = ()
    image_signature: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)  # model name/version, thresholds...

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, finding_id: int) -> Finding:
        for finding in self.items:
            if finding.id == finding_id:
                return finding
        raise KeyError(finding_id)

    def next_id(self) -> int:
        return max((f.id for f in self.items), default=0) + 1

    def add(self, finding: Finding) -> Finding:
        if any(f.id == finding.id for f in self.items):
            raise ValueError(f"finding id {finding.id} already exists")
        self.items.append(finding)
        return finding

    def remove(self, finding_id: int) -> Finding:
        finding = self[finding_id]
        self.items.remove(finding)
        return finding

    def with_status(self, *statuses: Status) -> list[Finding]:
        return [f for f in self.items if f.status in statuses]

    def above(self, threshold: float) -> list[Finding]:
        return [f for f in self.items if f.probability >= threshold]

    def copy(self) -> "Findings":
        return Findings(
            items=[replace(f, scores=dict(f.scores)) for f in self.items],
            geometry=self.geometry,
            shape_zyx=self.shape_zyx,
            image_signature=self.image_signature,
            provenance=json.loads(json.dumps(self.provenance)),
        )

    # world <-> voxel (through the grid's Geometry: the one place that converts) -------------
    def world_to_index(self, centre_world_mm: Sequence[float]) -> tuple[float, ...]:
        if self.geometry is None:
            raise MedcadError("these findings carry no image geometry")
        return tuple(float(v) for v in self.geometry.world_to_index(np.asarray(centre_world_mm)))

    def index_to_world(self, centre_index_zyx: Sequence[float]) -> tuple[float, ...]:
        if self.geometry is None:
            raise MedcadError("these findings carry no image geometry")
        return tuple(float(v) for v in self.geometry.index_to_world(np.asarray(centre_index_zyx)))

    # serialisation --------------------------------------------------------------------------
    def to_dict(self, include_items: bool = True) -> dict[str, Any]:
        """Plain data; ``include_items=False`` leaves ``items`` empty for callers that keep
        their findings already encoded (the review file, rewritten after every action)."""
        return {
            "items": [f.to_dict() for f in self.items] if include_items else [],
            "geometry": self.geometry.to_dict() if self.geometry else None,
            "shape_zyx": list(self.shape_zyx),
            "image_signature": self.image_signature,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Findings":
        return cls(
            items=[Finding.from_dict(item) for item in data.get("items", [])],
            geometry=Geometry.from_dict(data["geometry"]) if data.get("geometry") else None,
            shape_zyx=tuple(data.get("shape_zyx", ())),
            image_signature=data.get("image_signature", ""),
            provenance=data.get("provenance", {}),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Findings":
        return cls.from_dict(json.loads(text))

    def to_csv(self, seriesuid: str, statuses: Iterable[Status] | None = None) -> str:
        """CSV whose first five columns are LUNA16's submission columns (world mm, LPS)."""
        wanted = set(statuses) if statuses is not None else None
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for f in sorted(self.items, key=lambda f: -f.probability):
            if wanted is not None and f.status not in wanted:
                continue
            x, y, z = (list(f.centre_world_mm) + [0.0])[:3]
            writer.writerow([
                seriesuid, f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", f"{f.probability:.6f}",
                f"{f.diameter_mm:.3f}", f.label, f.id, f.status.value,
                "" if f.volume_mm3 is None else f"{f.volume_mm3:.3f}",
                "" if f.mean_hu is None else f"{f.mean_hu:.1f}", f.note,
            ])
        return buffer.getvalue()


def read_findings_csv(path: str | os.PathLike, geometry: Geometry | None = None) -> Findings:
    """Findings from a CSV in LUNA16 columns (ours or a plain LUNA16 annotations/submission file)."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MedcadError(f"cannot read the findings table ({err})", path) from None
    findings = Findings(geometry=geometry)
    for number, row in enumerate(rows, start=1):
        try:
            centre = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            if geometry is not None and geometry.ndim == 2:
                centre = centre[:2]  # LUNA16 rows always have a z; a 2-D image's world has none
            probability = float(row.get("probability") or 1.0)
            diameter = float(row.get("diameter_mm") or 0.0)
        except (KeyError, TypeError, ValueError):
            raise MedcadError(
                f"row {number} lacks LUNA16 columns coordX, coordY, coordZ (and probability / diameter_mm)", path
            ) from None
        finding_id = int(row["id"]) if row.get("id") else findings.next_id()
        index = findings.world_to_index(centre) if geometry is not None else ()
        findings.add(Finding(
            id=finding_id,
            label=row.get("label") or "nodule",
            probability=probability,
            centre_world_mm=centre,
            diameter_mm=diameter,
            centre_index_zyx=index,
            volume_mm3=float(row["volume_mm3"]) if row.get("volume_mm3") else None,
            mean_hu=float(row["mean_hu"]) if row.get("mean_hu") else None,
            status=Status(row.get("status") or "pending"),
            note=row.get("note") or "",
        ))
    return findings
