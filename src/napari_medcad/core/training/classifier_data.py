"""The image-level classifiers' data: seeded phantom samples, shared by all four model families.

One data set serves all four model families, so they can be compared on the same samples:

* each phantom case (``PhantomConfig.random_for_training`` with 1-4 nodules of 6-24 mm) is put
  through the cards' preprocessing (resampling to 1 x 1 x 2.5 mm, lung window to [0, 1]);
* a **positive** sample is a 16 x 64 x 64 sub-volume holding the centre of a nodule of at least
  ``min_diameter_mm`` (10 mm: smaller ones look like vessel cross-sections on a slice; in-plane within
  +-14 px of the middle, on slice 4..11; ``crops_per_nodule`` crops per nodule); its *key
  slice* is the slice through that centre;
* **negatives** come from the case's nodule-free twin: the same seed drawn with no nodules gives
  the same patient, vessels and scanner noise (the phantom's random streams are independent).
  Every positive has a paired negative (the same sub-volume of the twin, so only the nodule
  differs), plus ``negatives_per_case`` sub-volumes around random lung voxels of the twin whose
  key slice is at least ``min_lung_fraction`` lung; key slices are drawn from the same range.
  A nodule whose voxels differ from the twin by less than ``min_nodule_contrast_hu`` on average
  (one outside the circular field of view) gives no sample.

A recipe's ``train_crops_per_nodule`` cuts more crops per nodule from the training cases only
(validation and the benchmark keep ``crops_per_nodule``).

2-D models (plain CNN, attention) see the key slice, 3-D models (LSTM, attention MIL) the whole
sub-volume.  Each sample keeps its world geometry and every nodule inside it (centre in LPS mm,
diameter), so explanations can be checked in millimetres.  Prepared cases are cached as ``.npz``
under ``cache_dir`` (or ``$NAPARI_MEDCAD_DATASET_CACHE``); same recipe and seed, same bits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..crop import padded_crop
from ..errors import MedcadError
from ..image import Geometry, MedicalImage
from ..phantom.config import PLACEMENT_BEFORE_2026_11_25, recipe_placement
from ..progress import ProgressFn, report

SPACING_XYZ = [1.0, 1.0, 2.5]
ROI_ZYX = [16, 64, 64]
MAX_NODULES_PER_SAMPLE = 6

#: what decides the samples (shared by all four models; part of the cache key and the provenance)
DATA_RECIPE: dict[str, Any] = {
    "seed": 20241105,
    "train_cases": 48,
    "val_seed": 20241106,
    "val_cases": 12,
    "max_in_plane": 256,
    "max_slices": 96,
    "n_nodules": [1, 4],
    "nodule_diameter_mm": [6.0, 24.0],
    "crops_per_nodule": 3,
    "negatives_per_case": 2,
    "min_lung_fraction": 0.35,
    "min_nodule_contrast_hu": 50.0,
    "min_diameter_mm": 10.0,
    "spacing_xyz": SPACING_XYZ,
    "roi_zyx": ROI_ZYX,
    "centre_jitter_px": 14,
    **PLACEMENT_BEFORE_2026_11_25,  # phantom.config: keeps the shipped weights reproducible
}

DATA_KEYS = tuple(DATA_RECIPE)


def preprocessing(dims: int) -> list[dict[str, Any]]:
    """The cards' pipeline as data: resample to the training grid, then the lung window."""
    spacing = SPACING_XYZ[:dims]
    return [
        {"op": "resample", "params": {"spacing_xyz": list(spacing), "interpolation": "linear"}},
        {"op": "window", "params": {"preset": "lung", "output": "unit"}},
    ]


