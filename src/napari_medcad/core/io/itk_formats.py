"""NIfTI, NRRD, MetaImage and plain pictures through SimpleITK (NIfTI-2, which it cannot open,
through nibabel: see ``nifti2``).

SimpleITK is the reference for geometry in this project (LPS, ITK direction semantics), so
reading these formats with it makes `napari-medcad info` agree with SimpleITK by construction,
and its NIfTI reader resolves qform/sform the way ITK-based tools (3D Slicer, nnU-Net) do.

SimpleITK is lenient where a viewer must not be: its NIfTI reader fills a truncated file
with zeros without a word, and a header may claim terabytes.  So before reading the voxels we
compare what the header promises with what the file can hold (:func:`check_data_size`), and
we refuse an image that cannot fit in memory before anything is allocated.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np

from ..errors import MedcadError
from ..image import Geometry, MedicalImage
from .nifti2 import read_nifti2
from .paths import (
    PICTURE_EXTENSIONS,
    check_memory,
    extension_of,
    itk_file_names,
    native_output_captured,
    quiet_libraries,
)

#: "ITK ERROR: NrrdImageIO(0x55...): text", "itk::ERROR: ...", "sitk::ERROR: text"
_ITK_PREFIX = re.compile(r"(?:s?itk::|ITK )ERROR:\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?")
_SOURCE_LINE = re.compile(r"^Exception thrown in SimpleITK .*$", re.MULTILINE)
_PATH = re.compile(r"""["']?(?:\.{0,2}/[^\s"':]+)+["']?""")

#: words with which libjpeg and libpng report damaged data they decode anyway
_DECODER_COMPLAINTS = ("error", "corrupt", "premature", "bogus", "unsupported", "invalid", "truncated")

#: deflate (gzip, zlib) cannot shrink data more than about 1032:1
_MAX_DEFLATE_RATIO = 1100


def itk_reason(err: Exception | str) -> str:
    """A short, path-free, one-line reason from a SimpleITK exception's multi-line text."""
    text = _SOURCE_LINE.sub("", str(err))
    match = _ITK_PREFIX.search(text)
    body = text[match.end():] if match else text
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    lowered = " ".join(lines).lower()
    if "could not create io object" in lowered or "unable to determine imageio" in lowered:
        return "not an image in a format this reader knows (or the file is corrupt)"
    if any(
        word in lowered
        for word in ("fread got only", "too short", "unexpected end", "eof", "truncated", "premature end",
                     "error while reading file", "read failed", "not enough data", "short read",
                     "but received", "fewer bytes")
    ):
        return "the file is truncated or corrupt"
    if "couldn't open" in lowered or "cannot open data file" in lowered or "no such file" in lowered:
        return "a data file named in its header is missing or cannot be opened"
    if "cannot read requested file" in lowered:  # GDCM's only words for any unreadable DICOM
        return "the file is corrupt or uses an encoding this reader does not support"
    if "permission denied" in lowered:
        return "permission denied"
    # the most specific line is the last one (teem and GDCM print a stack of "trouble" lines)
    reason = lines[-1] if lines else ""
    reason = re.sub(r"^\[\w+\]\s*\w+:\s*", "", reason)  # "[nrrd] _nrrdRead: ..." -> "..."
    reason = _PATH.sub("", reason)
    reason = " ".join(reason.split()).strip(" .:")
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return f"could not be read as an image ({reason or 'unknown error in the image library'})"


