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
    itk_file_names,
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
        item = _functional_group(ds, "PixelValueTransformationSequence", frame)
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


#: |cosine| of the angle between ImageOrientationPatient's row and column above which the reader
#: says it made them orthogonal: decimal strings rounded to 5 or more digits stay below it
_ORTHOGONAL_NOTE = 1e-4
#: |cosine| above which the orientation is refused: 0.57 degrees off a right angle.  Values
#: rounded even to 2 or 3 decimals stay below it; beyond it the header is broken (a scanner
#: never acquires sheared pixels) and no single direction would place the voxels right
_ORTHOGONAL_LIMIT = 1e-2


def _orientation(ds, frame: int | None, metadata: dict | None = None) -> np.ndarray | None:
    """The 3 x 3 direction (row, column, normal as columns) of ImageOrientationPatient.

    Row and column are normalised and, when rounding left them not quite orthogonal, replaced
    by the nearest orthonormal pair (the difference split evenly between them), as a volume's
    direction must be a rotation: ITK would otherwise coerce it when a label map is written, and
    GDCM silently falls back to the identity when they are more than 0.06 degrees off.
    """
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
    cosine = float(np.dot(row, col))
    if abs(cosine) > _ORTHOGONAL_LIMIT:
        raise MedcadError(
            f"corrupt DICOM header: ImageOrientationPatient's row and column directions are "
            f"{np.degrees(np.arccos(np.clip(cosine, -1, 1))):.1f} degrees apart, not 90"
        )
    if abs(cosine) > 1e-12:
        u, _, vt = np.linalg.svd(np.column_stack([row, col]), full_matrices=False)
        row, col = (u @ vt).T
        if abs(cosine) > _ORTHOGONAL_NOTE and metadata is not None:
            metadata["orientation_note"] = (
                f"the header's row and column directions are {np.degrees(np.arccos(cosine)):.3f} degrees apart, "
                "not 90 (rounded values?): they were made orthogonal, splitting the difference"
            )
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
    cannot = _cannot_decode(ds, path)
    with native_output_captured() as chatter, itk_file_names([path]) as (name,):
        try:
            image = sitk.ReadImage(name)
        except RuntimeError:
            raise cannot from None
    if _decoder_failed(chatter.text):
        raise cannot
    array = sitk.GetArrayFromImage(image)
    if frames == 1 and array.ndim >= 3 and array.shape[0] == 1:
        array = array[0]
    expected = (frames, rows, cols) if frames > 1 else (rows, cols)
    if array.shape[: len(expected)] != expected:
        raise MedcadError(f"the pixel data does not match the header ({encoding})", path)
    return array, True


def _decoder_failed(text: str) -> bool:
    """Whether GDCM's printed output says a decoder failed.

    GDCM reports some decoder failures (12-bit JPEG, damaged JPEG 2000) only as text on stderr
    and hands back an image of garbage, for a single file and a series alike.
    """
    return any(word in text.lower() for word in ("error", "unsupported", "invalid", "corrupt", "failed"))


def _cannot_decode(ds, path: Path | None = None) -> MedcadError:
    return MedcadError(
        f"cannot decode the pixel data ({_transfer_syntax_name(ds)}): it is damaged, or this compression needs an "
        "optional decoder (pylibjpeg with pylibjpeg-libjpeg and pylibjpeg-openjpeg)",
        path,
    )


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


#: a slice this close to an even grid counts as on it: 0.01 mm, the precision of positions
#: written with two decimals and 3D Slicer's tolerance for "unequal spacing" ...
_POSITION_TOLERANCE_MM = 0.01
#: ... or 1 % of the step, far below what can be seen or measured across one slice
_POSITION_TOLERANCE_OF_STEP = 0.01


def _stack_spacing(along: np.ndarray) -> float:
    """The mean slice step of positions ``along`` the normal (sorted, distinct), as ITK takes it."""
    return float((along[-1] - along[0]) / (len(along) - 1)) if len(along) > 1 else 1.0


