"""NIfTI, NRRD, MetaImage and plain pictures through SimpleITK.

SimpleITK is the reference for geometry in this project (LPS, ITK direction semantics), so
reading these formats with it makes `napari-medcad info` agree with SimpleITK by construction,
and its NIfTI reader resolves qform/sform the way ITK-based tools (3D Slicer, nnU-Net) do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import MedcadError
from ..image import Geometry, MedicalImage
from .paths import PICTURE_EXTENSIONS, check_memory, extension_of

_ITK_ERROR = re.compile(r"ITK ERROR: [^:]*\):\s*(.*)")


def itk_reason(err: Exception) -> str:
    """A short, path-free reason from a SimpleITK exception's multi-line text."""
    text = str(err)
    match = _ITK_ERROR.search(text)
    reason = match.group(1) if match else text.strip().splitlines()[-1] if text.strip() else ""
    reason = re.sub(r"(/[^\s:]+)+", "", reason)  # drop file paths (ours are in the prefix)
    reason = " ".join(reason.split()).strip(" .:")
    lowered = reason.lower()
    if "could not create io object" in lowered or "unable to determine imageio" in lowered:
        return "not an image in a format this reader knows (or the file is corrupt)"
    if "too short" in lowered or "unexpected end" in lowered or "eof" in lowered or "truncated" in lowered:
        return "the file is truncated or corrupt"
    return f"could not be read as an image ({reason or 'unknown ITK error'})"


def guess_modality(array: np.ndarray) -> str:
    """'CT' if the intensities look like Hounsfield units (air near -1000), else 'OT'."""
    if array.size == 0 or not np.issubdtype(array.dtype, np.number) or array.ndim < 2:
        return "OT"
    sample = array[:: max(1, array.shape[0] // 16)]
    low, high = float(np.min(sample)), float(np.max(sample))
    return "CT" if low <= -900 and 0 < high <= 40000 else "OT"


def read_itk(path: str | os.PathLike) -> MedicalImage:
    """Read one NIfTI / NRRD / MetaImage / PNG / JPEG file with its geometry."""
    import SimpleITK as sitk

    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise MedcadError(itk_reason(err), path) from None
    size = reader.GetSize()
    components = reader.GetNumberOfComponents()
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) not in (2, 3) or min(size) < 1:
        raise MedcadError(
            f"unsupported dimensionality: {len(size)}-D image of size {tuple(size)}; "
            "2-D and 3-D images are supported",
            path,
        )
    is_picture = extension_of(path) in PICTURE_EXTENSIONS
    if components > 1 and not (is_picture and len(size) == 2):
        raise MedcadError(
            f"images with {components} values per voxel are not supported (only grey-value volumes)", path
        )
    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    pixel_bytes = int(bits.group(1)) // 8 if bits else 8
    check_memory(int(np.prod(size, dtype=np.float64)) * components * pixel_bytes, path)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise MedcadError(itk_reason(err), path) from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    array = sitk.GetArrayFromImage(image)
    rgb = components > 1
    if rgb and components == 2:  # grey + alpha
        array, rgb = array[..., 0], False
    if rgb and components > 4:
        raise MedcadError(f"pictures with {components} channels are not supported", path)
    if not np.issubdtype(array.dtype, np.number) or array.dtype == np.complex64:
        raise MedcadError(f"unsupported pixel type {array.dtype}", path)
    geometry = Geometry.from_sitk(image)
    modality = "OT" if rgb or is_picture else guess_modality(array)
    metadata = {"format": extension_of(path).lstrip(".").upper(), "source_file": path.name}
    if modality == "CT":
        metadata["modality_source"] = "guessed from intensities (air near -1000 HU)"
    return MedicalImage(
        array=array,
        geometry=geometry,
        modality=modality,
        name=_stem(path),
        rgb=rgb,
        metadata=metadata,
    )


def _stem(path: Path) -> str:
    name = path.name
    ext = extension_of(path)
    return name[: -len(ext)] if ext and name.lower().endswith(ext) else path.stem
