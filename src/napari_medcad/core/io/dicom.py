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
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MedcadError
from ..image import Geometry, MedicalImage
from .paths import (
    check_memory,
    folder_is_empty,
    iter_folder_files,
    looks_like_dicom,
    native_output_captured,
    quiet_libraries,
)

#: exceptions pydicom raises while converting malformed values (an IS of '1A', a bad sequence...)
_VALUE_ERRORS = (ValueError, TypeError, LookupError, AttributeError, OverflowError, EOFError, NotImplementedError,
                 struct.error, RuntimeError, OSError, ZeroDivisionError)

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
    """The pydicom dataset of ``path``; raises MedcadError if it is not a readable DICOM file.

    Files without the 128-byte preamble and 'DICM' marker (older exports, raw datasets) are
    retried with ``force=True`` and accepted only if they then hold DICOM-looking elements.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    not_dicom = MedcadError("not a DICOM file (no DICOM header found)", path)
    try:
        with quiet_libraries("pydicom"):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
                except Exception:
                    raise not_dicom from None
                if not _looks_like_dataset(ds):
                    raise not_dicom from None
                _set_transfer_syntax(ds)
    except MedcadError:
        raise
    except MemoryError:
        raise MedcadError("corrupt DICOM file (an element claims more memory than there is)", path) from None
    except Exception as err:  # pydicom raises assorted types on garbage input
        raise MedcadError(f"corrupt DICOM file ({_short(err)})", path) from None
    if len(ds) == 0:
        raise MedcadError("corrupt or truncated DICOM file (no data elements could be read)", path)
    return ds


def _set_transfer_syntax(ds) -> None:
    """A file without file meta information does not name its encoding: state the one pydicom found."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _looks_like_dataset(ds) -> bool:
    """A force-read dataset is DICOM only if it has the elements every image object has."""
    try:
        return "SOPClassUID" in ds or "Modality" in ds or ("Rows" in ds and "Columns" in ds)
    except Exception:
        return False


def _int(ds, keyword: str, default: int) -> int:
    """An integer header value; raises MedcadError naming the element if it is malformed."""
    try:
        value = ds.get(keyword)
    except _VALUE_ERRORS as err:
        raise MedcadError(f"corrupt DICOM header: {keyword} cannot be read ({_short(err)})") from None
    if value is None or value == "":
        return default
    try:
        return int(value)
    except _VALUE_ERRORS:
        raise MedcadError(f"corrupt DICOM header: {keyword} is '{str(value)[:20]}', not a whole number") from None


