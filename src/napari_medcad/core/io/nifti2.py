"""NIfTI-2 files, which SimpleITK cannot open, read with nibabel.

NIfTI-2 is NIfTI-1 with 64-bit fields (more than 32,767 voxels along an axis; HCP tools and
some converters write it).  SimpleITK answers "Unable to determine ImageIO reader" for it, so
these files go to nibabel, which applies scl_slope / scl_inter and chooses the affine as ITK
does for an orthonormal one (the sform when its code is set, else the qform).  nibabel's affine
is RAS; our geometry, like ITK's, is LPS: x and y change sign.  The checks are the ITK path's:
2-D or 3-D grey values, a size that fits in memory, a file that holds what its header promises.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ..errors import MedcadError, first_line
from ..image import Geometry, MedicalImage
from .paths import check_memory, extension_of, quiet_libraries


def read_nifti2(path: Path, name: str) -> MedicalImage:
    """The image in a NIfTI-2 file, named ``name``, with its geometry in LPS."""
    import nibabel

    from .itk_formats import (  # the ITK path's checks, for the same answers
        check_data_size,
        guess_modality,
        unsupported_dimensionality,
    )

    try:
        with quiet_libraries("nibabel", "nibabel.global"):
            nifti = nibabel.Nifti2Image.from_filename(str(path))
    except Exception as err:  # noqa: BLE001 - nibabel raises many kinds for a damaged header
        raise MedcadError(f"cannot read this NIfTI-2 file ({first_line(err, 120)})", path) from None
    shape = tuple(int(n) for n in nifti.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise unsupported_dimensionality(shape, path)
    stored = nifti.get_data_dtype()
    if stored.names is not None or stored.kind not in "iuf":
        raise MedcadError(f"images of {stored} values are not supported (only grey-value volumes)", path)
    scaled = nifti.dataobj.slope != 1 or nifti.dataobj.inter != 0
    out_dtype = np.dtype(np.float32) if scaled and stored != np.float64 else stored
    check_memory(int(np.prod(shape, dtype=np.float64)) * out_dtype.itemsize, path)
    check_data_size(path, int(np.prod(shape, dtype=np.float64)) * stored.itemsize)
    try:
        with quiet_libraries("nibabel", "nibabel.global"):
            values = np.asanyarray(nifti.dataobj).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise MedcadError(f"the voxel data is truncated or corrupt ({first_line(err, 120)})", path) from None
    array = np.ascontiguousarray(values.astype(out_dtype, copy=False).T)  # nibabel's x, y, z -> z, y, x
    return MedicalImage(array=array, geometry=_lps_geometry(nifti.affine, len(shape), path),
                        modality=guess_modality(array), name=name,
                        metadata={"format": extension_of(path).lstrip(".").upper(), "source_file": path.name,
                                  "nifti_version": 2})


def _lps_geometry(affine: np.ndarray, ndim: int, path: Path) -> Geometry:
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)
    matrix = lps[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    if not np.all(np.isfinite(lps)) or np.any(spacing[:ndim] <= 0):
        raise MedcadError("the NIfTI-2 header's affine is not usable (zero or non-finite voxel sizes)", path)
    direction = (matrix[:, :ndim] / spacing[:ndim])[:ndim]
    with np.errstate(divide="ignore", invalid="ignore"):  # a 2-D image's in-plane axes, as ITK keeps them
        direction = direction / np.linalg.norm(direction, axis=0)
    return Geometry(tuple(spacing[:ndim]), tuple(lps[:ndim, 3]), tuple(direction.ravel()))

