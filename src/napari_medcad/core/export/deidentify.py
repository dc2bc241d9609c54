"""What an export must not carry, and the proof that it does not.

Nothing identifying is copied on purpose: images are written from voxels and geometry only,
case names are pseudonyms, source paths and free-text notes are left out.  This module reads
the source's DICOM header (when there is one) to *say* which identifying fields were present
and dropped, and keeps their values in memory only, to check that no staged text or image
header contains them before the export commits.

How a value is looked for (:func:`check_no_identifiers`):

* in every staged file (JSON keys and strings, CSV cells that are not numbers, image headers),
  as a whole word: bounded by characters that are not letters or digits, so "DOE^JOHN" is
  found in "doe_john" or "John" but "CHAN" is not found in "channel_names" nor "MONA" in "monai";
* except single words the exporter writes on its own ("case", "ball", "centre" in
  "centre_world_mm": :func:`exporter_words`), which say nothing about a patient, and numbers of
  fewer than six digits ("0001", "2026"), which occur in any table by chance;
* those two are still looked for, anywhere in the text, in what a person typed for this case:
  its case name and class names (where "john" in "johnsmith" counts too).

Pseudonyms are chosen so that they never contain an identifier (patient ID "0001" makes the
first case case_0002); a user-chosen name that does is refused.
"""

from __future__ import annotations

import ast
import csv
import functools
import gzip
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import MedcadError

#: DICOM keywords that identify a patient, a visit or a place; none is ever exported
IDENTIFYING_FIELDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
    "OtherPatientNames", "OtherPatientIDsSequence", "PatientBirthName", "PatientMotherBirthName",
    "PatientAddress", "PatientTelephoneNumbers", "PatientAge", "PatientSex", "PatientWeight", "PatientSize",
    "MedicalRecordLocator", "IssuerOfPatientID", "AccessionNumber", "StudyID", "StudyDescription",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName",
    "RequestingPhysician", "DeviceSerialNumber", "StudyDate", "SeriesDate", "AcquisitionDate",
    "ContentDate", "AcquisitionDateTime", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "SeriesDescription", "ImageComments", "PatientComments",
)
#: of those, the ones whose values are searched for in the staged files (dates and names)
_CHECKED_VALUES = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientAddress", "AccessionNumber", "InstitutionName", "InstitutionAddress", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID",
)
_MIN_CHECKED_CHARS = 4  # shorter values ("M", "045Y") would match by chance
_MIN_CHECKED_DIGITS = 6  # numbers shorter than this (an ID "0001", a year) occur in any table by chance
#: the exporter's pseudonyms: the word "case" is ours, only the number could spell a patient ID
_PSEUDONYM = re.compile(r"case_(\d+)")
#: the exporter's code, whose string constants are its own words (see exporter_words): this package,
#: and the findings and review modules that name statuses, sources and review actions
_HERE = Path(__file__).resolve().parent
_VOCABULARY_SOURCES = (_HERE, _HERE.parent / "findings.py", _HERE.parent / "review.py")
_MAX_HEADERS = 5000  # a header per file; more than this and we read a sample


@dataclass
class SourceHeader:
    """What the source's DICOM headers held: field names for the record, values kept private."""

    kind: str  # "DICOM" or "not DICOM" or "none"
    present: list[str] = field(default_factory=list)
    files_read: int = 0
    _values: dict[str, set[str]] = field(default_factory=dict, repr=False)

    def report(self) -> dict:
        """The part that goes into the provenance: names of fields, never their values."""
        return {
            "source_format": self.kind,
            "dicom_headers_read": self.files_read,
            "identifying_fields_present_and_not_exported": sorted(self.present),
            "never_exported": [
                "DICOM header values (only voxels and geometry are written)",
                "source file and folder names (case names are pseudonyms)",
                "reader notes (free text may name the patient)",
                "the source case's name from the findings table (seriesuid)",
            ],
        }

    def forbidden_strings(self) -> dict[str, set[str]]:
        return self._values


