"""TIFF stacks and pictures through tifffile (the maintained TIFF library napari itself uses).

TIFF has no patient coordinate system: the origin is 0 and the direction the identity.  Pixel
size is taken from the file when it states one in a physical unit (centimetre resolution tags,
or ImageJ's ``unit``/``spacing``); inch resolutions are ignored because nearly every picture
tool writes a meaningless 72 or 96 dpi there.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..errors import MedcadError
from ..image import Geometry, MedicalImage
from .paths import check_memory

_UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "cm": 10.0, "centimeter": 10.0, "micron": 1e-3,
            "um": 1e-3, "\\u00B5m": 1e-3, "µm": 1e-3, "nm": 1e-6, "m": 1e3}
_STACK_AXES = set("ZQITC")


def _pixel_size_mm(tif, page) -> tuple[float | None, float | None, float | None]:
    """(x, y, z) pixel size in mm, None where the file does not say."""
    x_mm = y_mm = z_mm = None
    imagej = tif.imagej_metadata or {}
    unit_mm = _UNIT_MM.get(str(imagej.get("unit", "")).strip().lower())
    tags = page.tags
    res_unit = tags.get("ResolutionUnit")
    res_unit = int(res_unit.value) if res_unit is not None else 1
    if unit_mm is None and res_unit == 3:  # centimetre
        unit_mm = 10.0
    if unit_mm is not None:
        for key in ("XResolution", "YResolution"):
            tag = tags.get(key)
            if tag is None:
                continue
            numerator, denominator = tag.value
            if numerator > 0 and denominator > 0:
                size = unit_mm * denominator / numerator
                if key == "XResolution":
                    x_mm = size
                else:
                    y_mm = size
        if "spacing" in imagej and float(imagej["spacing"]) > 0:
            z_mm = unit_mm * float(imagej["spacing"])
    return x_mm, y_mm, z_mm


def read_tiff(path: str | os.PathLike) -> MedicalImage:
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise MedcadError("the TIFF file holds no image", path)
            series = tif.series[0]
            axes = series.axes.upper()
            shape = series.shape
            claimed = int(np.prod(shape, dtype=np.float64)) * np.dtype(series.dtype).itemsize
            check_memory(claimed, path)
            first_page = series.pages[0] if series.pages else tif.pages[0]
            bits = int(getattr(first_page, "bitspersample", 8) or 8)
            stored = claimed * bits // (8 * np.dtype(series.dtype).itemsize)
            if int(getattr(first_page, "compression", 1) or 1) == 1 and stored > path.stat().st_size:
                raise MedcadError(
                    f"the TIFF file is truncated: it describes {stored} bytes of pixels but holds "
                    f"only {path.stat().st_size}",
                    path,
                )
            array = series.asarray()
            x_mm, y_mm, z_mm = _pixel_size_mm(tif, series.pages[0] if series.pages else tif.pages[0])
    except MedcadError:
        raise
    except MemoryError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, TypeError, EOFError, struct.error,
            NotImplementedError, RuntimeError, ZeroDivisionError, OverflowError, AttributeError) as err:
        # tifffile raises all of these on damaged or exotic files
        reason = " ".join(str(err).split()) or type(err).__name__
        if "failed to read" in reason or "unexpected end" in reason.lower():
            raise MedcadError(f"the TIFF file is truncated or corrupt ({reason[:120]})", path) from None
        raise MedcadError(f"not a readable TIFF file ({reason[:120]})", path) from None

    if array.size == 0 or len(axes) != array.ndim:
        raise MedcadError(f"the TIFF file holds no readable pixels (shape {array.shape})", path)
    keep = [i for i, (ax, n) in enumerate(zip(axes, array.shape)) if n > 1 or ax in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    rgb = False
    if axes == "YXS":
        if array.shape[-1] == 2:
            array = array[..., 0]
        elif array.shape[-1] in (3, 4):
            rgb = True
        else:
            raise MedcadError(f"pictures with {array.shape[-1]} samples per pixel are not supported", path)
    elif len(axes) == 3 and axes.endswith("YX") and axes[0] in _STACK_AXES:
        pass
    elif axes != "YX":
        raise MedcadError(
            f"unsupported TIFF layout {axes} with shape {array.shape}; 2-D pictures and 3-D stacks are supported",
            path,
        )
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise MedcadError(f"unsupported pixel type {array.dtype}", path)
    ndim = array.ndim - (1 if rgb else 0)
    spacing = [x_mm or y_mm or 1.0, y_mm or x_mm or 1.0]
    if ndim == 3:
        spacing.append(z_mm or 1.0)
    metadata = {"format": "TIFF", "source_file": path.name, "tiff_axes": axes}
    if x_mm is None:
        metadata["spacing_note"] = "the file states no physical pixel size; 1 mm assumed"
    return MedicalImage(
        array=array,
        geometry=Geometry.identity(ndim, spacing),
        modality="OT",
        name=path.name.rsplit(".", 1)[0],
        rgb=rgb,
        metadata=metadata,
    )
