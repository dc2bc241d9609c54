"""What an export must not carry, and the proof that it does not.

Nothing identifying is copied on purpose: images are written from voxels and geometry only,
case names are pseudonyms, source paths and free-text notes are left out.  This module reads
the source's DICOM header (when there is one) to *say* which identifying fields were present
and dropped, and keeps their values in memory only, to check that no staged text or image
header contains them before the export commits.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

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


def check_no_identifiers(files: list[Path], header: SourceHeader, case_name: str) -> None:
    """Refuse to commit when any staged file, or the case name, holds an identifying value."""
    forbidden = header.forbidden_strings()
    if not forbidden:
        return
    for keyword, values in forbidden.items():
        for value in values:
            if value.lower() in case_name.lower():
                raise MedcadError(f"the case name contains the patient's {keyword}; choose another case name")
    for path in files:
        content = _readable_bytes(path).lower()
        for keyword, values in forbidden.items():
            for value in values:
                if value.lower().encode("utf-8", "ignore") in content:
                    raise MedcadError(f"refusing to export: the {keyword} would appear in {path.name}")