def _values_of(element_value) -> set[str]:
    """A header value and, for person names, its components: 'DOE^JOHN' -> DOE^JOHN, DOE, JOHN."""
    items = element_value if isinstance(element_value, (list, tuple)) or type(element_value).__name__ == "MultiValue" \
        else [element_value]
    out: set[str] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        out.add(text)
        for part in text.replace("=", "^").split("^"):
            part = part.strip()
            if part:
                out.add(part)
                out.update(word for word in part.split() if word)
    return {value for value in out if len(value) >= _MIN_CHECKED_CHARS}


def read_source_header(source_path: str | os.PathLike | None) -> SourceHeader:
    """Identifying fields present in the DICOM file(s) at ``source_path`` (headers only)."""
    if source_path is None:
        return SourceHeader(kind="none")
    path = Path(source_path)
    from ..io.paths import extension_of, iter_folder_files, looks_like_dicom

    if path.is_dir():
        candidates = [p for p in iter_folder_files(path, limit=_MAX_HEADERS)]
    elif path.is_file():
        candidates = [path]
    else:
        raise MedcadError("the source image does not exist", path)
    header = SourceHeader(kind="not DICOM")
    import pydicom

    for candidate in candidates:
        if not looks_like_dicom(candidate) and extension_of(candidate):
            continue  # a .png or .nii: no DICOM header (extension-less files may be DICOM)
        try:
            ds = pydicom.dcmread(candidate, stop_before_pixels=True, force=True)
        except Exception:  # unreadable file: the reader would have refused it already
            continue
        if "SOPClassUID" not in ds and "Modality" not in ds and "PatientName" not in ds:
            continue  # forced reading of a non-DICOM file yields junk, not a header
        header.kind = "DICOM"
        header.files_read += 1
        for keyword in IDENTIFYING_FIELDS:
            value = ds.get(keyword)
            if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
                continue
            if keyword not in header.present:
                header.present.append(keyword)
            if keyword in _CHECKED_VALUES:
                header._values.setdefault(keyword, set()).update(_values_of(value))
    return header


def _nifti_header(path: Path) -> bytes:
    """A .nii.gz file's header and extensions: everything before the voxels (vox_offset)."""
    import struct

    with gzip.open(path, "rb") as stream:
        head = stream.read(352)
        if len(head) < 352:
            return head
        offset = struct.unpack("<f", head[108:112])[0]
        if not 352 <= offset <= 1 << 24:  # big-endian or odd header: fall back to the fixed part
            offset = struct.unpack(">f", head[108:112])[0]
        extra = int(offset) - 352 if 352 <= offset <= 1 << 24 else 0
        return head + stream.read(extra)


def _png_metadata(path: Path) -> bytes:
    """A PNG's chunks other than pixel data (text chunks are where names would hide)."""
    import struct

    data = path.read_bytes()
    out, position = [], 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind != b"IDAT":
            out.append(data[position + 8:position + 8 + length])
        position += 12 + length
    return b"".join(out)


