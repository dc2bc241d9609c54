"""COCO detection/segmentation for 2D cases: coco.json plus a PNG per image.

COCO tools read pictures, not NIfTI, so each 2D case is also written as ``imagesCOCO/<case>.png``
(``file_name`` is relative to the dataset folder).  uint8 and uint16 pixels are kept as they are;
other types are mapped linearly onto uint16 and the mapping is recorded on the image entry, so
the original values can be recovered.  Masks are uncompressed COCO RLE (exact, holes included),
which pycocotools and the usual trainers accept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MedcadError
from ..image import MedicalImage

COCO_NAME = "coco.json"
IMAGE_FOLDER = "imagesCOCO"


def png_path(case: str) -> str:
    return f"{IMAGE_FOLDER}/{case}.png"


def png_pixels(image: MedicalImage) -> tuple[np.ndarray, dict | None]:
    """Pixels a PNG can hold, and ``{"offset", "scale"}`` with original = png * scale + offset
    when they had to be rescaled."""
    array = np.asarray(image.array)
    if array.dtype in (np.uint8, np.uint16):
        return array, None
    target = np.uint8 if image.rgb else np.uint16
    top = float(np.iinfo(target).max)
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    scale = (high - low) / top if high > low else 1.0
    pixels = np.clip(np.round((np.nan_to_num(array, nan=low) - low) / scale), 0, top).astype(target)
    return pixels, {"offset": low, "scale": scale}


def write_png(image: MedicalImage, target: Path) -> dict | None:
    import SimpleITK as sitk

    pixels, mapping = png_pixels(image)
    picture = sitk.GetImageFromArray(np.ascontiguousarray(pixels), isVector=image.rgb)
    sitk.WriteImage(picture, str(target))
    return mapping


def rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a (height, width) mask: run lengths in column-major order,
    starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def bbox(mask: np.ndarray) -> list[float]:
    """[x, y, width, height] in pixels, as pycocotools' toBbox gives for the same mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def load(path: Path) -> dict:
    if not path.is_file():
        return {"images": [], "annotations": [], "categories": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict) and isinstance(data.get("images"), list)
    except (OSError, ValueError, AssertionError):
        raise MedcadError("the dataset's coco.json is damaged", path) from None
    return data


def merged(existing: dict, case: str, drop_cases: set[str], image: MedicalImage, instances: np.ndarray,
           instance_of: dict[int, int], class_of_finding: dict[int, int], class_values: dict[str, int],
           mapping: dict | None) -> dict:
    """``existing`` without the entries of ``drop_cases``, plus this case's image and masks
    (finding ``f``'s voxels are where ``instances == instance_of[f]``)."""
    dropped_ids = {im["id"] for im in existing["images"] if im.get("medcad_case") in drop_cases}
    images = [im for im in existing["images"] if im["id"] not in dropped_ids]
    annotations = [a for a in existing["annotations"] if a["image_id"] not in dropped_ids]
    image_id = max((im["id"] for im in existing["images"]), default=0) + 1
    next_annotation = max((a["id"] for a in existing["annotations"]), default=0) + 1
    height, width = instances.shape
    entry = {"id": image_id, "file_name": png_path(case), "height": int(height), "width": int(width),
             "medcad_case": case, "pixel_spacing_mm_xy": list(image.geometry.spacing_xyz)}
    if mapping is not None:
        entry["medcad_intensity_mapping"] = mapping
    images.append(entry)
    for finding_id, class_value in sorted(class_of_finding.items()):
        mask = instances == instance_of[finding_id]
        if not mask.any():
            continue
        annotations.append({
            "id": next_annotation, "image_id": image_id, "category_id": int(class_value),
            "bbox": bbox(mask), "area": float(mask.sum()), "iscrowd": 0, "segmentation": rle(mask),
            "medcad_finding_id": int(finding_id),
        })
        next_annotation += 1
    categories = [{"id": value, "name": name, "supercategory": "lesion"}
                  for name, value in sorted(class_values.items(), key=lambda item: item[1])]
    info = {"description": "napari-medcad export (see medcad_export.json for provenance)"}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}
