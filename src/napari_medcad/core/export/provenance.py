"""medcad_export.json: the dataset's manifest and each case's provenance.

One file for the whole dataset: the class values (stable once given, so earlier label files
stay valid), the channel layout, the pseudonym counter, and per case where its findings came
from (model, version, thresholds), what the reader decided and when, the source image's
content signature, software versions and what de-identification left out.  Only numbers,
fixed vocabulary and our own names go in: no paths, no notes, no header text.
"""

from __future__ import annotations

import json
import math
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from ..errors import MedcadError
from ..findings import Findings, Status
from .dataset import MANIFEST_NAME, check_dataset_folder

FORMAT = "napari-medcad export"
VERSION = 1
_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: provenance keys copied from the findings when their values are plain (no paths, no text blobs)
_MODEL_KEYS = ("model", "model_version", "threshold", "decoding", "device")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("napari-medcad", "numpy", "SimpleITK", "pydicom", "scipy", "torch", "monai"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def load_manifest(root: Path) -> dict[str, Any]:
    """The dataset's manifest; a folder with other content and no manifest is refused."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        check_dataset_folder(root)
        return {"format": FORMAT, "version": VERSION, "classes": {}, "channel_names": None, "ndim": None,
                "next_case_number": 1, "cases": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise MedcadError("the dataset's medcad_export.json is damaged", path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("cases"), dict):
        raise MedcadError("not a napari-medcad dataset manifest", path)
    if int(data.get("version", 0)) > VERSION:
        raise MedcadError("this dataset was written by a newer napari-medcad; update it", path)
    return data


def check_case_name(name: str) -> str:
    """A user's case name, kept inside the dataset: letters, digits, '_' and '-', no dot, no path."""
    cleaned = "_".join(str(name).strip().split())
    if not _CASE_NAME.match(cleaned):
        raise MedcadError(f"invalid case name {str(name)[:80]!r}: use 1 to 64 letters, digits, '_' or '-', "
                          "starting with a letter or digit (no dots, slashes or absolute paths)")
    return cleaned


def choose_case_name(manifest: dict, signature: str, requested: str | None,
                     usable: Callable[[str], bool] = lambda name: True) -> tuple[str, list[str]]:
    """``(case, replaced)``: the case to write and the existing cases of this image it replaces.

    A case belongs to the image whose content signature it records.  The same image always
    replaces its earlier case (exporting again after more review must not add it twice); a
    name held by another image is refused, since replacing it would delete another patient's
    case.  Names are compared ignoring letter case: on macOS and Windows case_0001 and
    CASE_0001 are the same files.  Without a requested name the image keeps its pseudonym, or
    takes the next ``case_NNNN`` that ``usable`` accepts (one that spells nothing of the patient).
    """
    cases = manifest["cases"]
    same_image = sorted(name for name, entry in cases.items() if entry.get("image_signature") == signature)
    if requested is not None:
        case = check_case_name(requested)
        _refuse_other_image(cases, case, same_image)
        return case, same_image
    own = [name for name in same_image if usable(name)]
    if own:
        return own[0], same_image
    number = int(manifest.get("next_case_number", 1))
    taken = {name.lower() for name in cases}
    while f"case_{number:04d}" in taken or not usable(f"case_{number:04d}"):
        number += 1
    manifest["next_case_number"] = number + 1
    return f"case_{number:04d}", same_image


def _refuse_other_image(cases: dict, case: str, same_image: list[str]) -> None:
    """Refuse ``case`` when a case of that name (in any letter case) holds another image."""
    holder = next((name for name in cases if name.lower() == case.lower() and name not in same_image), None)
    if holder is not None:
        other = str(cases[holder].get("image_signature") or "not recorded")
        raise MedcadError(f"the dataset's case {holder!r} holds a different image (content signature {other[:12]}...); "
                          "choose another case name, or leave the name out to get a new pseudonym")


def _plain(value: Any) -> Any:
    """Numbers, booleans and short identifiers only; anything that could be a path is dropped."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None  # NaN is not JSON
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value if len(value) <= 80 and "/" not in value and "\\" not in value else None
    if isinstance(value, dict):
        return {str(k): v for k, v in ((k, _plain(v)) for k, v in value.items()) if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return None


def model_provenance(findings: Findings) -> dict[str, Any]:
    return {key: _plain(findings.provenance[key]) for key in _MODEL_KEYS if key in findings.provenance}


def decisions(findings: Findings, drawn: dict[int, str]) -> list[dict[str, Any]]:
    """Each finding's decision, with the review's time and action when the review recorded them."""
    review = findings.provenance.get("review") or {}
    recorded = review.get("decisions") or {}
    out = []
    for f in sorted(findings, key=lambda f: f.id):
        decision = recorded.get(str(f.id)) or {}
        if f.status.is_positive:
            used = drawn.get(f.id, "none")
        elif f.status == Status.PENDING:
            used = "background (pending: see pending_policy)"
        else:
            used = "background"
        out.append({
            "id": f.id, "label": f.label, "status": f.status.value, "source": _plain(f.source),
            "probability": round(f.probability, 6),
            "centre_world_mm": [round(v, 3) for v in f.centre_world_mm],
            "diameter_mm": round(f.diameter_mm, 3),
            "decided_at": _plain(decision.get("time")), "decided_by_action": _plain(decision.get("action")),
            "label_map": used,
        })
    return out


def status_counts(findings: Findings) -> dict[str, int]:
    return {status.value: sum(1 for f in findings if f.status == status) for status in Status}