def guess_modality(array: np.ndarray) -> str:
    """'CT' if the intensities look like Hounsfield units (air near -1000), else 'OT'."""
    if array.size == 0 or not np.issubdtype(array.dtype, np.number) or array.ndim < 2:
        return "OT"
    sample = array[:: max(1, array.shape[0] // 16)]
    low, high = float(np.min(sample)), float(np.max(sample))
    return "CT" if low <= -900 and 0 < high <= 40000 else "OT"


# ------------------------------------------------------------------------------------------
# does the file hold the voxels its header promises?


def _truncated(path: Path, held: int, claimed: int) -> MedcadError:
    return MedcadError(
        f"the file is truncated: its header describes {_bytes(claimed)} of voxels but it holds "
        f"only {_bytes(held)}",
        path,
    )


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _check_compressed(path: Path, held: int, claimed: int) -> None:
    if claimed > _MAX_DEFLATE_RATIO * held + (1 << 20):
        raise MedcadError(
            f"the file is truncated or corrupt: its header describes {_bytes(claimed)} of voxels, "
            f"more than its {_bytes(held)} of compressed data can hold",
            path,
        )


def _text_header(path: Path, stop) -> tuple[list[str], int]:
    """The header lines of a text-headed format (NRRD, MetaImage) and the header's length."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    lines, offset = [], 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        line = raw.decode("latin-1").strip()
        if stop(line):
            if line:
                lines.append(line)
            break
        lines.append(line)
    return lines, offset


def _key_values(lines: list[str], separator: str) -> dict[str, str]:
    out = {}
    for line in lines:
        if separator in line and not line.startswith("#"):
            key, value = line.split(separator, 1)
            out[key.strip().lower()] = value.strip()
    return out


def _detached_data(path: Path, name: str) -> Path | None:
    """The one data file a detached header names, or None when it names a list or a pattern."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        # MetaIO would try to open a file of that garbled name (and ITK may crash doing so)
        raise MedcadError("the header is corrupt (the name of its data file is not text)", path)
    if not name or name.upper().startswith("LIST") or "%" in name:
        return None
    if _is_file_pattern(name):
        return None
    data = Path(name)
    if not data.is_absolute():
        data = path.parent / data
    if not data.is_file():
        raise MedcadError(f"its data file '{Path(name).name}' is missing or is not a file", path)
    return data


def _is_file_pattern(name: str) -> bool:
    """MetaImage's 'pattern min max step' and NRRD's 'format min max step [dim]' file lists."""
    parts = name.split()
    return len(parts) >= 4 and all(p.lstrip("-").isdigit() for p in parts[1:4])


def _nifti_header(path: Path, compressed: bool):
    """The NIfTI-1 or NIfTI-2 header of ``path`` as nibabel parses it, unchecked; None if unparseable.

    Read leniently (``check=False``): ITK accepts headers nibabel would reject, and only the
    layout fields are wanted here.
    """
    import gzip
    import io

    import nibabel

    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as handle:
            raw = handle.read(540)
        if len(raw) < 348:
            return None
        two = 540 in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))
        header_class = nibabel.Nifti2Header if two else nibabel.Nifti1Header
        with quiet_libraries("nibabel", "nibabel.global"):
            return header_class.from_fileobj(io.BytesIO(raw), check=False)
    except Exception:  # noqa: BLE001 - damaged gzip stream, garbage header: ITK will say what is wrong
        return None


def _nifti_layout(path: Path, compressed: bool, pair: bool = False) -> tuple[int, int] | None:
    """(data offset, bytes of voxels) as stored in the file, from its header; None if unknown.
    ``pair``: the header of a .hdr/.img pair, whose offset is into the .img.

    The stored size comes from the header's own datatype: ITK reports the pixel type *after*
    scl_slope / scl_inter are applied (float32 for a uint16 CT with intercept -1024), which is
    not what the file holds.  A dimension of size 0 (ITK silently reads it as 1 and fills the
    image with whatever follows the header) is refused.
    """
    header = _nifti_header(path, compressed)
    if header is None:
        return None
    try:
        shape = tuple(int(n) for n in header.get_data_shape())
        itemsize = header.get_data_dtype().itemsize
        offset = int(header.get_data_offset())
    except Exception:  # noqa: BLE001 - an unknown datatype code, a negative dimension...
        return None
    if any(n == 0 for n in shape):
        raise MedcadError(
            f"the header describes an image with no voxels (size {' x '.join(map(str, shape))}); the file is corrupt",
            path,
        )
    if not pair:
        offset = max(offset, int(header.sizeof_hdr))  # vox_offset 0 in a .nii: data right after the header
    return offset, int(np.prod(shape, dtype=np.float64)) * itemsize


def _is_nifti2(path: Path) -> bool:
    """Whether a .nii / .nii.gz file holds a NIfTI-2 header (False when it cannot be parsed: the
    ITK path then says what is wrong with the file)."""
    import nibabel

    try:
        compressed = _is_gzip(path)
    except OSError:
        return False
    return isinstance(_nifti_header(path, compressed), nibabel.Nifti2Header)


