"""npe2 sample data: a real chest CT crop with its expert nodule label, and generated phantoms."""

from __future__ import annotations

from pathlib import Path

from ..core.io import read_image
from .layers import image_layer_data, labels_layer_data

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


def lung_ct() -> list[tuple]:
    """Real chest CT (pyradiomics lung1, BSD-3) cropped around a lung nodule, with its label."""
    image = read_image(SAMPLE_DIR / "lung1_crop.nrrd")
    image.name = "lung1 CT"
    label = read_image(SAMPLE_DIR / "lung1_crop_label.nrrd")
    return [
        image_layer_data(image),
        labels_layer_data(label.array, image, name="lung1 nodule (expert label)", opacity=0.5),
    ]