def _even_slices(array: np.ndarray, geometry: Geometry, along: np.ndarray,
                 metadata: dict) -> tuple[np.ndarray, Geometry]:
    """The stack resampled onto evenly spaced slices when its slices are not, with its geometry.

    ``along`` holds the positions (mm) of the array's slices along the geometry's third
    direction column, ascending; ``geometry`` places slice 0 and the in-plane grid.  A volume
    has one slice step, so a stack with a missing or unreadable slice, or with a change of
    step, read as it is would put every slice after the irregularity at a wrong position.  As
    3D Slicer does for such series, the slices are resampled along the normal onto a regular
    grid from the first slice to the last (world extent kept) with the usual (median) step,
    shortened if needed so that the last slice is hit exactly and the grid is never coarser
    than the acquisition; each new slice is a linear interpolation between the two nearest
    acquired slices, and acquired slices on the grid keep their values exactly.
    """
    along = np.asarray(along, dtype=float)
    count = len(along)
    if count < 3:
        return array, geometry
    extent = along[-1] - along[0]
    mean_step = extent / (count - 1)
    tolerance = max(_POSITION_TOLERANCE_MM, _POSITION_TOLERANCE_OF_STEP * mean_step)
    if np.max(np.abs(along - (along[0] + mean_step * np.arange(count)))) <= tolerance:
        return array, geometry
    steps = np.diff(along)
    usual = float(np.median(steps))
    intervals = int(np.ceil(extent / usual - 1e-6))
    step = extent / intervals
    targets = along[0] + step * np.arange(intervals + 1)
    check_memory(array[0].nbytes * len(targets) * 2, None)
    resampled = _interpolate_slices(array, along, targets)
    uneven = int(np.sum(np.abs(steps - usual) > tolerance))
    metadata["slice_spacing_note"] = (
        f"the slices are not evenly spaced ({count} slices; {uneven} of the {count - 1} steps between them "
        f"{'differs' if uneven == 1 else 'differ'} from the usual {usual:.4g} mm, the largest is "
        f"{float(steps.max()):.4g} mm): resampled to {len(targets)} "
        f"slices {step:.4g} mm apart, each interpolated linearly between the two nearest acquired slices"
    )
    spacing = (*geometry.spacing_xyz[:2], step)
    return resampled, Geometry(spacing, geometry.origin_xyz, geometry.direction)


