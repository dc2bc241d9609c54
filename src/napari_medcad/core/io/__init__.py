"""Reading and writing medical images with their geometry.

``read_images(path)`` is the one entry point: it returns every image a path holds (a DICOM
folder may hold several series) or raises :class:`MedcadError` with a one-line reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import replacing
from ..errors import MedcadError
from ..image import MedicalImage
from .paths import (
    ITK_EXTENSIONS,
    PICTURE_EXTENSIONS,
    TIFF_EXTENSIONS,
    WRITABLE_EXTENSIONS,
    check_readable,
    extension_of,
    is_supported_path,
    itk_file_names,
    looks_like_dicom,
    native_output_captured,
    quiet_libraries,
)

__all__ = [
    "read_images",
    "read_image",
    "image_info",
    "reader_notes",
    "write_image",
    "is_supported_path",
    "WRITABLE_EXTENSIONS",
]


def read_images(path: str | os.PathLike) -> list[MedicalImage]:
    """All images at ``path`` (a file, or a folder of DICOM series), largest first."""
    path = check_readable(path)
    try:
        with quiet_libraries("pydicom", "tifffile", "nibabel", "nibabel.global"):
            return _read_images(path)
    except MemoryError:
        raise MedcadError("not enough memory to read this image", path) from None
    except MedcadError as err:
        if err.path is None:  # e.g. a geometry check deep inside: name the file all the same
            raise MedcadError(err.reason, path) from None
        raise


def _read_images(path: Path) -> list[MedicalImage]:
    if path.is_dir():
        from .dicom import read_dicom_folder

        return read_dicom_folder(path)
    ext = extension_of(path)
    if ext in ITK_EXTENSIONS or ext in PICTURE_EXTENSIONS:
        from .itk_formats import read_itk

        return [read_itk(path)]
    if ext in TIFF_EXTENSIONS:
        from .tiff import read_tiff

        return [read_tiff(path)]
    if looks_like_dicom(path):
        from .dicom import read_dicom_file

        return [read_dicom_file(path)]
    if not ext:  # DICOM files are often named without extension, some without the 'DICM' preamble
        from .dicom import read_dicom_file

        try:
            return [read_dicom_file(path)]
        except MedcadError as err:
            if not err.reason.startswith("not a DICOM file"):
                raise
    raise MedcadError(
        f"unsupported file type '{ext or path.name}' (supported: DICOM, NIfTI, NRRD, MetaImage, TIFF, PNG, JPEG)",
        path,
    )


def read_image(path: str | os.PathLike) -> MedicalImage:
    """The main image at ``path``: for a DICOM folder, the series with the most slices; a note
    (see :func:`reader_notes`) says so when the folder holds others, which are not read."""
    images = read_images(path)
    main = images[0]
    if len(images) > 1:
        main.metadata["series_choice_note"] = _series_choice(images)
    return main


def _series_choice(images: list[MedicalImage]) -> str:
    """Which of a folder's series was taken, by number and size only (a series description is
    free text that can name the patient)."""
    def described(image: MedicalImage) -> str:
        number = image.metadata.get("series_number")
        slices = image.spatial_shape[0] if image.ndim == 3 else 1
        name = f"series {number}" if number not in (None, "") else "a series"
        return f"{name} ({slices} slice{'s' * (slices != 1)})"

    others = ", ".join(described(image) for image in images[1:4]) + (
        f" and {len(images) - 4} more" if len(images) > 4 else "")
    return (f"the folder holds {len(images)} image series; this is {described(images[0])}, the one with the "
            f"most slices; not used: {others} (napari opens each as a layer; to run on another, give it a "
            "folder of its own)")


def reader_notes(image: MedicalImage) -> list[str]:
    """What the reader assumed or changed to make the image usable, one sentence each.

    Readers record these in ``metadata`` under keys ending in ``_note`` (a resampled series, an
    orthonormalised orientation, an assumed pixel size...), in their own words, never header
    text, so a caller may print them or put them in a report.  A user must see them: an image
    read with a gap filled in, or with files left out, is not the image they may think it is.
    """
    return [" ".join(str(value).split()) for key, value in image.metadata.items()
            if key.endswith("_note") and value]


def describe(image: MedicalImage) -> dict:
    """The geometry summary `napari-medcad info` prints, numbers as SimpleITK reports them."""
    return {
        "name": image.name,
        "size_xyz": list(image.size_xyz),
        "spacing_xyz": list(image.geometry.spacing_xyz),
        "origin_xyz": list(image.geometry.origin_xyz),
        "direction": list(image.geometry.direction),
        "dtype": str(image.array.dtype),
        "modality": image.modality,
        "rgb": image.rgb,
        "notes": reader_notes(image),
    }


def image_info(path: str | os.PathLike) -> dict:
    """One JSON-able summary of ``path``; a DICOM folder also lists each of its series."""
    images = read_images(path)
    info = {"path": os.fspath(path)} | describe(images[0])
    if Path(path).is_dir():
        info["series"] = [describe(image) for image in images]
        if images[0].metadata.get("unreadable_in_folder"):
            info["unreadable_in_folder"] = images[0].metadata["unreadable_in_folder"]
    return info


def write_image(image: MedicalImage, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write NIfTI / NRRD / MetaImage atomically (temporary file beside the target, then rename)."""
    import SimpleITK as sitk

    path = Path(path)
    ext = extension_of(path)
    if ext not in WRITABLE_EXTENSIONS:
        raise MedcadError(
            f"cannot write '{ext or path.name}' files; use one of {', '.join(WRITABLE_EXTENSIONS)}", path
        )
    if not path.parent.is_dir():
        raise MedcadError("the folder to write into does not exist", path.parent)
    try:
        with replacing(path, suffix=ext) as temporary, itk_file_names([temporary]) as (name,):
            # ITK prints warnings (a direction coerced to orthogonal...) straight to stderr
            with native_output_captured():
                sitk.WriteImage(image.to_sitk(), name, useCompression=compress and ext != ".nii")
    except RuntimeError as err:
        from .itk_formats import itk_reason

        raise MedcadError(f"could not write the image ({itk_reason(err)})", path) from None
    except OSError as err:
        raise MedcadError(f"could not write the image ({err.strerror or err})", path) from None
    return path
