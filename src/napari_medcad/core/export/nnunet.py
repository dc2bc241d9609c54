"""nnU-Net v2 raw-dataset layout: imagesTr/<case>_XXXX.nii.gz, labelsTr/<case>.nii.gz, dataset.json.

Images are written from voxels and geometry only (no header text), so nnU-Net, SimpleITK and
nibabel see the source's world geometry.  RGB pictures become three channels (_0000.._0002),
as nnU-Net expects separate files per channel for NIfTI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MedcadError
from ..image import MedicalImage
from ..io import write_image

FILE_ENDING = ".nii.gz"
DATASET_JSON = "dataset.json"


def channel_names(image: MedicalImage) -> dict[str, str]:
    """nnU-Net picks its normalisation from these names: "CT" gets CT normalisation, others z-score."""
    if image.rgb:
        return {str(i): name for i, name in enumerate(("R", "G", "B", "A")[: image.array.shape[-1]])}
    modality = (image.modality or "image").upper()
    return {"0": "CT" if modality == "CT" else modality}


def image_paths(case: str, n_channels: int) -> list[str]:
    return [f"imagesTr/{case}_{channel:04d}{FILE_ENDING}" for channel in range(n_channels)]


def label_path(case: str) -> str:
    return f"labelsTr/{case}{FILE_ENDING}"


def _writable(array: np.ndarray) -> np.ndarray:
    """NIfTI has no bool; everything else SimpleITK writes as it is."""
    return array.astype(np.uint8) if array.dtype == bool else array


def write_channels(image: MedicalImage, targets: list[Path]) -> None:
    """One single-channel NIfTI per channel, each with the source geometry."""
    if image.rgb:
        for channel, target in enumerate(targets):
            plane = np.ascontiguousarray(image.array[..., channel])
            write_image(MedicalImage(_writable(plane), image.geometry, modality=image.modality), target)
    else:
        write_image(MedicalImage(_writable(np.asarray(image.array)), image.geometry, modality=image.modality),
                    targets[0])


def write_labels(classes: np.ndarray, image: MedicalImage, target: Path) -> None:
    write_image(MedicalImage(classes, image.geometry, modality="SEG"), target)


def dataset_json(class_values: dict[str, int], channels: dict[str, str], training: dict[str, list[str]]) -> dict:
    """The fields nnU-Net v2 requires (labels must be consecutive from background 0), and the
    list of training cases (``training``: case -> its files, relative to the dataset).

    With the ``dataset`` list nnU-Net reads the cases listed there instead of every file in
    imagesTr, so a new case's files can be moved in before dataset.json and the old ones
    deleted after it: nnU-Net never sees a case without its files, even when an export is
    killed between two renames.
    """
    labels = {"background": 0}
    for name, value in sorted(class_values.items(), key=lambda item: item[1]):
        labels[name] = value
    if sorted(labels.values()) != list(range(len(labels))):
        raise MedcadError("the dataset's class values are not consecutive; its medcad_export.json was edited by hand")
    cases = {case: _training_entry(case, files) for case, files in sorted(training.items())}
    return {
        "name": "napari-medcad export",
        "description": "Cases reviewed in napari-medcad; see medcad_export.json for provenance.",
        "channel_names": channels,
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "dataset": cases,
    }


def _training_entry(case: str, files: list[str]) -> dict:
    """nnU-Net's ``dataset`` entry of one case: its channel files in order and its label file."""
    images = sorted(f for f in files if f.startswith("imagesTr/"))
    if not images or label_path(case) not in files:
        raise MedcadError(f"the dataset's medcad_export.json lists no image or label file for case {case!r}; "
                          "it was edited by hand")
    return {"images": images, "label": label_path(case)}