def _interpolate_slices(array: np.ndarray, along: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Slices at positions ``targets``, linearly interpolated between the slices of ``array`` at ``along``.

    Integer images stay integer (rounded to the nearest value, as 3D Slicer keeps the scalar
    type): acquired slices are copied exactly and interpolated ones are estimates anyway.
    """
    upper = np.clip(np.searchsorted(along, targets, side="right"), 1, len(along) - 1)
    lower = upper - 1
    weights = (targets - along[lower]) / (along[upper] - along[lower])
    out = np.empty((len(targets),) + array.shape[1:], dtype=array.dtype)
    work = np.float64 if array.dtype == np.float64 else np.float32
    for k, (low, high, weight) in enumerate(zip(lower, upper, weights)):
        if weight <= 1e-6:
            out[k] = array[low]
        elif weight >= 1 - 1e-6:
            out[k] = array[high]
        else:
            mixed = array[low].astype(work) * (1 - weight) + array[high].astype(work) * weight
            out[k] = np.rint(mixed) if np.issubdtype(array.dtype, np.integer) else mixed
    return out


def _frame_geometry(ds, n_frames: int, metadata: dict) -> tuple[Geometry, np.ndarray, np.ndarray | None]:
    """Geometry of a multi-frame object, the order in which its frames form the volume, and the
    positions of the ordered frames along the geometry's third axis (None when unknown).

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
    direction = _orientation(ds, 0, metadata)
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
        return Geometry.identity(3, (spacing_yx[1], spacing_yx[0], _slice_spacing(ds))), order, None
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
    z_spacing = _stack_spacing(sign * along[order]) if n_frames > 1 else _slice_spacing(ds)
    matrix = direction.copy()
    matrix[:, 2] *= sign
    geometry = Geometry((spacing_yx[1], spacing_yx[0], z_spacing), tuple(positions[order[0]]), tuple(matrix.ravel()))
    return geometry, order, sign * along[order]


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
        geometry, order, along = _frame_geometry(ds, n_frames, metadata)
        if not np.array_equal(order, np.arange(n_frames)):
            array = array[order]
            metadata["frame_order"] = [int(k) for k in order]
        if along is not None:
            array, geometry = _even_slices(array, geometry, along, metadata)
        metadata["number_of_frames"] = n_frames
    else:  # frame 0: an enhanced file of one frame keeps its plane in the per-frame groups
        direction = _orientation(ds, 0, metadata)
        position = _position(ds, 0)
        spacing_yx = _pixel_spacing_yx(ds, 0)
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
    #: the series' orientation (orthonormal columns: row, column, normal), None if not stated
    direction: np.ndarray | None = None
    #: (slope, intercept) of each file
    rescale: list[tuple[float, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.description or f"{self.modality} series"


@dataclass
class _Slice:
    """What scan_folder keeps of one single-frame file."""

    path: Path
    instance: int
    direction: np.ndarray | None
    position: np.ndarray | None
    split_keys: tuple
    meta: dict
    modality: str
    rescale: tuple[float, float]
    along: float = 0.0


#: orientations closer than this (largest difference of a direction cosine) belong to one series:
#: per-slice computed orientations differ by float noise (1e-6), while the smallest change a
#: scanner makes on purpose (a re-angled stack) is of degrees
_SAME_ORIENTATION = 1e-3


def scan_folder(folder: str | os.PathLike) -> tuple[list[SeriesEntry], list[tuple[Path, str]]]:
    """Group a folder's DICOM image files into series (recursively).

    Files are grouped by SeriesInstanceUID, image size and orientation (within
    ``_SAME_ORIENTATION`` of the group's first file), and sorted by their position along the
    slice normal (as GDCM's series file-name generator does), so file names and listing order
    do not matter.  Returns the series (largest first) and the files that were skipped, with why.
    """
    folder = Path(folder)
    groups: dict[tuple, list[list[_Slice]]] = defaultdict(list)
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
            if frames > 1:
                entries.append(SeriesEntry(uid, [path], meta.get("series_description", ""), modality, True, meta))
                continue
            member = _Slice(path, instance, _orientation(ds, 0, meta), _position(ds, 0),
                            tuple(str(ds.get(keyword, "")) for keyword, _ in _SPLIT_KEYS), meta, modality,
                            _rescale(ds, 1)[0])
        except MedcadError as err:
            skipped.append((path, err.reason))
            continue
        except _VALUE_ERRORS as err:
            skipped.append((path, f"corrupt DICOM header ({_short(err)})"))
            continue
        _same_orientation_group(groups[(uid, rows, cols)], member).append(member)
    for (uid, _, _), stacks in groups.items():
        for members in stacks:
            entries += _series_of(uid, members)
    entries.sort(key=lambda e: -len(e.files))
    return entries, skipped


def _same_orientation_group(stacks: list[list[_Slice]], member: _Slice) -> list[_Slice]:
    """The stack of ``stacks`` whose first slice has ``member``'s orientation (a new one if none)."""
    for stack in stacks:
        first = stack[0].direction
        if first is None and member.direction is None:
            return stack
        if first is not None and member.direction is not None and \
                np.max(np.abs(first[:, :2] - member.direction[:, :2])) <= _SAME_ORIENTATION:
            return stack
    stacks.append([])
    return stacks[-1]


def _series_of(uid: str, members: list[_Slice]) -> list[SeriesEntry]:
    """The series (one, or one per echo / time point) formed by single-frame files of one orientation."""
    direction = members[0].direction
    for member in members:  # positions along one normal, the series' own
        if direction is not None and member.position is not None:
            member.along = float(np.dot(member.position, direction[:, 2]))
    members.sort(key=lambda m: (m.along, m.instance))
    entries = []
    for part, suffix in _split_repeats(members):
        meta, modality = dict(part[0].meta), part[0].modality
        notes = [m.meta["orientation_note"] for m in part if "orientation_note" in m.meta]
        if notes:
            meta.setdefault("orientation_note", notes[0])
        description = meta.get("series_description", "")
        if suffix:
            description = f"{description or modality + ' series'} ({suffix})"
        entries.append(SeriesEntry(uid, [m.path for m in part], description, modality, False, meta,
                                   [m.along for m in part], direction, [m.rescale for m in part]))
    return entries


#: header fields that tell apart volumes sharing one series UID (multi-echo, dynamic series)
_SPLIT_KEYS = (("EchoNumbers", "echo"), ("TemporalPositionIdentifier", "time point"),
               ("AcquisitionNumber", "acquisition"))


def _split_repeats(members: list[_Slice]) -> list[tuple[list[_Slice], str]]:
    """Split one series whose slices repeat positions (echoes, time points) into volumes."""
    along = [round(m.along, 3) for m in members]
    if len(members) < 2 or len(set(along)) == len(along):
        return [(members, "")]
    for index, (_keyword, word) in enumerate(_SPLIT_KEYS):
        parts: dict[str, list] = defaultdict(list)
        for member in members:
            parts[member.split_keys[index]].append(member)
        if len(parts) > 1 and all(
            len({round(m.along, 3) for m in part}) == len(part) for part in parts.values()
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
    first = entry.files[0]
    if entry.along and len(set(round(a, 3) for a in entry.along)) < len(entry.along):
        raise MedcadError(
            f"series '{entry.label}': several images share a slice position, so they do not form one volume",
            first.parent,
        )
    head = _read_dataset(first, stop_before_pixels=True)
    rows, cols = _int(head, "Rows", 0), _int(head, "Columns", 0)
    check_memory(rows * cols * len(entry.files) * 8, first.parent)
    image = _read_with_gdcm(entry, head)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise MedcadError(f"series '{entry.label}': colour volumes are not supported", first.parent)
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    if _rescale_varies(entry) and _rescale_integral(entry):
        array = _smallest_int(np.rint(array).astype(np.int64))
    elif array.dtype == np.int32 or array.dtype == np.int64:
        array = _smallest_int(array)
    metadata = entry.safe | {"format": "DICOM series", "number_of_files": len(entry.files)}
    geometry = _series_geometry(image, entry)
    if len(entry.along) > 2:
        array, geometry = _even_slices(array, geometry, np.asarray(entry.along), metadata)
    return MedicalImage(array=array, geometry=geometry, modality=entry.modality or "OT", name=entry.label,
                        metadata=metadata)


def _rescale_varies(entry: SeriesEntry) -> bool:
    return len(set(entry.rescale)) > 1


def _rescale_integral(entry: SeriesEntry) -> bool:
    return all(float(s).is_integer() and float(i).is_integer() for s, i in entry.rescale)


def _read_with_gdcm(entry: SeriesEntry, head):
    """The series as SimpleITK's ImageSeriesReader (GDCM) reads it, with each file's own rescale.

    The reader takes the pixel type from the first file; when slope or intercept vary from file
    to file (PET, some CT) or are not whole numbers, that type cannot hold the others' values
    (-997 would wrap round to 64539 in the first file's uint16, 30.03 be cut to 30), so the
    series is then read as float32, into which each file's own rescale is applied.
    """
    import SimpleITK as sitk

    first = entry.files[0]
    reader = sitk.ImageSeriesReader()
    if _rescale_varies(entry) or not _rescale_integral(entry):
        reader.SetOutputPixelType(sitk.sitkFloat32)
    with native_output_captured() as chatter, quiet_libraries(), itk_file_names(entry.files) as names:
        reader.SetFileNames(names)
        try:
            image = reader.Execute()
        except RuntimeError as err:
            from .itk_formats import itk_reason

            reason = _first_broken_file(entry.files) or itk_reason(err)
            raise MedcadError(f"series '{entry.label}': {reason}", first.parent) from None
    if _decoder_failed(chatter.text):
        raise MedcadError(f"series '{entry.label}': {_cannot_decode(head).reason}", first.parent)
    return image


def _series_geometry(image, entry: SeriesEntry) -> Geometry:
    """ITK's geometry of a series, with the orthonormal orientation the reader computed.

    GDCM takes a slightly non-orthogonal ImageOrientationPatient as it is, or as the identity
    when it is off by more than 0.06 degrees; :func:`_orientation` made it a rotation.
    """
    geometry = Geometry.from_sitk(image)
    if entry.direction is not None and np.max(np.abs(geometry.direction_matrix - entry.direction)) > 1e-6:
        geometry = Geometry(geometry.spacing_xyz, geometry.origin_xyz, tuple(entry.direction.ravel()))
    return geometry


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
        # the reasons may quote header text (a series description): the note only counts them
        count = "1 file or series" if len(problems) == 1 else f"{len(problems)} files or series"
        images[0].metadata["unreadable_note"] = (
            f"{count} in the folder could not be read and {'is' if len(problems) == 1 else 'are'} left out "
            "(`napari-medcad info` on the folder lists why)"
        )
    _unique_names(images)
    return images


def _unique_names(images: list[MedicalImage]) -> None:
    seen: dict[str, int] = {}
    for image in images:
        count = seen.get(image.name, 0)
        seen[image.name] = count + 1
        if count:
            image.name = f"{image.name} ({count + 1})"
