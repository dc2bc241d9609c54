"""Recreate sample_data/lung1_crop*.nrrd from the pyradiomics chest CT (BSD-3, see sample_data/).

Run from the repository root:  python scripts/make_sample_data.py ../shared/data/real
The crop keeps both lungs at the level of the annotated nodule and the full slice range, and
keeps the original geometry (origin moves with the crop), so world positions are unchanged.
"""

import shutil
import sys
from pathlib import Path

import SimpleITK as sitk

X_RANGE, Y_RANGE = (88, 436), (236, 466)  # voxel index ranges [start, stop) of the crop


def main(source: Path, target: Path = Path("sample_data")) -> None:
    image = sitk.ReadImage(str(source / "lung1_image.nrrd"))
    label = sitk.ReadImage(str(source / "lung1_label.nrrd"))
    crop = (slice(*X_RANGE), slice(*Y_RANGE), slice(None))
    sitk.WriteImage(image[crop], str(target / "lung1_crop.nrrd"), useCompression=True, compressionLevel=9)
    sitk.WriteImage(
        sitk.Cast(label[crop], sitk.sitkUInt8),
        str(target / "lung1_crop_label.nrrd"),
        useCompression=True,
        compressionLevel=9,
    )
    shutil.copy(source / "LICENSE-pyradiomics.txt", target / "LICENSE-pyradiomics.txt")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/real"))
