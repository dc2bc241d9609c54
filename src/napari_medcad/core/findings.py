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


def equivalent_diameter_mm(volume_mm3: float, ndim: int) -> float:
    """The diameter of the sphere (circle in 2-D) of that volume (area): a mask's diameter."""
    if ndim == 2:
        return 2.0 * math.sqrt(volume_mm3 / math.pi)
    return (6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0)


def measurement_problem(finding: Finding) -> str | None:
    """Why ``finding``'s probability or diameter cannot go into a dataset (None: they can).

    NaN or infinity would make the export's JSON invalid and its tables meaningless, and a
    negative diameter draws nothing; findings reach an export from CSV files, review files and
    the viewer, so the export asks this of every one of them.
    """
    if not math.isfinite(finding.probability):
        return f"a probability of {finding.probability}"
    if not math.isfinite(finding.diameter_mm) or finding.diameter_mm < 0:
        return f"a diameter of {finding.diameter_mm} mm (it must be a number >= 0)"
    return None


#: the columns a findings table must have; the others have defaults
_POSITION_COLUMNS = ("coordX", "coordY", "coordZ")


def read_findings_csv(path: str | os.PathLike, geometry: Geometry | None = None,
                      seriesuid: str | None = None) -> Findings:
    """Findings from a CSV in LUNA16 columns: ours, a plain LUNA16 annotations or submission
    file, or one written by hand.

    A table of several series (LUNA16's annotations.csv holds all of them) is refused unless
    ``seriesuid`` says which series' rows are this image's findings: read whole, another scan's
    nodules would be exported as this one's.

    Hand-written tables bring 0-based ids, '1.0' for 1, 'Accepted' for accepted: those are read
    as meant.  Anything else wrong (a duplicate id, a status we do not know, a number that is
    not finite, a negative diameter) is a :class:`MedcadError` naming the line, so the CLI says
    what to fix in one line instead of failing later in the export.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise MedcadError(f"cannot read the findings table ({err})", path) from None
    missing = [column for column in _POSITION_COLUMNS if column not in columns]
    if missing:
        raise MedcadError(f"this table lacks the LUNA16 columns {', '.join(missing)} (it has "
                          f"{', '.join(c for c in columns if c)[:120] or 'no header'})", path)
    rows = _rows_of_series(rows, "seriesuid" in columns, seriesuid, path)
    findings = Findings(geometry=geometry)
    line_of_id: dict[int, int] = {}
    for line, row in rows:
        try:
            finding = _finding_from_row(row, findings, geometry)
        except MedcadError as err:
            raise MedcadError(f"line {line}: {err.reason}", path) from None
        if finding.id in line_of_id:
            raise MedcadError(f"line {line}: id {finding.id} is already used on line {line_of_id[finding.id]} "
                              "(each finding needs its own id)", path)
        line_of_id[finding.id] = line
        findings.add(finding)
    return findings


def _rows_of_series(rows: list, has_column: bool, seriesuid: str | None, path: Path) -> list:
    """The rows of one series: ``seriesuid``'s, or all when the table holds at most one."""
    series = list(dict.fromkeys((row.get("seriesuid") or "").strip() for _, row in rows)) if has_column else []
    if seriesuid is not None:
        if not has_column:
            raise MedcadError("this table has no seriesuid column to choose a series by", path)
        chosen = [(line, row) for line, row in rows if (row.get("seriesuid") or "").strip() == seriesuid.strip()]
        if not chosen:
            raise MedcadError(f"no row of series {seriesuid!r} ({_series_list(series)})", path)
        return chosen
    if len(series) > 1:
        raise MedcadError(f"this table holds the findings of {len(series)} series ({_series_list(series)}): "
                          "say which are this image's (export --seriesuid)", path)
    return rows


def _series_list(series: list[str]) -> str:
    shown = ", ".join(repr(s) for s in series[:3])
    return f"the table holds {shown}" + (f" and {len(series) - 3} more" if len(series) > 3 else "")


def _finding_from_row(row: dict[str, str | None], findings: Findings, geometry: Geometry | None) -> Finding:
    centre: tuple[float, ...] = tuple(_number(row, column) for column in _POSITION_COLUMNS)
    if geometry is not None and geometry.ndim == 2:
        centre = centre[:2]  # LUNA16 rows always have a z; a 2-D image's world has none
    diameter = _number(row, "diameter_mm", default=0.0)
    if diameter < 0:
        raise MedcadError(f"diameter_mm is {diameter:g}; a diameter cannot be negative")
    volume = _optional_number(row, "volume_mm3")
    if volume is not None and volume < 0:
        raise MedcadError(f"volume_mm3 is {volume:g}; a volume cannot be negative")
    id_text = _cell(row, "id")
    return Finding(
        id=_whole_number(id_text) if id_text else findings.next_id(),
        label=_cell(row, "label") or "nodule",
        probability=_number(row, "probability", default=1.0),
        centre_world_mm=centre,
        diameter_mm=diameter,
        centre_index_zyx=findings.world_to_index(centre) if geometry is not None else (),
        volume_mm3=volume,
        mean_hu=_optional_number(row, "mean_hu"),
        status=_status(_cell(row, "status")),
        note=row.get("note") or "",
    )


def _cell(row: dict[str, str | None], column: str) -> str:
    value = row.get(column)
    return value.strip() if isinstance(value, str) else ""


def _number(row: dict[str, str | None], column: str, default: float | None = None) -> float:
    """The finite number in ``column``; ``default`` when the cell is empty (None: it is required)."""
    text = _cell(row, column)
    if not text:
        if default is None:
            raise MedcadError(f"{column} is empty")
        return default
    try:
        value = float(text)
    except ValueError:
        raise MedcadError(f"{column} {text[:30]!r} is not a number") from None
    if not math.isfinite(value):
        raise MedcadError(f"{column} is {text[:30]!r}; it must be a finite number")
    return value


def _optional_number(row: dict[str, str | None], column: str) -> float | None:
    """Descriptive columns (volume, mean HU): empty or 'nan' means not measured, as pandas writes it."""
    text = _cell(row, column)
    if not text or text.lower() == "nan":
        return None
    return _number(row, column)


def _whole_number(text: str) -> int:
    """An id: a whole number >= 0, also when written '1.0' (spreadsheets do)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise MedcadError(f"id {text[:30]!r} is not a whole number >= 0")
    return int(value)


def _status(text: str) -> Status:
    """A status in any letter case; empty means pending."""
    try:
        return Status(text.lower() or Status.PENDING.value)
    except ValueError:
        raise MedcadError(f"unknown status {text[:30]!r} (use {', '.join(s.value for s in Status)})") from None
