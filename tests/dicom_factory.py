"""Write small synthetic DICOM data for tests, the way SimpleITK's "Dicom Series From Array"
example does (one ImageFileWriter call per slice, KeepOriginalImageUIDOn), plus enhanced
multi-frame files built with pydicom from a real one.

Only test code imports this module.
"""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

UID_ROOT = "1.2.826.0.1.3680043.2.1125.999"


def _fmt(values) -> str:
    return "\\".join(repr(float(v)) for v in values)


def write_series(
    image,
    folder: str | os.PathLike,
    *,
    series_number: int = 1,
    description: str = "synthetic series",
    modality: str = "CT",
    rescale_intercept: float | None = -1024.0,
    rescale_slope: float = 1.0,
    names: Sequence[str] | None = None,
    study_uid: str = f"{UID_ROOT}.1",
) -> list[Path]:
    """Write a 3-D SimpleITK image as a one-file-per-slice DICOM series; returns the files.

    Geometry tags come from the image itself: ImagePositionPatient of slice k is
    ``TransformIndexToPhysicalPoint((0, 0, k))`` and ImageOrientationPatient the first two
    direction columns, so flipped and oblique directions are written exactly.  With
    ``rescale_intercept`` set, GDCM stores ``(value - intercept) / slope`` and writes the
    Rescale Intercept / Slope tags, so a reader must apply them to get the original values.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    direction = image.GetDirection()
    series_uid = f"{UID_ROOT}.{series_number}.{zlib.crc32(description.encode())}"
    series_tags = [
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0008|0060", modality),
        ("0008|103e", description),
        ("0020|000d", study_uid),
        ("0020|000e", series_uid),
        ("0020|0011", str(series_number)),
        ("0020|0037", _fmt((direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))),
        ("0028|0030", _fmt((image.GetSpacing()[1], image.GetSpacing()[0]))),  # row spacing, column spacing
        ("0018|0050", repr(float(image.GetSpacing()[2]))),
    ]
    if rescale_intercept is not None:
        series_tags += [("0028|1052", repr(float(rescale_intercept))), ("0028|1053", repr(float(rescale_slope)))]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        for tag, value in series_tags:
            slice_image.SetMetaData(tag, value)
        slice_image.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0020|0032", _fmt(image.TransformIndexToPhysicalPoint((0, 0, k))))
        name = names[k] if names is not None else f"slice{k:03d}.dcm"
        writer.SetFileName(str(folder / name))
        writer.Execute(slice_image)
        files.append(folder / name)
    return files


def write_raw_series(
    template: str | os.PathLike,
    folder: str | os.PathLike,
    stored: np.ndarray,
    positions: Sequence[Sequence[float]],
    *,
    orientation: Sequence[float] | Sequence[Sequence[float]] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.7, 0.9),
    rescale: Sequence[tuple[float, float]] | tuple[float, float] = (1.0, -1024.0),
    series_uid: str | None = None,
    bare: bool = False,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """A one-file-per-slice series written with pydicom from a template file, tag by tag.

    Unlike :func:`write_series`, everything a test may want to make odd is set per slice:
    ``stored[k]`` are the stored values of slice k (their dtype gives the pixel representation),
    ``positions[k]`` its ImagePositionPatient, and ``orientation`` and ``rescale`` (slope,
    intercept) either one for all slices or one per slice.  ``bare=True`` writes each data set
    without preamble and file meta (as old exports do), under names without extension.
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = len(positions)
    orientations = [orientation] * count if np.ndim(orientation) == 1 else list(orientation)
    rescales = [rescale] * count if np.ndim(rescale) == 1 else list(rescale)
    series_uid = series_uid or f"{UID_ROOT}.7.{zlib.crc32(folder.name.encode())}"
    base = pydicom.dcmread(template)
    files = []
    for k in range(count):
        ds = base.copy()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if bare else ExplicitVRLittleEndian
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = f"{series_uid}.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in orientations[k]]  # DS: at most 16 characters
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.RescaleSlope, ds.RescaleIntercept = (f"{v:.6g}" for v in rescales[k])
        ds.BitsAllocated = ds.BitsStored = stored.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(np.issubdtype(stored.dtype, np.signedinteger))
        ds.PixelData = np.ascontiguousarray(stored[k]).astype(stored.dtype.newbyteorder("<")).tobytes()
        for keyword in ("SliceLocation", "WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
        path = folder / (names[k] if names is not None else (f"IM{k:04d}" if bare else f"slice{k:03d}.dcm"))
        if bare:
            del ds.file_meta
            ds.preamble = None
            pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
        else:
            ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def shuffle_names(files: Sequence[Path], seed: int = 0, prefix: str = "IM") -> list[Path]:
    """Rename files to random, order-free names (no extension): readers must sort by position."""
    rng = random.Random(seed)
    numbers = rng.sample(range(10000, 99999), len(files))
    out = []
    for path, number in zip(files, numbers):
        target = path.with_name(f"{prefix}{number}")
        path.rename(target)
        out.append(target)
    return out


def enhanced_from_emri(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-20.0, 30.0, 15.0),
    step_mm: float = 2.5,
    pixel_spacing: tuple[float, float] = (0.9, 0.8),
    order: Sequence[int] | None = None,
    frames: int | None = None,
) -> Path:
    """An enhanced MR multi-frame file with full functional groups, from pydicom's emri_small.

    emri_small.dcm ships without any geometry; this adds shared Pixel Measures and Plane
    Orientation and a per-frame Plane Position: frame f lies at ``origin + order[f] * step *
    normal``, so ``order`` lets a test store the frames ascending, descending or shuffled.
    ``frames`` keeps only the first frames (an enhanced file of a single frame is common).
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    ds = pydicom.dcmread(source)
    if frames is not None:
        frame_bytes = len(ds.PixelData) // int(ds.NumberOfFrames)
        ds.PixelData = ds.PixelData[: frames * frame_bytes]
        ds.NumberOfFrames = frames
    n_frames = int(ds.NumberOfFrames)
    order = list(range(n_frames)) if order is None else list(order)
    iop = np.asarray(orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{pixel_spacing[0]:.6g}", f"{pixel_spacing[1]:.6g}"]
    measures.SliceThickness = f"{step_mm:.6g}"
    plane = Dataset()
    plane.ImageOrientationPatient = [f"{v:.10f}" for v in iop]
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([plane])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin) + k * step_mm * normal]
        item.PlanePositionSequence = DicomSequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.save_as(target)
    return Path(target)


def frame_positions(path: str | os.PathLike) -> list[np.ndarray]:
    """Each frame's PlanePositionSequence ImagePositionPatient, in file order."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return [
        np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        for item in ds.PerFrameFunctionalGroupsSequence
    ]


def corrupt_copy(source: str | os.PathLike, target: str | os.PathLike, *, keep_bytes: int | None = None,
                 overwrite: tuple[int, bytes] | None = None) -> Path:
    """A damaged copy of a file: cut after ``keep_bytes`` and/or bytes overwritten at an offset."""
    data = bytearray(Path(source).read_bytes())
    if overwrite is not None:
        offset, junk = overwrite
        data[offset:offset + len(junk)] = junk
    if keep_bytes is not None:
        data = data[:keep_bytes]
    Path(target).write_bytes(bytes(data))
    return Path(target)