def _readable_bytes(path: Path) -> bytes:
    """What a recipient could read as text: text files whole, images' headers (voxels are numbers,
    and searching them would refuse exports whose pixel values happen to spell a date)."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return _nifti_header(path)
    if name.endswith(".png"):
        return _png_metadata(path)
    return path.read_bytes()


def _words(text: str) -> list[str]:
    """Runs of letters and digits, lower case (any script: "Müller" is one word)."""
    return re.findall(r"[^\W_]+", text.casefold())


def _whole_word_pattern(value: str) -> re.Pattern:
    """``value``'s words in order, separated by anything that is not a letter or digit, and not
    inside a longer word: "DOE^JOHN" matches "doe_john" and "Doe John", not "doejohnson"."""
    body = r"[\W_]+".join(re.escape(word) for word in _words(value))
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])")


@functools.lru_cache(maxsize=1)
def exporter_words() -> frozenset[str]:
    """Every word of the string constants in the exporter's code (docstrings aside): the JSON
    keys, fixed values, folder and column names it writes for every case alike ("case",
    "ball", "centre_world_mm").  Such a word in the output tells nothing about a patient, so
    finding it is no reason to refuse; a patient called Ball is still looked for in what was
    typed for the case.  Read from the source so the list cannot fall behind the code; without
    the source the list is empty and the check only gets stricter.
    """
    words: set[str] = set()
    sources = [path for source in _VOCABULARY_SOURCES
               for path in (sorted(source.glob("*.py")) if source.is_dir() else [source])]
    for source in sources:
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        words.update(word for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                     for word in _words(node.value))
    return frozenset(words)


def _searched_everywhere(value: str) -> bool:
    """Whether ``value`` is looked for in every file, or only in what was typed for the case."""
    words = _words(value)
    if not words:
        return False
    if all(word.isdigit() for word in words):
        return sum(len(word) for word in words) >= _MIN_CHECKED_DIGITS
    return len(words) > 1 or words[0] not in exporter_words()


def _readable_text(path: Path) -> str:
    """What a recipient could read in a staged file, as text (pieces on lines of their own):
    JSON keys and strings (decoded, so "M\\u00fcller" is Müller), CSV cells other than numbers
    (a measurement is not a name, and an ID would match one by chance), image headers; anything
    else whole."""
    name = path.name.lower()
    if name.endswith(".json"):
        try:
            return "\n".join(_json_strings(json.loads(path.read_text(encoding="utf-8"))))
        except (UnicodeDecodeError, ValueError):
            pass
    elif name.endswith(".csv"):
        try:
            rows = csv.reader(io.StringIO(path.read_text(encoding="utf-8")))
            return "\n".join(cell for row in rows for cell in row if not _is_number(cell))
        except (UnicodeDecodeError, csv.Error):
            pass
    return _readable_bytes(path).decode("utf-8", errors="replace")


def _json_strings(data) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield str(key)
            yield from _json_strings(value)
    elif isinstance(data, list):
        for item in data:
            yield from _json_strings(item)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _typed_leak(text: str, forbidden: dict[str, set[str]]) -> str | None:
    """The field whose value (any of them, anywhere in ``text``) a person's text contains."""
    folded = text.casefold()
    for keyword, values in forbidden.items():
        if any(value.casefold() in folded for value in values):
            return keyword
    return None


def case_name_leak(case_name: str, header: SourceHeader) -> str | None:
    """The identifying field a case name contains, if any.  Of a pseudonym (case_NNNN) only the
    number is the case's own: the word "case" is the exporter's."""
    pseudonym = _PSEUDONYM.fullmatch(case_name)
    return _typed_leak(pseudonym.group(1) if pseudonym else case_name, header.forbidden_strings())


def check_no_identifiers(files: list[Path], header: SourceHeader, case_name: str,
                         typed_text: dict[str, str] | None = None) -> None:
    """Refuse to commit when a staged file, the case name or text typed for the case (``typed_text``:
    what it is -> the text) holds an identifying value (the rules are in the module docstring)."""
    forbidden = header.forbidden_strings()
    if not forbidden:
        return
    leaked = case_name_leak(case_name, header)
    if leaked:
        raise MedcadError(f"the case name contains the patient's {leaked}; choose another case name")
    patterns = [(keyword, _whole_word_pattern(value)) for keyword, values in forbidden.items()
                for value in sorted(values) if _searched_everywhere(value)]
    for path in files:
        text = _readable_text(path).casefold()
        for keyword, pattern in patterns:
            if pattern.search(text):
                raise MedcadError(f"refusing to export: the {keyword} would appear in {path.name}")
    for what, text in (typed_text or {}).items():
        leaked = _typed_leak(text, forbidden)
        if leaked:
            raise MedcadError(f"refusing to export: the {leaked} would appear in {what}; change it")