@dataclasses.dataclass
class ClassifierSamples:
    """Sub-volumes on the training grid with labels, geometry and the nodules they hold."""

    volumes: np.ndarray  # (N, D, H, W) float16 in [0, 1]
    labels: np.ndarray  # (N,) uint8: 1 = a nodule centre is inside
    key_slice: np.ndarray  # (N,) int: the slice 2-D models see
    origin_xyz: np.ndarray  # (N, 3) LPS mm of voxel (0, 0, 0)
    nodules: np.ndarray  # (N, MAX_NODULES_PER_SAMPLE, 4): x, y, z, diameter (mm), NaN padded
    case_seed: np.ndarray  # (N,) int64
    spacing_xyz: tuple[float, float, float] = tuple(SPACING_XYZ)

    def __len__(self) -> int:
        return int(len(self.labels))

    @classmethod
    def concatenate(cls, parts: Sequence["ClassifierSamples"]) -> "ClassifierSamples":
        if not parts:
            raise MedcadError("no samples")
        fields = ("volumes", "labels", "key_slice", "origin_xyz", "nodules", "case_seed")
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in fields},
                   spacing_xyz=parts[0].spacing_xyz)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ("volumes", "labels", "key_slice", "origin_xyz", "nodules",
                                                        "case_seed")} | {"spacing_xyz": np.asarray(self.spacing_xyz)}

    def geometry(self, index: int) -> Geometry:
        return Geometry(self.spacing_xyz, tuple(self.origin_xyz[index]), tuple(np.eye(3).ravel()))

    def volume_image(self, index: int) -> MedicalImage:
        """Sample ``index`` as a 3-D MedicalImage in [0, 1] (already the cards' lung window)."""
        return MedicalImage(np.asarray(self.volumes[index], np.float32), self.geometry(index), modality="CT",
                            name=f"sample{index}", metadata={"window": "lung [0, 1]"})

    def slice_image(self, index: int) -> MedicalImage:
        """The key slice as a 2-D MedicalImage: LPS (x, y) of the 3-D grid."""
        k = int(self.key_slice[index])
        corner = self.geometry(index).index_to_world([k, 0, 0])
        geometry = Geometry(self.spacing_xyz[:2], tuple(corner[:2]), (1.0, 0.0, 0.0, 1.0))
        return MedicalImage(np.asarray(self.volumes[index, k], np.float32), geometry, modality="CT",
                            name=f"sample{index}_z{k}", metadata={"slice_z_mm": float(corner[2])})

    def true_nodules(self, index: int) -> np.ndarray:
        """(M, 4) x, y, z, diameter of the nodules in sample ``index``."""
        rows = self.nodules[index]
        return rows[~np.isnan(rows[:, 0])]

    def slice_nodules(self, index: int) -> np.ndarray:
        """(M, 3) x, y, radius of the nodules' cross-sections (equivalent spheres) on the key slice."""
        z_mm = self.geometry(index).index_to_world([int(self.key_slice[index]), 0, 0])[2]
        out = []
        for x, y, z, diameter in self.true_nodules(index):
            squared = (0.5 * diameter) ** 2 - (z - z_mm) ** 2
            if squared > 0:
                out.append((x, y, float(np.sqrt(squared))))
        return np.asarray(out, float).reshape(-1, 3)


def _case_config(seed: int, recipe: dict[str, Any]):
    from ..phantom import PhantomConfig

    config = PhantomConfig.random_for_training(seed, max_in_plane=int(recipe["max_in_plane"]),
                                               max_slices=int(recipe["max_slices"]))
    return dataclasses.replace(config, n_nodules=tuple(int(n) for n in recipe["n_nodules"]),
                               nodule_diameter_mm=tuple(float(d) for d in recipe["nodule_diameter_mm"]),
                               **recipe_placement(recipe))


@dataclasses.dataclass
class PreparedCase:
    """One phantom and its nodule-free twin on the cards' grid, with labels and the nodule table."""

    image: np.ndarray  # float16, lung window [0, 1]
    twin: np.ndarray  # float16, the same scan without nodules
    labels: np.ndarray  # uint16 nodule ids (nearest)
    lungs: np.ndarray  # bool (of the twin)
    origin_xyz: np.ndarray  # (3,) LPS mm of voxel (0, 0, 0); axis-aligned, spacing SPACING_XYZ
    nodules: np.ndarray  # (M, 6): id, x, y, z, diameter, mean |HU difference| against the twin
    seed: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ("image", "twin", "labels", "lungs", "origin_xyz", "nodules")} | {
            "seed": np.asarray(self.seed)}

    @property
    def geometry(self) -> Geometry:
        return Geometry(tuple(SPACING_XYZ), tuple(self.origin_xyz), tuple(np.eye(3).ravel()))