def _short(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = text.split(" - ")[0]  # pydicom appends advice after " - "
    return text if len(text) <= 140 else text[:137] + "..."


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


def _transfer_syntax_name(ds) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID")
    return getattr(uid, "name", None) or str(uid or "unknown encoding")


def _decode_pixels(ds, path: Path) -> tuple[np.ndarray, bool]:
    """Pixel array via pydicom; falls back to SimpleITK (GDCM) for codecs pydicom lacks.

    Returns (array, already_rescaled_and_inverted): GDCM applies the modality LUT and
    MONOCHROME1 inversion itself (as ``(2**BitsStored - 1) - stored``, the same as we do).
    """
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    frames = _int(ds, "NumberOfFrames", 1)
    samples = _int(ds, "SamplesPerPixel", 1)
    if rows < 1 or cols < 1 or frames < 1 or samples < 1:
        raise MedcadError(f"corrupt DICOM header: an image of {cols} x {rows} pixels and {frames} frames", path)
    check_memory(rows * cols * frames * samples * 8, path)
    try:
        with quiet_libraries("pydicom"):
            array = ds.pixel_array
            if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                array = apply_color_lut(array, ds)
        array = np.asarray(array)
        if not array.dtype.isnative:  # big-endian files: hand on native numbers
            array = array.astype(array.dtype.newbyteorder("="))
        return array, False
    except NotImplementedError:
        pass  # no pydicom plugin for this compression: let GDCM try below
    except RuntimeError as err:  # every plugin failed: unsupported variant, or damaged data
        text = str(err).lower()
        if not any(word in text for word in ("support", "missing dependenc", "handler", "not available")):
            # a decoder ran and found the data damaged; GDCM would only spend seconds on it
            raise MedcadError(f"the pixel data is truncated or corrupt ({_short(err)})", path) from None
    except MemoryError:
        raise
    except Exception as err:  # truncated data, inconsistent header: pydicom raises many types
        raise MedcadError(f"the pixel data is truncated or corrupt ({_short(err)})", path) from None
    import SimpleITK as sitk

    encoding = _transfer_syntax_name(ds)
    cannot = MedcadError(
        f"cannot decode the pixel data ({encoding}): it is damaged, or this compression needs an "
        "optional decoder (pylibjpeg with pylibjpeg-libjpeg and pylibjpeg-openjpeg)",
        path,
    )
    with native_output_captured() as chatter:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise cannot from None
    # GDCM reports some decoder failures (12-bit JPEG, damaged JPEG 2000) only as text on
    # stderr and hands back an image of garbage: refuse it
    if any(word in chatter.text.lower() for word in ("error", "unsupported", "invalid", "corrupt", "failed")):
        raise cannot
    array = sitk.GetArrayFromImage(image)
    if frames == 1 and array.ndim >= 3 and array.shape[0] == 1:
        array = array[0]
    expected = (frames, rows, cols) if frames > 1 else (rows, cols)
    if array.shape[: len(expected)] != expected:
        raise MedcadError(f"the pixel data does not match the header ({encoding})", path)
    return array, True


def _apply_value_transforms(array: np.ndarray, ds, rgb: bool, done_by_gdcm: bool) -> np.ndarray:
    """MONOCHROME1 inversion (so bone is bright) and rescale slope/intercept (CT in HU)."""
    if rgb or done_by_gdcm:
        return array
    multi = _int(ds, "NumberOfFrames", 1) > 1
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        bits = _int(ds, "BitsStored", 16)
        if _int(ds, "PixelRepresentation", 0) == 0:
            array = (2**bits - 1) - array.astype(np.int64)
        else:
            array = -1 - array.astype(np.int64)
    params = _rescale(ds, array.shape[0] if multi else 1)
    if str(ds.get("Modality", "")) == "RTDOSE" and "DoseGridScaling" in ds:
        scaling = float(ds.DoseGridScaling)  # stored integers -> dose in the file's DoseUnits
        params = [(slope * scaling, intercept * scaling) for slope, intercept in params]
    if not all(np.isfinite(p).all() for p in params):
        raise MedcadError("corrupt DICOM header: the rescale slope or intercept is not a number")
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


def _stack_spacing(along: np.ndarray, metadata: dict) -> float:
    """The slice step of positions ``along`` the normal (sorted, distinct); notes uneven steps."""
    steps = np.diff(along)
    spacing = float((along[-1] - along[0]) / (len(along) - 1))
    if np.max(np.abs(steps - spacing)) > max(1e-3, 0.01 * spacing):
        metadata["slice_spacing_note"] = (
            f"slices are unevenly spaced ({float(steps.min()):.3g} to {float(steps.max()):.3g} mm); "
            f"the mean step {spacing:.4g} mm is used, so positions between slices are approximate"
        )
    return spacing


def _frame_geometry(ds, n_frames: int, metadata: dict) -> tuple[Geometry, np.ndarray]:
    """Geometry of a multi-frame object and the order in which its frames form the volume.

    The geometry comes from the functional groups (per-frame Plane Position, shared or
    per-frame Plane Orientation and Pixel Measures), or from the classic tags with a Grid Frame
    Offset Vector (RT dose).  Frames stay in file order when their positions run monotonically
    along the slice normal, as GDCM does: the third direction column is then +normal or -normal
    and voxel (k, 0, 0) lies at frame k's ImagePositionPatient.  Frames in any other order are
    sorted along +normal (GDCM gives wrong positions for those); frames that share a position
    (a time series, several stacks) are refused rather than given a wrong geometry.
    """
    order = np.arange(n_frames)
    spacing_yx = _pixel_spacing_yx(ds, 0) or (1.0, 1.0)
    direction = _orientation(ds, 0)
    positions = [_position(ds, k) for k in range(n_frames)] if "PerFrameFunctionalGroupsSequence" in ds else []
    offsets = ds.get("GridFrameOffsetVector")
    if direction is not None and (not positions or any(p is None for p in positions)):
        base = _position(ds, None)
        try:
            offsets = [float(o) for o in offsets] if offsets is not None else None
        except (TypeError, ValueError):
            offsets = None
        if base is not None and offsets is not None and len(offsets) == n_frames:
            positions = [base + o * direction[:, 2] for o in offsets]
        else:
            positions = []
    if direction is None or not positions or any(p is None for p in positions):
        metadata["geometry_note"] = "the file states no frame positions; origin 0 and identity direction assumed"
        return Geometry.identity(3, (spacing_yx[1], spacing_yx[0], _slice_spacing(ds))), order
    normal = direction[:, 2]
    along = np.array([float(np.dot(p, normal)) for p in positions])
    steps = np.diff(along)
    tolerance = 1e-4
    if n_frames == 1 or np.all(steps > tolerance):
        sign = 1.0
    elif np.all(steps < -tolerance):
        sign = -1.0
    else:
        order = np.argsort(along, kind="stable")
        if np.any(np.diff(along[order]) <= tolerance):
            raise MedcadError(
                "the frames do not form one 3-D volume: several frames share a slice position "
                "(a time series or several stacks in one file), which is not supported"
            )
        sign = 1.0
        metadata["frame_order_note"] = "frames were re-ordered by their position along the slice normal"
    z_spacing = _stack_spacing(sign * along[order], metadata) if n_frames > 1 else _slice_spacing(ds)
    matrix = direction.copy()
    matrix[:, 2] *= sign
    geometry = Geometry((spacing_yx[1], spacing_yx[0], z_spacing), tuple(positions[order[0]]), tuple(matrix.ravel()))
    return geometry, order


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
        if value > 0 and np.isfinite(value):
            return value
    return 1.0


def read_dicom_file(path: str | os.PathLike) -> MedicalImage:
    """One DICOM file: a 2D radiograph, a single CT/MR slice, or a multi-frame object."""
    path = Path(path)
    ds = _read_dataset(path)
    try:
        return _image_from_dataset(ds, path)
    except MedcadError as err:
        if err.path is None:
            raise MedcadError(err.reason, path) from None
        raise
    except MemoryError:
        raise
    except _VALUE_ERRORS as err:  # a malformed value met while interpreting the header
        raise MedcadError(f"corrupt DICOM header ({_short(err)})", path) from None


def _image_from_dataset(ds, path: Path) -> MedicalImage:
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = getattr(ds.get("SOPClassUID"), "name", None) or "a non-image object"
        if ("Rows" in ds and "Columns" in ds) or "Image Storage" in kind:
            raise MedcadError("the pixel data is missing: the file is truncated or incomplete", path)
        raise MedcadError(f"the DICOM file holds no image (it is {kind})", path)
    array, done_by_gdcm = _decode_pixels(ds, path)
    samples = _int(ds, "SamplesPerPixel", 1)
    rgb = samples > 1 or ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    n_frames = _int(ds, "NumberOfFrames", 1)
    with quiet_libraries("pydicom"):
        array = _apply_value_transforms(array, ds, rgb, done_by_gdcm)
        metadata = safe_metadata(ds) | {"format": "DICOM", "source_file": path.name}
    modality = str(ds.get("Modality", "") or "OT")
    name = str(ds.get("SeriesDescription", "") or "").strip() or path.stem

    if n_frames > 1:
        if array.shape[0] != n_frames:
            raise MedcadError(f"the pixel data holds {array.shape[0]} frames, not the {n_frames} of its header", path)
        geometry, order = _frame_geometry(ds, n_frames, metadata)
        if not np.array_equal(order, np.arange(n_frames)):
            array = array[order]
            metadata["frame_order"] = [int(k) for k in order]
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
    along: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.description or f"{self.modality} series"


def scan_folder(folder: str | os.PathLike) -> tuple[list[SeriesEntry], list[tuple[Path, str]]]:
    """Group a folder's DICOM image files into series (recursively).

    Files are grouped by SeriesInstanceUID, image size and orientation, and sorted by their
    position along the slice normal (as GDCM's series file-name generator does), so file
    names and listing order do not matter.  Returns the series (largest first) and the files
    that were skipped, with why.
    """
    folder = Path(folder)
    groups: dict[tuple, list[tuple[float, int, Path, object]]] = defaultdict(list)
    skipped: list[tuple[Path, str]] = []
    entries: list[SeriesEntry] = []
    for path in iter_folder_files(folder):
        if path.name.upper() == "DICOMDIR" or not looks_like_dicom(path):
            continue
        try:
            ds = _read_dataset(path, stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds:
                continue  # structured reports, RT structure sets, presentation states: not images
            rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
            frames = _int(ds, "NumberOfFrames", 1)
            instance = _int(ds, "InstanceNumber", 0)
            uid = str(ds.get("SeriesInstanceUID", "") or f"no-uid:{path.parent}")
            with quiet_libraries("pydicom"):
                meta = safe_metadata(ds)
            modality = str(ds.get("Modality", "") or "OT")
            direction = _orientation(ds, None)
            position = _position(ds, None)
            split_keys = tuple(str(ds.get(keyword, "")) for keyword, _ in _SPLIT_KEYS)
        except MedcadError as err:
            skipped.append((path, err.reason))
            continue
        except _VALUE_ERRORS as err:
            skipped.append((path, f"corrupt DICOM header ({_short(err)})"))
            continue
        if frames > 1:
            entries.append(SeriesEntry(uid, [path], meta.get("series_description", ""), modality, True, meta))
            continue
        key_orientation = tuple(np.round(direction[:, :2].ravel(), 3)) if direction is not None else None
        key = (uid, rows, cols, key_orientation)
        along = float(np.dot(position, direction[:, 2])) if direction is not None and position is not None else 0.0
        groups[key].append((along, instance, path, split_keys, meta, modality))
    for key, members in groups.items():
        members.sort(key=lambda item: (item[0], item[1]))
        for part, suffix in _split_repeats(members):
            meta, modality = part[0][4], part[0][5]
            description = meta.get("series_description", "")
            if suffix:
                description = f"{description or modality + ' series'} ({suffix})"
            entries.append(SeriesEntry(key[0], [m[2] for m in part], description, modality, False, meta,
                                       [m[0] for m in part]))
    entries.sort(key=lambda e: -len(e.files))
    return entries, skipped


#: header fields that tell apart volumes sharing one series UID (multi-echo, dynamic series)
_SPLIT_KEYS = (("EchoNumbers", "echo"), ("TemporalPositionIdentifier", "time point"),
               ("AcquisitionNumber", "acquisition"))


def _split_repeats(members: list) -> list[tuple[list, str]]:
    """Split one series whose slices repeat positions (echoes, time points) into volumes."""
    along = [round(m[0], 3) for m in members]
    if len(members) < 2 or len(set(along)) == len(along):
        return [(members, "")]
    for index, (_keyword, word) in enumerate(_SPLIT_KEYS):
        parts: dict[str, list] = defaultdict(list)
        for member in members:
            parts[member[3][index]].append(member)
        if len(parts) > 1 and all(
            len({round(m[0], 3) for m in part}) == len(part) for part in parts.values()
        ):
            return [(part, f"{word} {value}") for value, part in sorted(parts.items())]
    return [(members, "")]


def read_series(entry: SeriesEntry) -> MedicalImage:
    """Read one series found by :func:`scan_folder`."""
    if entry.multiframe or len(entry.files) == 1:
        image = read_dicom_file(entry.files[0])
        if entry.description:
            image.name = entry.description
        return image
    import SimpleITK as sitk

    first = entry.files[0]
    if entry.along and len(set(round(a, 3) for a in entry.along)) < len(entry.along):
        raise MedcadError(
            f"series '{entry.label}': several images share a slice position, so they do not form one volume",
            first.parent,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in entry.files])
    head = _read_dataset(first, stop_before_pixels=True)
    rows, cols = _int(head, "Rows", 0), _int(head, "Columns", 0)
    check_memory(rows * cols * len(entry.files) * 8, first.parent)
    with native_output_captured(), quiet_libraries():
        try:
            image = reader.Execute()
        except RuntimeError as err:
            from .itk_formats import itk_reason

            reason = _first_broken_file(entry.files) or itk_reason(err)
            raise MedcadError(f"series '{entry.label}': {reason}", first.parent) from None
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise MedcadError(f"series '{entry.label}': colour volumes are not supported", first.parent)
    array = sitk.GetArrayFromImage(image)
    if array.dtype == np.int32 or array.dtype == np.int64:
        array = _smallest_int(array)
    metadata = entry.safe | {"format": "DICOM series", "number_of_files": len(entry.files)}
    if len(entry.along) > 2:
        _stack_spacing(np.asarray(entry.along), metadata)
    return MedicalImage(
        array=array,
        geometry=Geometry.from_sitk(image),
        modality=entry.modality or "OT",
        name=entry.label,
        metadata=metadata,
    )


def _first_broken_file(files: list[Path]) -> str | None:
    """After GDCM refused a series: which file is damaged, and how (pydicom says more)."""
    for path in files:
        try:
            read_dicom_file(path)
        except MedcadError as err:
            return f"file {path.name}: {err.reason}"
    return None


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
        if len(problems) > len(skipped):  # series were found, and none could be read
            raise MedcadError(f"no readable DICOM series ({problems[len(skipped)]})", folder)
        if skipped:
            path, reason = skipped[0]
            more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
            raise MedcadError(
                f"no DICOM image series found in the folder ({path.name}{more}: {reason})", folder
            )
        if folder_is_empty(folder):
            raise MedcadError("the folder is empty", folder)
        if not any(True for _ in iter_folder_files(folder, 1)):
            raise MedcadError("the folder holds no files (only sub-folders or links)", folder)
        raise MedcadError("no DICOM image series found in the folder", folder)
    if problems:  # some series (or files) could not be read: say so where a widget can show it
        images[0].metadata["unreadable_in_folder"] = problems[:10]
    _unique_names(images)
    return images


def _unique_names(images: list[MedicalImage]) -> None:
    seen: dict[str, int] = {}
    for image in images:
        count = seen.get(image.name, 0)
        seen[image.name] = count + 1
        if count:
            image.name = f"{image.name} ({count + 1})"
