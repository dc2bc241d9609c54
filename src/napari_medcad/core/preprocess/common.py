"""What every preprocessing operation shares: input checks, the 2-D + time convention, how
results are derived from their input, and iteration over frames with progress.

A 2-D + time stack is a 3-D array whose first axis is time; it is marked by
``image.metadata["axes"] == "tyx"``.  Operations that are 2-D by nature run frame by frame on
it, and nothing is resampled, smoothed or cropped-by-default along time.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..errors import MedcadError
from ..image import MedicalImage
from ..progress import ProgressFn, report

#: metadata key and value that mark a 3-D array as 2-D frames over time
AXES_KEY = "axes"
TIME_AXES = "tyx"

#: metadata key saying what the values are once a step rescaled them (absent: as acquired)
INTENSITY_KEY = "intensity"

#: modalities whose values are not Hounsfield units ("OT" means unknown and is allowed)
NON_CT_MODALITIES = frozenset({"MR", "US", "CR", "DX", "MG", "XA", "RF", "PT", "NM", "SEG", "SM", "XC", "OP"})
#: modalities that say nothing about what the image holds (a NIfTI or NRRD file, say)
UNKNOWN_MODALITIES = frozenset({"", "OT", "UNKNOWN"})
#: an image of unknown modality must hold values below this to pass for CT (air is about -1000 HU)
HU_AIR_BELOW = -500.0
#: the lowest CT value models are given: a 12-bit scanner's range starts here, and the corners
#: outside its reconstruction circle are filled with -2000 or -3024 instead
HU_FLOOR = -1024.0


def is_time_stack(image: MedicalImage) -> bool:
    """True for a 2-D + time stack (first array axis is time)."""
    if image.metadata.get(AXES_KEY) != TIME_AXES:
        return False
    if image.ndim != 3:
        raise MedcadError(
            f"'{image.name}' is marked as 2-D + time but has {image.ndim} spatial dimensions"
        )
    return True


def spatial_axes(image: MedicalImage) -> tuple[int, ...]:
    """Array axes that are space (not time, not colour), in array (z, y, x) order."""
    first = 1 if is_time_stack(image) else 0
    return tuple(range(first, image.ndim))


def check_image(image: MedicalImage, operation: str) -> None:
    """Refuse arrays no operation can handle: non-numeric, empty, NaN or infinite values."""
    array = image.array
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise MedcadError(f"{operation}: '{image.name}' holds {array.dtype} values, not real numbers")
    if array.size == 0:
        raise MedcadError(f"{operation}: '{image.name}' is empty")
    if np.issubdtype(array.dtype, np.floating):
        # min/max propagate NaN and reach +-inf, without a boolean copy of the volume
        if not (np.isfinite(np.min(array)) and np.isfinite(np.max(array))):
            raise MedcadError(
                f"{operation}: '{image.name}' contains NaN or infinite values; "
                "fill or mask them before preprocessing"
            )


def check_single_channel(image: MedicalImage, operation: str) -> None:
    if image.rgb:
        raise MedcadError(
            f"{operation} needs a single-channel image; '{image.name}' is a colour picture "
            "(add a 'grayscale' step first)"
        )


def check_ct(image: MedicalImage, operation: str) -> None:
    """Hounsfield-unit operations refuse colour pictures and known non-CT modalities."""
    if image.rgb:
        raise MedcadError(f"{operation} needs a CT in Hounsfield units; '{image.name}' is a colour picture")
    if image.modality.upper() in NON_CT_MODALITIES:
        raise MedcadError(
            f"{operation} needs a CT in Hounsfield units; '{image.name}' is {image.modality}"
        )
    units = image.metadata.get(INTENSITY_KEY)
    if units is not None:
        raise MedcadError(
            f"{operation} needs Hounsfield units; '{image.name}' holds {units} values "
            "(put this step before the intensity steps)"
        )
    if image.modality.upper() in UNKNOWN_MODALITIES:
        array = np.asarray(image.array)
        if array.size and np.issubdtype(array.dtype, np.number):
            check_hounsfield(float(np.nanmin(array)), float(np.nanmax(array)), operation)


def check_hounsfield(low: float, high: float, what: str) -> None:
    """An image of unknown modality given to a CT operation must at least look like CT in HU.

    A NIfTI or NRRD file does not say what it holds; an MR or a normalised volume through a CT
    step gives a mask of everything or nothing, a lung window of one grey, a model's "0
    findings".  Every CT of the chest, head or abdomen shows air (about -1000 HU) outside the
    body or inside it, so an image with nothing below ``HU_AIR_BELOW`` is refused, saying what
    its values are (a file that records its modality as CT is not checked)."""
    if low > HU_AIR_BELOW:
        raise MedcadError(
            f"{what} reads CT in Hounsfield units, but this image has no air (nothing below {HU_AIR_BELOW:g}; "
            f"its values lie between {low:g} and {high:g}): is it a CT? (a file that records its modality "
            "as CT is not checked)")


def raise_to_hu_floor(image: MedicalImage, low: float | None = None) -> tuple[MedicalImage, int]:
    """A CT in HU with values below ``HU_FLOOR`` raised to it, and how many voxels were.

    A model's linear resampling blends the padding outside the scanner's field of view (-2000
    or -3024) into the body's edge: on a real CT padded with -3024 instead of -1024 a borderline
    candidate came and went with the padding value.  The image is returned as it is (the same
    object) when nothing lies below; ``low`` is its minimum if the caller has it."""
    low = float(np.min(image.array)) if low is None else float(low)
    if low >= HU_FLOOR:
        return image, 0
    below = image.array < HU_FLOOR
    count = int(np.count_nonzero(below))
    array = image.array.copy()
    array[below] = HU_FLOOR
    return image.with_array(array), count


def as_float32(array: np.ndarray) -> np.ndarray:
    """A float32 copy (callers may then work in place without touching the input)."""
    return np.array(array, dtype=np.float32, copy=True)


def without_float16(array: np.ndarray) -> np.ndarray:
    """SciPy's filters have no float16 kernels: such arrays go in as float32."""
    return array.astype(np.float32) if array.dtype == np.float16 else array