def prepare_case(seed: int, recipe: dict[str, Any]) -> PreparedCase:
    """Draw the phantom of ``seed`` and its nodule-free twin, and put both on the cards' grid."""
    from ..phantom import generate_chest_ct
    from ..preprocess import Pipeline

    config = _case_config(seed, recipe)
    case = generate_chest_ct(seed, config)
    # the same patient, vessels and scanner noise without nodules: the paired negatives
    twin = generate_chest_ct(seed, dataclasses.replace(config, n_nodules=(0, 0)))
    spacing = [float(s) for s in recipe["spacing_xyz"]]
    if spacing != [float(s) for s in SPACING_XYZ]:
        raise MedcadError("the data recipe's spacing differs from the cards' preprocessing")
    pipeline = Pipeline.from_dict(preprocessing(3))
    prepared = pipeline.run(case.image, device="cpu")
    twin_prepared = pipeline.run(twin.image, device="cpu")
    nearest = Pipeline.from_dict([{"op": "resample", "params": {"spacing_xyz": spacing, "interpolation": "nearest"}}])
    labels = np.asarray(nearest.run(case.labels, device="cpu").array).astype(np.uint16)
    lungs = np.asarray(nearest.run(twin.lung_mask, device="cpu").array) > 0
    geometry = prepared.geometry
    if not geometry.is_axis_aligned or prepared.array.shape != twin_prepared.array.shape:
        raise MedcadError("phantom geometry is expected to be axis-aligned and the same for the twin scan")
    difference = np.abs(case.image.array.astype(np.float32) - twin.image.array.astype(np.float32))
    table = [(n.id, *n.centre_world_mm, n.diameter_mm, float(difference[case.labels.array == n.id].mean()))
             for n in case.nodules]
    return PreparedCase(
        image=np.asarray(prepared.array).astype(np.float16),
        twin=np.asarray(twin_prepared.array).astype(np.float16),
        labels=labels,
        lungs=lungs,
        origin_xyz=np.asarray(geometry.origin_xyz, float),
        nodules=np.asarray(table, float).reshape(-1, 6),
        seed=int(seed),
    )


