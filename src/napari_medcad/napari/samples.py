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


#: the seed of the phantom samples: fixed, so every user sees the same case
SAMPLE_SEED = 0


def phantom_ct() -> list[tuple]:
    """A synthetic chest CT generated on the fly (seeded), with its true nodules as labels and points."""
    from ..core.phantom import generate_chest_ct

    case = generate_chest_ct(SAMPLE_SEED)
    image = case.image.with_array(case.image.array, name=f"phantom CT (seed {SAMPLE_SEED})")
    layers = [
        image_layer_data(image),
        labels_layer_data(case.labels.array, image, name="phantom nodules (truth)", opacity=0.5),
    ]
    if case.nodules:
        layers.append(_truth_points(image, [n.centre_world_mm for n in case.nodules],
                                    [n.diameter_mm for n in case.nodules]))
    return layers


def radiograph() -> list[tuple]:
    """A frontal chest radiograph projected from the seeded phantom, with its true nodules as points."""
    from ..core.phantom import chest_radiograph

    film = chest_radiograph(SAMPLE_SEED)
    image = film.image.with_array(film.image.array, name=f"phantom radiograph (seed {SAMPLE_SEED})")
    layers = [image_layer_data(image)]
    if film.nodules:
        layers.append(_truth_points(image, [n.centre_world_mm for n in film.nodules],
                                    [n.diameter_mm for n in film.nodules]))
    return layers


def _truth_points(image, centres_world_mm, diameters_mm) -> tuple:
    """A Points layer of the true nodule centres (world mm) over ``image``."""
    import numpy as np

    from ..core.image import lps_to_napari_world

    centres = lps_to_napari_world(np.asarray(centres_world_mm, dtype=float))
    return (
        centres,
        {
            "name": "true nodule centres",
            "units": ("mm",) * centres.shape[1],
            "size": np.asarray(diameters_mm, dtype=float),
            "face_color": "transparent",
            "border_color": "lime",
            "border_width": 0.1,
            "symbol": "ring",
            "properties": {"diameter_mm": np.asarray(diameters_mm, dtype=float)},
            "metadata": {"source_layer": image.name, "world": "LPS mm"},
        },
        "points",
    )
