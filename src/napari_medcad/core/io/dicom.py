"""DICOM: folders of series, single 2D files (radiographs) and multi-frame (enhanced) files.

Division of labour:

* pydicom reads headers: it groups a folder's files into series, names them, and reads single
  and multi-frame files whose geometry lives in functional groups, which SimpleITK's GDCM
  reader ignores for most enhanced objects.
* SimpleITK's ImageSeriesReader reads classic one-slice-per-file series, so a series' spacing,
  origin and direction are exactly what ITK-based tools report for it.

Only whitelisted, non-identifying header fields reach ``MedicalImage.metadata``.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MedcadError
from ..image import Geometry, MedicalImage
from .paths import check_memory, iter_folder_files, looks_like_dicom

#: header fields that may be shown and exported: technical, never identifying
SAFE_FIELDS = {
    "Modality": "modality",
    "SeriesDescription": "series_description",
    "BodyPartExamined": "body_part",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
    "SliceThickness": "slice_thickness_mm",
    "KVP": "kvp",
    "ConvolutionKernel": "convolution_kernel",
    "PhotometricInterpretation": "photometric",
    "ViewPosition": "view_position",
    "RescaleType": "rescale_type",
    "SeriesNumber": "series_number",
}
_HEADER_TAGS = [
    "SeriesInstanceUID", "Rows", "Columns", "NumberOfFrames", "ImagePositionPatient",
    "ImageOrientationPatient", "AcquisitionNumber", "SOPClassUID", "InstanceNumber",
    *SAFE_FIELDS,
]


def safe_metadata(ds) -> dict:
    """Whitelisted, non-identifying fields of a pydicom dataset as plain Python values."""
    out = {}
    for keyword, key in SAFE_FIELDS.items():
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
            value = [_plain(v) for v in value]
        else:
            value = _plain(value)
        out[key] = value
    for keyword, key in (("WindowCenter", "window_center"), ("WindowWidth", "window_width")):
        value = ds.get(keyword)
        if value is not None and value != "":
            first = value[0] if hasattr(value, "__iter__") and not isinstance(value, str) else value
            try:
                out[key] = float(first)
            except (TypeError, ValueError):
                pass
    sop = ds.get("SOPClassUID")
    if sop is not None:
        out["sop_class"] = getattr(sop, "name", str(sop))
    return out


def _plain(value):
    if isinstance(value, (int, float, str)):
        return value
    for cast in (int, float):
        try:
            number = cast(value)
            if str(number) == str(value) or cast is float:
                return number
        except (TypeError, ValueError):
            continue
    return str(value)


# ------------------------------------------------------------------------------------------
# reading one file with pydicom


def _read_dataset(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise MedcadError("not a DICOM file (no DICOM header found)", path) from None
    except (EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
        raise MedcadError(f"corrupt DICOM file ({_short(err)})", path) from None
    except Exception as err:  # pydicom raises assorted types on garbage input
        raise MedcadError(f"corrupt DICOM file ({_short(err)})", path) from None


def _short(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:140]


def _functional_group(ds, sequence: str, frame: int | None = None):
    """An item of a functional-group macro, per-frame first, then shared."""
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        groups = ds.PerFrameFunctionalGroupsSequence
        if frame < len(groups):
            seq = getattr(groups[frame], sequence, None)
            if seq:
                return seq[0]
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        seq = getattr(ds.SharedFunctionalGroupsSequence[0], sequence, None)
        if seq:
            return seq[0]
    return None


def _rescale(ds, n_frames: int) -> list[tuple[float, float]]:
    """(slope, intercept) per frame from the classic tags or the pixel-value-transformation group."""
    params = []
    for frame in range(n_frames):
        item = _functional_group(ds, "PixelValueTransformationSequence", frame if n_frames > 1 else None)
        source = item if item is not None and "RescaleSlope" in item else ds
        slope = float(source.get("RescaleSlope", 1) or 1)
        intercept = float(source.get("RescaleIntercept", 0) or 0)
        params.append((slope, intercept))
    return params


def _pixel_spacing_yx(ds, frame: int | None) -> tuple[float, float] | None:
    candidates = []
    item = _functional_group(ds, "PixelMeasuresSequence", frame)
    if item is not None:
        candidates.append(item.get("PixelSpacing"))
    candidates += [ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing")]
    for value in candidates:
        try:
            row, col = float(value[0]), float(value[1])
        except (TypeError, IndexError, ValueError):
            continue
        if row > 0 and col > 0:
            return row, col
    return None


def _orientation(ds, frame: int | None) -> np.ndarray | None:
    item = _functional_group(ds, "PlaneOrientationSequence", frame)
    value = item.get("ImageOrientationPatient") if item is not None else ds.get("ImageOrientationPatient")
    try:
        iop = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        return None
    row, col = iop[:3], iop[3:]
    if np.linalg.norm(row) < 1e-3 or np.linalg.norm(col) < 1e-3:
        return None
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return np.column_stack([row, col, np.cross(row, col)])


def _position(ds, frame: int | None) -> np.ndarray | None:
    item = _functional_group(ds, "PlanePositionSequence", frame)
    value = item.get("ImagePositionPatient") if item is not None else ds.get("ImagePositionPatient")
    try:
        position = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return position if position.shape == (3,) and np.all(np.isfinite(position)) else None


def _decode_pixels(ds, path: Path) -> tuple[np.ndarray, bool]:
    """Pixel array via pydicom; falls back to SimpleITK (GDCM) for codecs pydicom lacks.

    Returns (array, already_rescaled_and_inverted): GDCM applies the modality LUT and
    MONOCHROME1 inversion itself.
    """
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    check_memory(rows * cols * frames * samples * 8, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = ds.pixel_array
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array = apply_color_lut(array, ds)
        return np.asarray(array), False
    except (NotImplementedError, RuntimeError) as err:
        pydicom_reason = _short(err)
    except (ValueError, AttributeError, KeyError, TypeError, IndexError, EOFError) as err:
        raise MedcadError(f"the pixel data is truncated or corrupt ({_short(err)})", path) from None
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise MedcadError(f"cannot decode the pixel data ({pydicom_reason})", path) from None
    array = sitk.GetArrayFromImage(image)
    if frames == 1 and array.ndim >= 3 and array.shape[0] == 1:
        array = array[0]
    return array, True


def _apply_value_transforms(array: np.ndarray, ds, rgb: bool, done_by_gdcm: bool) -> np.ndarray:
    """MONOCHROME1 inversion (so bone is bright) and rescale slope/intercept (CT in HU)."""
    if rgb or done_by_gdcm:
        return array
    multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        bits = int(ds.get("BitsStored", 16) or 16)
        if int(ds.get("PixelRepresentation", 0) or 0) == 0:
            array = (2**bits - 1) - array.astype(np.int64)
        else:
            array = -1 - array.astype(np.int64)
    params = _rescale(ds, array.shape[0] if multi else 1)
    if all(p == (1.0, 0.0) for p in params):
        return _smallest_int(array) if array.dtype == np.int64 else array
    integral = all(s.is_integer() and i.is_integer() for s, i in params)
    out = array.astype(np.int64 if integral else np.float32)
    if multi:
        for k, (slope, intercept) in enumerate(params):
            out[k] = out[k] * (int(slope) if integral else slope) + (int(intercept) if integral else intercept)
    else:
        slope, intercept = params[0]
        out = out * (int(slope) if integral else slope) + (int(intercept) if integral else intercept)
    return _smallest_int(out) if integral else out.astype(np.float32)


def _smallest_int(array: np.ndarray) -> np.ndarray:
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype)
    return array


def _frame_geometry(ds, n_frames: int) -> tuple[Geometry, np.ndarray]:
    """Geometry of a multi-frame object and the frame order that sorts it along its normal."""
    order = np.arange(n_frames)
    spacing_yx = _pixel_spacing_yx(ds, 0) or (1.0, 1.0)
    direction = _orientation(ds, 0)
    positions = [_position(ds, k) for k in range(n_frames)] if "PerFrameFunctionalGroupsSequence" in ds else []
    offsets = ds.get("GridFrameOffsetVector")
    if direction is not None and (not positions or any(p is None for p in positions)):
        base = _position(ds, None)
        if base is not None and offsets is not None and len(offsets) == n_frames:
            positions = [base + float(o) * direction[:, 2] for o in offsets]
        else:
            positions = []
    if direction is not None and positions and all(p is not None for p in positions):
        along = np.array([float(np.dot(p, direction[:, 2])) for p in positions])
        order = np.argsort(along, kind="stable")
        steps = np.diff(along[order])
        if n_frames > 1 and np.all(steps > 1e-6):
            z_spacing = float(np.mean(steps))
        else:
            z_spacing = _slice_spacing(ds)
        origin = positions[order[0]]
        geometry = Geometry(
            (spacing_yx[1], spacing_yx[0], z_spacing), tuple(origin), tuple(direction.ravel())
        )
        return geometry, order
    return Geometry.identity(3, (spacing_yx[1], spacing_yx[0], _slice_spacing(ds))), order


def _slice_spacing(ds) -> float:
    """Distance between slices when positions cannot tell: as GDCM, SpacingBetweenSlices or 1.

    SliceThickness is deliberately not used: it is the slab thickness, not the slice step.
    """
    item = _functional_group(ds, "PixelMeasuresSequence", 0)
    for source in (item, ds):
        if source is None:
            continue
        try:
            value = float(source.get("SpacingBetweenSlices"))
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 1.0


def read_dicom_file(path: str | os.PathLike) -> MedicalImage:
    """One DICOM file: a 2D radiograph, a single CT/MR slice, or a multi-frame object."""
    path = Path(path)
    ds = _read_dataset(path)
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "Rows" in ds and "Columns" in ds:
            raise MedcadError("the pixel data is missing: the file is truncated or incomplete", path)
        kind = getattr(ds.get("SOPClassUID"), "name", None) or "a non-image object"
        raise MedcadError(f"the DICOM file holds no image (it is {kind})", path)
    array, done_by_gdcm = _decode_pixels(ds, path)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    rgb = samples > 1 or ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    array = _apply_value_transforms(array, ds, rgb, done_by_gdcm)
    metadata = safe_metadata(ds) | {"format": "DICOM", "source_file": path.name}
    modality = str(ds.get("Modality", "") or "OT")
    name = str(ds.get("SeriesDescription", "") or "").strip() or path.stem

    if n_frames > 1:
        geometry, order = _frame_geometry(ds, n_frames)
        array = array[order]
        metadata["number_of_frames"] = n_frames
    else:
        direction = _orientation(ds, None)
        position = _position(ds, None)
        spacing_yx = _pixel_spacing_yx(ds, None)
        if direction is not None and position is not None:
            # a slice placed in the patient: keep it 3D (one slice) as ITK does
            spacing_yx = spacing_yx or (1.0, 1.0)
            geometry = Geometry(
                (spacing_yx[1], spacing_yx[0], _slice_spacing(ds)), tuple(position), tuple(direction.ravel())
            )
            array = array[None]
        else:
            if spacing_yx is None:
                metadata["spacing_note"] = "the file states no pixel spacing; 1 mm assumed"
            spacing_yx = spacing_yx or (1.0, 1.0)
            geometry = Geometry.identity(2, (spacing_yx[1], spacing_yx[0]))
    if rgb and array.shape[-1] not in (3, 4):
        raise MedcadError(f"unsupported colour layout {array.shape}", path)
    return MedicalImage(array=array, geometry=geometry, modality=modality, name=name, rgb=rgb, metadata=metadata)


# ------------------------------------------------------------------------------------------
# folders


@dataclass
class SeriesEntry:
    """Files of one image series found in a folder, ready to read."""

    uid: str
    files: list[Path]
    description: str
    modality: str
    multiframe: bool = False
    safe: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.description or f"{self.modality} series"


def scan_folder(folder: str | os.PathLike) -> tuple[list[SeriesEntry], list[tuple[Path, str]]]:
    """Group a folder's DICOM image files into series (recursively).

    Returns the series (largest first) and the files that were skipped, with why.
    """
    folder = Path(folder)
    groups: dict[tuple, list[tuple[float, Path, object]]] = defaultdict(list)
    skipped: list[tuple[Path, str]] = []
    entries: list[SeriesEntry] = []
    for path in iter_folder_files(folder):
        if path.name.upper() == "DICOMDIR" or not looks_like_dicom(path):
            continue
        try:
            ds = _read_dataset(path, stop_before_pixels=True)
        except MedcadError as err:
            skipped.append((path, err.reason))
            continue
        if "Rows" not in ds or "Columns" not in ds:
            continue  # structured reports, RT structure sets, presentation states: not images
        uid = str(ds.get("SeriesInstanceUID", "") or f"no-uid:{path.parent}")
        meta = safe_metadata(ds)
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            entries.append(SeriesEntry(uid, [path], meta.get("series_description", ""),
                                       str(ds.get("Modality", "OT")), True, meta))
            continue
        direction = _orientation(ds, None)
        position = _position(ds, None)
        key_orientation = tuple(np.round(direction[:, :2].ravel(), 3)) if direction is not None else None
        key = (uid, int(ds.Rows), int(ds.Columns), key_orientation)
        along = float(np.dot(position, direction[:, 2])) if direction is not None and position is not None else 0.0
        groups[key].append((along, path, ds))
    for key, members in groups.items():
        members.sort(key=lambda item: (item[0], int(item[2].get("InstanceNumber", 0) or 0)))
        first = members[0][2]
        meta = safe_metadata(first)
        entries.append(SeriesEntry(key[0], [m[1] for m in members], meta.get("series_description", ""),
                                   str(first.get("Modality", "OT")), False, meta))
    entries.sort(key=lambda e: -len(e.files))
    return entries, skipped


def read_series(entry: SeriesEntry) -> MedicalImage:
    """Read one series found by :func:`scan_folder`."""
    if entry.multiframe or len(entry.files) == 1:
        image = read_dicom_file(entry.files[0])
        if entry.description:
            image.name = entry.description
        return image
    import SimpleITK as sitk

    first = entry.files[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in entry.files])
    head = _read_dataset(first, stop_before_pixels=True)
    rows, cols = int(head.Rows), int(head.Columns)
    check_memory(rows * cols * len(entry.files) * 8, first.parent)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        from .itk_formats import itk_reason

        raise MedcadError(f"series '{entry.label}': {itk_reason(err)}", first.parent) from None
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise MedcadError(f"series '{entry.label}': colour volumes are not supported", first.parent)
    if array.dtype == np.int32 or array.dtype == np.int64:
        array = _smallest_int(array)
    metadata = entry.safe | {"format": "DICOM series", "number_of_files": len(entry.files)}
    return MedicalImage(
        array=array,
        geometry=Geometry.from_sitk(image),
        modality=entry.modality or "OT",
        name=entry.label,
        metadata=metadata,
    )


def read_dicom_folder(folder: str | os.PathLike) -> list[MedicalImage]:
    """Every readable image series in a folder, largest first; raises if there is none."""
    folder = Path(folder)
    entries, skipped = scan_folder(folder)
    images, problems = [], [reason for _, reason in skipped]
    for entry in entries:
        try:
            images.append(read_series(entry))
        except MedcadError as err:
            problems.append(err.reason)
    if not images:
        if problems:
            raise MedcadError(f"no readable DICOM series ({problems[0]})", folder)
        if not any(True for _ in iter_folder_files(folder, 1)):
            raise MedcadError("the folder is empty", folder)
        raise MedcadError("no DICOM image series found in the folder", folder)
    _unique_names(images)
    return images


def _unique_names(images: list[MedicalImage]) -> None:
    seen: dict[str, int] = {}
    for image in images:
        count = seen.get(image.name, 0)
        seen[image.name] = count + 1
        if count:
            image.name = f"{image.name} ({count + 1})"