def case_samples(case: PreparedCase, recipe: dict[str, Any]) -> ClassifierSamples:
    """The positive and negative samples of one prepared case (seeded by the case's seed)."""
    geometry = case.geometry
    size = np.asarray(recipe["roi_zyx"], int)
    jitter = int(recipe["centre_jitter_px"])
    rng = np.random.default_rng([int(case.seed), 5])
    truth = {int(row[0]): tuple(row[1:5]) for row in case.nodules}

    # (source array, start index, label, key slice)
    picks: list[tuple[np.ndarray, np.ndarray, int, int]] = []
    for row in case.nodules:
        # a nodule can lie in the scanned box but outside the circular field of view: no signal
        if row[5] < float(recipe["min_nodule_contrast_hu"]) or row[4] < float(recipe["min_diameter_mm"]):
            continue
        centre = np.round(geometry.world_to_index(row[1:4])).astype(int)
        for _ in range(int(recipe["crops_per_nodule"])):
            key = int(rng.integers(4, size[0] - 4))
            offset = np.array([key, *(size[1:] // 2 + rng.integers(-jitter, jitter + 1, 2))])
            picks.append((case.image, centre - offset, 1, key))
            picks.append((case.twin, centre - offset, 0, key))
    lung_voxels = np.flatnonzero(case.lungs.ravel())
    wanted, attempts = int(recipe["negatives_per_case"]), 0
    while wanted and len(lung_voxels) and attempts < 200:
        attempts += 1
        centre = np.array(np.unravel_index(lung_voxels[int(rng.integers(len(lung_voxels)))], case.lungs.shape))
        key = int(rng.integers(4, size[0] - 4))
        start = centre - np.array([key, *(size[1:] // 2)])
        if padded_crop(case.lungs, start + [key, 0, 0], [1, *size[1:]], False).mean() < float(recipe["min_lung_fraction"]):
            continue
        picks.append((case.twin, start, 0, key))
        wanted -= 1

    volumes, origins, nodules = [], [], []
    for source, start, label, _ in picks:
        volumes.append(padded_crop(source, start, size, np.float16(0.0)))
        origins.append(geometry.index_to_world(start.astype(float)))
        inside = np.full((MAX_NODULES_PER_SAMPLE, 4), np.nan)
        ids = [int(i) for i in np.unique(padded_crop(case.labels, start, size, 0)) if i] if label else []
        for row, identifier in enumerate(ids[:MAX_NODULES_PER_SAMPLE]):
            inside[row] = truth[identifier]
        nodules.append(inside)
    count = len(picks)
    return ClassifierSamples(
        volumes=np.stack(volumes) if count else np.zeros((0, *size), np.float16),
        labels=np.asarray([p[2] for p in picks], np.uint8),
        key_slice=np.asarray([p[3] for p in picks], np.int16),
        origin_xyz=np.asarray(origins, float).reshape(-1, 3),
        nodules=np.asarray(nodules, float).reshape(-1, MAX_NODULES_PER_SAMPLE, 4),
        case_seed=np.full(count, int(case.seed), np.int64),
        spacing_xyz=tuple(SPACING_XYZ),
    )


def _recipe_key(recipe: dict[str, Any]) -> str:
    """What decides a prepared case (not how samples are cut from it)."""
    data = {k: recipe[k] for k in ("max_in_plane", "max_slices", "n_nodules", "nodule_diameter_mm", "spacing_xyz")}
    text = json.dumps({"data": data, "pipeline": preprocessing(3), "version": 2}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _cache_dir(cache_dir) -> Path | None:
    cache_dir = cache_dir or os.environ.get("NAPARI_MEDCAD_DATASET_CACHE")
    return Path(cache_dir) if cache_dir else None


def load_case(seed: int, recipe: dict[str, Any], cache_dir=None) -> PreparedCase:
    """``prepare_case``, kept as ``.npz`` in ``cache_dir`` (or ``$NAPARI_MEDCAD_DATASET_CACHE``) when given."""
    cache = _cache_dir(cache_dir)
    path = cache / f"classifier-case-{_recipe_key(recipe)}-{seed}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            return PreparedCase(**{k: data[k] for k in data.files if k != "seed"}, seed=int(data["seed"]))
    case = prepare_case(seed, recipe)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.partial.npz")
        np.savez(temporary, **case.arrays())
        os.replace(temporary, path)
    return case


def build_samples(seed: int, n_cases: int, recipe: dict[str, Any] | None = None, cache_dir=None,
                  progress: ProgressFn | None = None) -> ClassifierSamples:
    """The samples of cases ``case_seed(seed, 0..n_cases-1)``."""
    from ..phantom.cases import case_seed

    recipe = {**DATA_RECIPE, **(recipe or {})}
    parts = []
    for index in range(int(n_cases)):
        report(progress, index, int(n_cases), f"phantom {index + 1}/{n_cases}")
        parts.append(case_samples(load_case(case_seed(int(seed), index), recipe, cache_dir), recipe))
    report(progress, int(n_cases), int(n_cases), "phantoms ready")
    return ClassifierSamples.concatenate(parts)


def sample_image(samples: ClassifierSamples, index: int, dims: int) -> MedicalImage:
    """What a ``dims``-D model sees of sample ``index``: the key slice or the sub-volume."""
    return samples.slice_image(index) if dims == 2 else samples.volume_image(index)


def heatmap_hit(heatmap: MedicalImage, samples: ClassifierSamples, index: int) -> bool:
    """Whether the heatmap's peak lies inside a true nodule of sample ``index``: within the
    equivalent-sphere radius of its centre (3-D), or of its cross-section on the key slice (2-D)."""
    from ..explain import heatmap_peak_mm

    peak = heatmap_peak_mm(heatmap)
    truth = samples.slice_nodules(index) if heatmap.ndim == 2 else samples.true_nodules(index)
    if not len(truth):
        return False
    if heatmap.ndim == 2:
        distances = np.linalg.norm(truth[:, :2] - peak[None, :], axis=1)
        return bool(np.any(distances <= truth[:, 2]))
    distances = np.linalg.norm(truth[:, :3] - peak[None, :], axis=1)
    return bool(np.any(distances <= 0.5 * truth[:, 3]))


def model_inputs(samples: ClassifierSamples, indices, dims: int) -> np.ndarray:
    """(B, 1, H, W) key slices for 2-D models, (B, 1, D, H, W) sub-volumes for 3-D ones (float32)."""
    indices = np.asarray(indices, int)
    if dims == 2:
        return samples.volumes[indices, samples.key_slice[indices].astype(int)].astype(np.float32)[:, None]
    return samples.volumes[indices].astype(np.float32)[:, None]