def derive(
    image: MedicalImage, array: np.ndarray, geometry=None, *, rgb: bool | None = None, **metadata_changes
) -> MedicalImage:
    """The result of an operation: new array (and geometry), metadata copied, never shared.

    ``metadata_changes`` set metadata keys (a value of None removes the key).
    """
    metadata = dict(image.metadata)
    for key, value in metadata_changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return image.with_array(array, geometry, metadata=metadata, rgb=image.rgb if rgb is None else rgb)


def display_window(low: float, high: float, units: str | None = None) -> dict:
    """Metadata that makes napari show ``low..high`` (read by the layer adapter's display range)
    and, for a step that changes what the values mean, says what they are now (``units``)."""
    width = float(high - low) if high > low else 1.0
    window = {"window_center": float(low + high) / 2.0, "window_width": width}
    return {**window, INTENSITY_KEY: units} if units else window


def per_frame(
    image: MedicalImage,
    function: Callable[[np.ndarray], np.ndarray],
    progress: Optional[ProgressFn],
    message: str,
) -> np.ndarray:
    """``function`` on each frame of a 2-D + time stack, or once on a 2-D/3-D image."""
    if is_time_stack(image):
        return per_slice(image.array, function, progress, message, unit="frame")
    report(progress, 0, 1, message)
    result = function(image.array)
    report(progress, 1, 1, message)
    return result


def per_slice(
    array: np.ndarray,
    function: Callable[[np.ndarray], np.ndarray],
    progress: Optional[ProgressFn],
    message: str,
    unit: str = "slice",
) -> np.ndarray:
    """``function`` on each 2-D slice along the first axis of a 3-D array (a 2-D array: once).

    Each slice is a unit of progress, so a long job can be cancelled between slices.
    """
    if array.ndim == 2:
        report(progress, 0, 1, message)
        return function(array)
    count = array.shape[0]
    out = None
    for index in range(count):
        report(progress, index, count, f"{message}, {unit} {index + 1}")
        result = function(array[index])
        if out is None:
            out = np.empty((count,) + result.shape, dtype=result.dtype)
        out[index] = result
    report(progress, count, count, message)
    return out


def spatial_blocks(image: MedicalImage) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The array as ``(blocks, *space)``: time frames and colour channels become blocks.

    Returns the blocks (a view when the layout allows) and a function that puts an array of
    shape ``(blocks, *new_space)`` back into the image's layout.
    """
    array = image.array
    space_ndim = len(spatial_axes(image))
    if image.rgb:
        array = np.moveaxis(array, -1, 0)  # colour first, then [time,] space
    lead_shape = array.shape[: array.ndim - space_ndim]
    blocks = array.reshape((-1,) + array.shape[array.ndim - space_ndim :])

    def restore(result: np.ndarray) -> np.ndarray:
        result = result.reshape(lead_shape + result.shape[1:])
        return np.ascontiguousarray(np.moveaxis(result, 0, -1)) if image.rgb else result

    return blocks, restore