def _nifti_pair_data(path: Path) -> Path:
    """The .img of the NIfTI-1 pair whose header is ``path``, or a one-line refusal.

    An Analyze 7.5 header (a .hdr without NIfTI's magic) records neither orientation nor origin:
    ITK reads it with the origin at 0 and a guessed direction, a geometry that is not the
    patient's, so it is refused rather than shown in the wrong place.  A NIfTI-2 pair is refused
    too (SimpleITK cannot read NIfTI-2; a single .nii of it is read with nibabel).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(348)
    except OSError as err:
        raise MedcadError(f"cannot read it ({err.strerror or err})", path) from None
    sizes = {int.from_bytes(raw[:4], order) for order in ("little", "big")}
    if 540 in sizes:
        raise MedcadError("a NIfTI-2 header and data pair (.hdr/.img) is not supported; save it as one .nii file", path)
    if len(raw) < 348 or 348 not in sizes:
        raise MedcadError("not a NIfTI header: a .hdr must be the header of a NIfTI-1 .hdr/.img pair", path)
    if raw[344:348] != b"ni1\x00":
        raise MedcadError("an Analyze 7.5 header: it records no orientation or origin, so the image's position "
                          "in the patient is unknown; convert it to NIfTI with its real geometry", path)
    for suffix in (".img", ".IMG", ".img.gz"):
        data = path.with_name(path.name[:-4] + suffix)
        if data.is_file():
            return data
    raise MedcadError(f"its data file '{path.name[:-4]}.img' is missing or is not a file", path)


def unsupported_dimensionality(size: tuple[int, ...], path: Path) -> MedcadError:
    """The refusal of an image that is not 2-D or 3-D (one message for every reader)."""
    return MedcadError(f"unsupported dimensionality: {len(size)}-D image of size {size}; "
                       "2-D and 3-D images are supported", path)


def _is_gzip(path: Path) -> bool:
    """Whether the file is gzip-compressed, by its magic bytes (a '.nii' may be, a '.nii.gz' may not)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _check_nifti(path: Path, itk_claimed: int) -> None:
    """Refuse a NIfTI file that holds fewer voxel bytes than its header's dimensions and datatype say.

    ``itk_claimed`` (what ITK will allocate) only serves when the header cannot be parsed here,
    for the cheap compression-ratio test, where overstating by a rescale's float32 is harmless.
    """
    size = path.stat().st_size
    compressed = _is_gzip(path)
    layout = _nifti_layout(path, compressed)
    if layout is None:  # ITK will say what is wrong with the header, if anything
        if compressed:
            _check_compressed(path, size, itk_claimed)
        return
    offset, claimed = layout
    if not compressed:
        if size < offset + claimed:
            raise _truncated(path, max(size - offset, 0), claimed)
        return
    _check_compressed(path, size, claimed)  # cheap: no inflating
    expected = offset + claimed
    # gzip: the last 4 bytes hold the uncompressed length (mod 2**32) of a single-member file
    with open(path, "rb") as handle:
        handle.seek(max(size - 4, 0))
        isize = int.from_bytes(handle.read(4), "little")
    if isize == expected % 2**32:
        return
    total = _inflated_size(path, expected)
    if total < expected:
        raise _truncated(path, max(total - offset, 0), claimed)


def _inflated_size(path: Path, wanted: int) -> int:
    """Bytes a (multi-member) gzip file inflates to, stopping once ``wanted`` is reached."""
    total = 0
    inflater = zlib.decompressobj(31)
    with open(path, "rb") as handle:
        while total < wanted:
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            while chunk:
                try:
                    total += len(inflater.decompress(chunk, 1 << 24))
                    chunk = inflater.unconsumed_tail
                except zlib.error:
                    return total
                if inflater.eof:
                    chunk = inflater.unused_data + chunk
                    inflater = zlib.decompressobj(31)
                    if not chunk:
                        break
    return total


def check_data_size(path: Path, claimed: int) -> None:
    """Refuse a file that cannot hold the ``claimed`` bytes of voxels its header describes.

    ``claimed`` is what ITK will allocate; NIfTI files are measured by their own header instead.
    """
    ext = extension_of(path)
    if ext in (".nii", ".nii.gz"):
        _check_nifti(path, claimed)  # measured by the header's own datatype: see _nifti_layout
        return
    if ext == ".hdr":
        data = _nifti_pair_data(path)
        layout = _nifti_layout(path, False, pair=True)
        if layout is not None and not _is_gzip(data) and data.stat().st_size < sum(layout):
            raise _truncated(data, max(data.stat().st_size - layout[0], 0), layout[1])
        return
    if ext in (".nrrd", ".nhdr"):
        lines, header_length = _text_header(path, lambda line: line == "")
        fields = _key_values([ln for ln in lines if not ln.startswith("#")], ":")
        encoding = fields.get("encoding", "raw").lower()
        data_name = fields.get("data file", fields.get("datafile"))
    elif ext in (".mha", ".mhd"):
        lines, header_length = _text_header(path, lambda line: line.lower().startswith("elementdatafile"))
        fields = _key_values(lines, "=")
        encoding = "gzip" if fields.get("compresseddata", "false").lower() == "true" else "raw"
        data_name = fields.get("elementdatafile", "LOCAL")
        if data_name.upper() == "LOCAL":
            data_name = None
    else:
        return
    if data_name:
        data = _detached_data(path, data_name)
        if data is None:
            return
        held = data.stat().st_size
        if ext == ".nhdr" and encoding in ("gzip", "gz"):
            _check_compressed(path, held, claimed)
            return
    else:
        held = path.stat().st_size - header_length
    if encoding == "raw":
        if held < claimed:
            raise _truncated(path, held, claimed)
    elif encoding in ("gzip", "gz"):
        _check_compressed(path, held, claimed)
    elif encoding in ("ascii", "text", "txt", "hex"):
        if claimed > 8 * held + (1 << 20):
            raise _truncated(path, held, claimed)


def _check_jpeg_complete(path: Path) -> None:
    """libjpeg pads a truncated JPEG with grey without failing: look for the end-of-image marker."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(size - 4096, 0))
        tail = handle.read()
    if b"\xff\xd9" not in tail:
        raise MedcadError("the file is truncated or corrupt (the JPEG data has no end marker)", path)


# ------------------------------------------------------------------------------------------


def read_itk(path: str | os.PathLike) -> MedicalImage:
    """Read one NIfTI (.nii, .nii.gz, a NIfTI-1 .hdr/.img pair) / NRRD / MetaImage / PNG / JPEG file with its geometry."""
    path = Path(path)
    if extension_of(path) in (".nii", ".nii.gz") and _is_nifti2(path):  # SimpleITK cannot open NIfTI-2
        return read_nifti2(path, _stem(path))
    if extension_of(path) == ".hdr":
        _nifti_pair_data(path)  # before ITK, which reads Analyze headers with a made-up geometry
    with itk_file_names([path]) as (name,):
        image, components = _read_with_itk(path, name)
    import SimpleITK as sitk

    is_picture = extension_of(path) in PICTURE_EXTENSIONS
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    array = sitk.GetArrayFromImage(image)
    rgb = components > 1
    if rgb and components == 2:  # grey + alpha
        array, rgb = array[..., 0], False
    if rgb and components > 4:
        raise MedcadError(f"pictures with {components} channels are not supported", path)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise MedcadError(f"unsupported pixel type {array.dtype}", path)
    if np.issubdtype(array.dtype, np.floating) and extension_of(path) in (".nii", ".nii.gz", ".hdr"):
        _restore_nifti_nans(path, array)
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


def _read_with_itk(path: Path, name: str):
    """(SimpleITK image, values per voxel) of ``path``, opened by SimpleITK as ``name``.

    The header is read first, so that a file that cannot hold what it promises, or that
    could not fit in memory, is refused before anything is allocated.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    with native_output_captured(), quiet_libraries():
        try:
            reader.ReadImageInformation()
        except RuntimeError as err:
            raise MedcadError(itk_reason(err), path) from None
    size = reader.GetSize()
    components = reader.GetNumberOfComponents()
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) not in (2, 3) or min(size) < 1:
        raise unsupported_dimensionality(tuple(size), path)
    is_picture = extension_of(path) in PICTURE_EXTENSIONS
    if components > 1 and not (is_picture and len(size) == 2):
        raise MedcadError(
            f"images with {components} values per voxel are not supported (only grey-value volumes)", path
        )
    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    pixel_bytes = int(bits.group(1)) // 8 if bits else 8
    claimed = int(np.prod(reader.GetSize(), dtype=np.float64)) * components * pixel_bytes
    check_memory(claimed, path)
    try:
        check_data_size(path, claimed)
        if extension_of(path) in (".jpg", ".jpeg"):
            _check_jpeg_complete(path)
    except OSError as err:
        raise MedcadError(f"cannot read it ({err.strerror or err})", path) from None
    with native_output_captured() as chatter, quiet_libraries():
        try:
            image = reader.Execute()
        except RuntimeError as err:
            raise MedcadError(itk_reason(err), path) from None
    complaint = chatter.text.lower()
    if is_picture and any(word in complaint for word in _DECODER_COMPLAINTS):
        # libjpeg / libpng print their trouble and hand back a partly grey picture: refuse it
        raise MedcadError("the file is truncated or corrupt (the picture data is damaged)", path)
    return image, components


def _restore_nifti_nans(path: Path, array: np.ndarray) -> None:
    """Put back the NaN voxels of a floating-point NIfTI file, which ITK's reader turns into 0.

    NaN marks "no value" (outside a mask, a failed fit); as 0 it would pass for a measurement
    (soft tissue, in HU), and no later check could tell.  nibabel reads the voxels as stored;
    only files whose own datatype is floating point can hold NaN, and only images ITK gave zeros
    can have lost one, so others are not read twice.
    """
    if not (array == 0).any():
        return
    header = _nifti_header(path, _is_gzip(path))
    if header is None or header.get_data_dtype().kind != "f":
        return
    import nibabel

    with quiet_libraries("nibabel", "nibabel.global"):
        stored = np.asanyarray(nibabel.load(str(path)).dataobj)
    while stored.ndim > array.ndim:  # a 4-D file: its first volume, as read_itk takes
        stored = stored[..., 0]
    nans = np.isnan(stored).T  # nibabel's x, y, z; the array's z, y, x
    if nans.shape == array.shape and nans.any():
        array[nans] = np.nan


def _stem(path: Path) -> str:
    name = path.name
    ext = extension_of(path)
    return name[: -len(ext)] if ext and name.lower().endswith(ext) else path.stem
