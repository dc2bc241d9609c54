"""Geometry read by our readers equals SimpleITK's, voxel by voxel.

The reference is SimpleITK itself: ``ReadImage`` for single files and ``ImageSeriesReader``
with ``GetGDCMSeriesFileNames`` for DICOM series.  Files are the real scans in
../shared/data/real and files SimpleITK writes from crops of them (NIfTI, MHA, NRRD and
DICOM series), with identity, flipped-axis and oblique directions.  A NIfTI we write is also
checked against nibabel (RAS: x and y negated).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dicom_factory import write_series
from napari_medcad.core import MedicalImage, image_info, read_image, read_images, write_image

sitk = pytest.importorskip("SimpleITK")

ATOL = 1e-6  # on spacing, origin, direction: the numbers must be SimpleITK's own
WORLD_ATOL_MM = 1e-3


# ------------------------------------------------------------------------------------------
# helpers


def _rotation(axis, angle_deg) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    x, y, z = axis
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def _probe_indices_xyz(size) -> list[tuple[int, ...]]:
    """Corners, the centre and an off-centre voxel, in ITK (x, y, z) order."""
    corners = [tuple((s - 1) * bit for s, bit in zip(size, bits))
               for bits in np.ndindex(*(2,) * len(size))]
    return corners + [tuple(s // 2 for s in size), tuple(min(s - 1, 3 + i) for i, s in enumerate(size))]


def assert_info_equals_sitk(info: dict, reference, *, check_dtype: bool = True) -> None:
    """size, spacing, origin, direction (and dtype) of our JSON equal SimpleITK's."""
    assert info["size_xyz"] == list(reference.GetSize())
    np.testing.assert_allclose(info["spacing_xyz"], reference.GetSpacing(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(info["origin_xyz"], reference.GetOrigin(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(info["direction"], reference.GetDirection(), rtol=0, atol=ATOL)
    assert len(info["direction"]) == reference.GetDimension() ** 2
    if check_dtype:
        assert info["dtype"] == str(sitk.GetArrayViewFromImage(reference).dtype)
    assert isinstance(info["modality"], str) and info["modality"]
    json.dumps(info)  # plain JSON types only


def assert_world_equals_sitk(image: MedicalImage, reference) -> None:
    """Our index_to_world equals TransformIndexToPhysicalPoint on several voxels."""
    for index_xyz in _probe_indices_xyz(reference.GetSize()):
        ours = image.index_to_world(index_xyz[::-1])
        theirs = reference.TransformIndexToPhysicalPoint([int(i) for i in index_xyz])
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=WORLD_ATOL_MM, err_msg=f"voxel {index_xyz}")
        back = image.world_to_index(theirs)
        np.testing.assert_allclose(back, index_xyz[::-1], rtol=0, atol=1e-6)


def assert_same_voxels_in_world(image: MedicalImage, source) -> None:
    """Every voxel of ``image`` sits where the same value sits in ``source`` (a SimpleITK image).

    Proves a reader put each slice at the right place even when it re-sorted them.
    """
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in image.array.shape], indexing="ij"), -1).reshape(-1, 3)
    world = image.index_to_world(zyx)
    source_image = MedicalImage.from_sitk(source)
    source_zyx = source_image.world_to_index(world)
    rounded = np.rint(source_zyx).astype(int)
    np.testing.assert_allclose(source_zyx, rounded, atol=1e-3)
    values = source_image.array[tuple(rounded.T)]
    np.testing.assert_array_equal(image.array[tuple(zyx.T)], values)


# ------------------------------------------------------------------------------------------
# fixtures: crops of the real volumes (small, so the suite stays fast)


@pytest.fixture(scope="module")
def lung_crop(real_data):
    return sitk.ReadImage(str(real_data / "lung1_image.nrrd"))[180:244, 200:264, 10:18]


@pytest.fixture(scope="module")
def brain_crop(real_data):
    image = sitk.ReadImage(str(real_data / "brain1_image.nrrd"))[96:160, 96:160, 8:14]
    assert image.GetDirection()[4] == -1.0  # brain1 has a flipped y axis
    return image


@pytest.fixture(scope="module")
def oblique_crop(lung_crop):
    image = sitk.Image(lung_crop)
    image.SetDirection(tuple(_rotation((1, 2, 3), 25.0).ravel()))
    return image


@pytest.fixture(scope="module")
def crops(lung_crop, brain_crop, oblique_crop):
    return {"lung": lung_crop, "brain_flipped_y": brain_crop, "oblique": oblique_crop}


# ------------------------------------------------------------------------------------------
# the real files


@pytest.mark.parametrize("name", ["lung1_image.nrrd", "lung1_label.nrrd", "brain1_image.nrrd", "brain1_label.nrrd"])
def test_real_files_match_simpleitk(real_data, name):
    path = real_data / name
    reference = sitk.ReadImage(str(path))
    info = image_info(path)
    assert_info_equals_sitk(info, reference)
    image = read_image(path)
    assert_world_equals_sitk(image, reference)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(reference))


@pytest.mark.parametrize("name", ["lung1_image.nrrd", "brain1_image.nrrd"])
def test_real_files_cli_matches_simpleitk(real_data, cli_info, name):
    path = real_data / name
    info = cli_info(path)
    assert_info_equals_sitk(info, sitk.ReadImage(str(path)))
    assert info["path"] == str(path)


def test_brain_direction_is_flipped(real_data):
    info = image_info(real_data / "brain1_image.nrrd")
    np.testing.assert_allclose(info["direction"], [1, 0, 0, 0, -1, 0, 0, 0, 1], atol=ATOL)


# ------------------------------------------------------------------------------------------
# files SimpleITK writes: NIfTI, MHA, NRRD


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".mha", ".nrrd"])
@pytest.mark.parametrize("which", ["lung", "brain_flipped_y", "oblique"])
def test_written_files_match_simpleitk(crops, tmp_path, which, ext):
    path = tmp_path / f"{which}{ext}"
    sitk.WriteImage(crops[which], str(path), useCompression=ext != ".nii")
    reference = sitk.ReadImage(str(path))
    assert_info_equals_sitk(image_info(path), reference)
    image = read_image(path)
    assert_world_equals_sitk(image, reference)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(reference))
    # and the file still describes the crop it was written from (float32 NIfTI: ~1e-4 mm)
    assert_world_equals_sitk_loose(image, crops[which])


def assert_world_equals_sitk_loose(image, reference):
    for index_xyz in _probe_indices_xyz(reference.GetSize()):
        np.testing.assert_allclose(
            image.index_to_world(index_xyz[::-1]), reference.TransformIndexToPhysicalPoint(index_xyz), atol=1e-3
        )


@pytest.mark.parametrize("which,ext", [("oblique", ".nii.gz"), ("brain_flipped_y", ".mha")])
def test_written_files_cli_matches_simpleitk(crops, tmp_path, cli_info, which, ext):
    path = tmp_path / f"{which}{ext}"
    sitk.WriteImage(crops[which], str(path), useCompression=True)
    assert_info_equals_sitk(cli_info(path), sitk.ReadImage(str(path)))


# ------------------------------------------------------------------------------------------
# DICOM series written from the real volumes


def _gdcm_series(folder):
    """SimpleITK's reading of each series in ``folder``: {SeriesInstanceUID: image}."""
    out = {}
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        out[uid] = reader.Execute()
    return out


@pytest.mark.parametrize("which", ["lung", "brain_flipped_y", "oblique"])
def test_dicom_series_matches_simpleitk(crops, tmp_path, which):
    source = crops[which]
    modality = "MR" if which.startswith("brain") else "CT"
    write_series(source, tmp_path / "series", description=f"{which} series", modality=modality,
                 rescale_intercept=-1024.0 if modality == "CT" else None)
    (reference,) = _gdcm_series(tmp_path / "series").values()
    info = image_info(tmp_path / "series")
    assert_info_equals_sitk(info, reference, check_dtype=False)  # we narrow GDCM's int32 to int16
    assert len(info["series"]) == 1 and info["series"][0]["size_xyz"] == info["size_xyz"]
    assert info["modality"] == modality and info["name"] == f"{which} series"
    image = read_image(tmp_path / "series")
    assert_world_equals_sitk(image, reference)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(reference))
    # every voxel lies where the same value lies in the volume the series was written from
    assert_same_voxels_in_world(image, source)


def test_dicom_flipped_series_is_sorted_along_the_normal(brain_crop, tmp_path):
    """brain1's y flip makes the slice normal -z: slices come out top first, as in GDCM."""
    write_series(brain_crop, tmp_path, modality="MR", rescale_intercept=None)
    image = read_image(tmp_path)
    np.testing.assert_allclose(image.geometry.direction, [1, 0, 0, 0, -1, 0, 0, 0, -1], atol=ATOL)
    top = brain_crop.TransformIndexToPhysicalPoint((0, 0, brain_crop.GetDepth() - 1))
    np.testing.assert_allclose(image.geometry.origin_xyz, top, atol=1e-4)


def test_dicom_series_cli_matches_simpleitk(brain_crop, tmp_path, cli_info):
    write_series(brain_crop, tmp_path, modality="MR", rescale_intercept=None, description="T1 post")
    info = cli_info(tmp_path)
    (reference,) = _gdcm_series(tmp_path).values()
    assert_info_equals_sitk(info, reference, check_dtype=False)
    assert [s["name"] for s in info["series"]] == ["T1 post"]
    assert_info_equals_sitk(info["series"][0], reference, check_dtype=False)


# ------------------------------------------------------------------------------------------
# what we write: nibabel must find the same world positions


@pytest.mark.parametrize("which", ["lung", "brain_flipped_y", "oblique"])
@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_written_nifti_world_positions_agree_with_nibabel(crops, tmp_path, which, ext):
    nibabel = pytest.importorskip("nibabel")
    image = MedicalImage.from_sitk(crops[which], modality="CT", name=which)
    path = write_image(image, tmp_path / f"out{ext}")
    loaded = nibabel.load(str(path))
    ras_from_ijk = loaded.affine
    lps_from_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    for index_xyz in _probe_indices_xyz(image.size_xyz):
        lps = (lps_from_ras @ ras_from_ijk @ np.array([*index_xyz, 1.0]))[:3]
        np.testing.assert_allclose(image.index_to_world(index_xyz[::-1]), lps, atol=WORLD_ATOL_MM)
    # nibabel's array is (i, j, k) = (x, y, z): ours transposed
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), image.array.transpose(2, 1, 0))
    again = read_image(path)
    np.testing.assert_array_equal(again.array, image.array)
    np.testing.assert_allclose(again.geometry.affine_xyz, image.geometry.affine_xyz, atol=1e-4)


def test_write_image_is_atomic_and_refuses_unknown_extensions(lung_crop, tmp_path):
    from napari_medcad.core import MedcadError

    image = MedicalImage.from_sitk(lung_crop)
    with pytest.raises(MedcadError, match="cannot write"):
        write_image(image, tmp_path / "out.png")
    with pytest.raises(MedcadError, match="does not exist"):
        write_image(image, tmp_path / "missing" / "out.nrrd")
    write_image(image, tmp_path / "out.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]  # no partial file left


def test_read_images_on_a_file_returns_one_image(real_data):
    images = read_images(real_data / "lung1_label.nrrd")
    assert len(images) == 1 and images[0].name == "lung1_label"


# ------------------------------------------------------------------------------------------
# NIfTI with scl_slope / scl_inter: checked against nibabel, which applies them


@pytest.mark.parametrize("dtype,slope,intercept", [
    (np.uint16, 1.0, -1024.0),  # CT as dcm2niix writes it
    (np.int16, 0.5, 0.0),
    (np.uint8, 2.0, 3.0),
    (np.uint16, 0.001, 0.0),
])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_with_scaling_is_read_with_its_values(tmp_path, dtype, slope, intercept, ext):
    """The size check measured the data in ITK's pixel type *after* scaling (float32), so these
    valid files were refused as truncated."""
    nibabel = pytest.importorskip("nibabel")
    data = (np.arange(20 * 16 * 6) % 200).astype(dtype).reshape(20, 16, 6)
    affine = np.eye(4)
    affine[:3, :3] = _rotation((1, 2, 3), 20.0) @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = (-30.0, 12.0, 40.0)
    source = nibabel.Nifti1Image(data, affine)
    source.header.set_slope_inter(slope, intercept)
    path = tmp_path / f"scaled{ext}"
    nibabel.save(source, str(path))
    loaded = nibabel.load(str(path))
    image = read_image(path)
    np.testing.assert_allclose(image.array.transpose(2, 1, 0), loaded.get_fdata(), rtol=1e-6, atol=1e-6)
    lps_from_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    for index_xyz in _probe_indices_xyz(image.size_xyz):
        lps = (lps_from_ras @ loaded.affine @ np.array([*index_xyz, 1.0]))[:3]
        np.testing.assert_allclose(image.index_to_world(index_xyz[::-1]), lps, atol=1e-4)


@pytest.mark.parametrize("shape", [(20, 16, 6), (20, 16, 6, 1), (20, 16)])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nan_voxels_of_a_nifti_stay_nan(tmp_path, shape, ext):
    """ITK's NIfTI reader turns NaN into 0, which would pass for a value (soft tissue in HU)."""
    nibabel = pytest.importorskip("nibabel")
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    data[(3, 5, 1)[:2] + (0,) * (len(shape) - 2)] = np.nan
    path = tmp_path / f"with_nan{ext}"
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(path))
    image = read_image(path)
    expected = data[..., 0] if len(shape) == 4 else data
    np.testing.assert_array_equal(np.isnan(image.array), np.isnan(expected).T)
    assert np.isnan(image.array).sum() == 1


def test_truncated_nifti_with_scaling_is_still_refused(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    from napari_medcad.core import MedcadError

    source = nibabel.Nifti1Image(np.ones((20, 16, 6), np.uint16), np.eye(4))
    source.header.set_slope_inter(1.0, -1024.0)
    path = tmp_path / "scaled.nii"
    nibabel.save(source, str(path))
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(MedcadError, match="truncated"):
        read_image(path)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("shape", [(20, 16, 6), (20, 16)])
def test_nifti2_reads_as_the_same_image_in_nifti1(tmp_path, ext, shape):
    """SimpleITK cannot open NIfTI-2 ("Unable to determine ImageIO reader"): it is read with
    nibabel, to the same voxels, values and LPS geometry as the same image saved as NIfTI-1."""
    nibabel = pytest.importorskip("nibabel")
    data = ((np.arange(np.prod(shape)) % 1400) - 1000).astype(np.int16).reshape(shape)
    affine = np.eye(4)
    affine[:3, :3] = _rotation((1, 2, 3), 20.0) @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = (-30.0, 12.0, 40.0)
    images = []
    for number, kind in ((1, nibabel.Nifti1Image), (2, nibabel.Nifti2Image)):
        source = kind(data, affine)
        source.set_qform(affine, 1)
        source.set_sform(affine, 1)
        nibabel.save(source, str(tmp_path / f"v{number}{ext}"))
        images.append(read_image(tmp_path / f"v{number}{ext}"))
    one, two = images
    assert two.metadata["nifti_version"] == 2 and two.name == "v2" and two.modality == one.modality
    np.testing.assert_array_equal(two.array, one.array)
    assert two.array.dtype == one.array.dtype
    for field in ("spacing_xyz", "origin_xyz", "direction"):
        np.testing.assert_allclose(getattr(two.geometry, field), getattr(one.geometry, field), atol=1e-5)


def test_nifti2_scaling_nan_and_damage(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    from napari_medcad.core import MedcadError

    scaled = nibabel.Nifti2Image(np.full((8, 6, 4), 1000, np.uint16), np.eye(4))
    scaled.header.set_slope_inter(1.0, -1024.0)
    nibabel.save(scaled, str(tmp_path / "scaled.nii"))
    image = read_image(tmp_path / "scaled.nii")
    assert image.array.dtype == np.float32 and np.all(image.array == -24.0)
    with_nan = np.zeros((8, 6, 4), np.float32)
    with_nan[1, 2, 3] = np.nan
    nibabel.save(nibabel.Nifti2Image(with_nan, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    assert np.isnan(read_image(tmp_path / "nan.nii.gz").array[3, 2, 1])
    nibabel.save(nibabel.Nifti2Image(np.zeros((8, 6, 4, 2), np.int16), np.eye(4)), str(tmp_path / "four.nii"))
    with pytest.raises(MedcadError, match="unsupported dimensionality: 4-D"):
        read_image(tmp_path / "four.nii")
    (tmp_path / "cut.nii").write_bytes((tmp_path / "scaled.nii").read_bytes()[:-100])
    with pytest.raises(MedcadError, match="truncated"):
        read_image(tmp_path / "cut.nii")


# ------------------------------------------------------------------------------------------
# file and folder names that are not valid UTF-8 (Latin-1 names from old exports, zip files)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_names_that_are_not_utf8_are_read_and_written(not_utf8_path, lung_crop, tmp_path, ext):
    """SimpleITK aborted the whole process (std::logic_error) on such a name."""
    path = not_utf8_path(tmp_path, b"\xe9t\xe9" + ext.encode())
    sitk.WriteImage(lung_crop, str(tmp_path / f"plain{ext}"))
    (tmp_path / f"plain{ext}").rename(path)
    image = read_image(path)
    assert_world_equals_sitk(image, lung_crop)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(lung_crop))
    folder = not_utf8_path(tmp_path, b"sortie_\xe9")
    folder.mkdir()
    for target in (folder / f"labels{ext}", folder / path.name):
        write_image(image, target)
        again = read_image(target)
        np.testing.assert_array_equal(again.array, image.array)
        np.testing.assert_allclose(again.geometry.affine_xyz, image.geometry.affine_xyz, atol=1e-4)


def test_detached_header_in_a_folder_that_is_not_utf8(not_utf8_path, lung_crop, tmp_path):
    folder = not_utf8_path(tmp_path, b"donn\xe9es")
    folder.mkdir()
    sitk.WriteImage(lung_crop, str(tmp_path / "volume.mhd"))
    for name in ("volume.mhd", "volume.raw"):
        (tmp_path / name).rename(folder / name)
    np.testing.assert_array_equal(read_image(folder / "volume.mhd").array, sitk.GetArrayViewFromImage(lung_crop))
    # the header's own name cannot be replaced by a link: its data file is named relative to it
    renamed = (folder / "volume.mhd").rename(not_utf8_path(folder, b"\xe9.mhd"))
    from napari_medcad.core import MedcadError

    with pytest.raises(MedcadError, match="not valid UTF-8"):
        read_image(renamed)


def test_dicom_series_in_a_folder_that_is_not_utf8(not_utf8_path, brain_crop, tmp_path):
    folder = not_utf8_path(tmp_path, b"s\xe9rie")
    write_series(brain_crop, tmp_path / "plain", modality="MR", rescale_intercept=None)
    (tmp_path / "plain").rename(folder)
    (reference,) = _gdcm_series(_utf8_copy(folder, tmp_path)).values()
    image = read_image(folder)
    assert_world_equals_sitk(image, reference)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(reference))


def _utf8_copy(folder, tmp_path):
    """A UTF-8-named copy of ``folder`` (SimpleITK itself cannot be given the original's name)."""
    import shutil

    copy = tmp_path / "utf8_copy"
    shutil.copytree(folder, copy)
    return copy


# ------------------------------------------------------------------------------------------
# NIfTI-1 header/data pairs (.hdr/.img) and the Analyze 7.5 headers that look like them


def test_nifti1_pair_reads_as_the_same_image_as_a_single_nifti(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    from napari_medcad.core import MedcadError

    shape = (20, 16, 6)
    data = ((np.arange(np.prod(shape)) % 1400) - 1000).astype(np.int16).reshape(shape)
    affine = np.eye(4)
    affine[:3, :3] = _rotation((1, 2, 3), 20.0) @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = (-30.0, 12.0, 40.0)
    for kind, name in ((nibabel.Nifti1Image, "one.nii"), (nibabel.Nifti1Pair, "pair.img")):
        source = kind(data, affine)
        source.set_qform(affine, 1)
        source.set_sform(affine, 1)
        nibabel.save(source, str(tmp_path / name))
    one, pair = read_image(tmp_path / "one.nii"), read_image(tmp_path / "pair.hdr")
    assert pair.name == "pair" and pair.metadata["format"] == "HDR"
    np.testing.assert_array_equal(pair.array, one.array)
    for field in ("spacing_xyz", "origin_xyz", "direction"):
        np.testing.assert_allclose(getattr(pair.geometry, field), getattr(one.geometry, field), atol=1e-6)
    reference = sitk.ReadImage(str(tmp_path / "pair.hdr"))
    np.testing.assert_allclose(pair.geometry.origin_xyz, reference.GetOrigin(), atol=ATOL)

    with_nan = np.zeros((8, 6, 4), np.float32)
    with_nan[1, 2, 3] = np.nan
    nibabel.save(nibabel.Nifti1Pair(with_nan, np.eye(4)), str(tmp_path / "nan.img"))
    assert np.isnan(read_image(tmp_path / "nan.hdr").array[3, 2, 1])

    (tmp_path / "pair.img").write_bytes((tmp_path / "pair.img").read_bytes()[:-100])
    with pytest.raises(MedcadError, match="truncated"):
        read_image(tmp_path / "pair.hdr")
    (tmp_path / "pair.img").unlink()
    with pytest.raises(MedcadError, match="data file 'pair.img' is missing"):
        read_image(tmp_path / "pair.hdr")


def test_analyze_and_foreign_headers_are_refused(tmp_path):
    """ITK reads an Analyze 7.5 header with the origin at 0 and a guessed direction: not the patient's geometry."""
    nibabel = pytest.importorskip("nibabel")
    from napari_medcad.core import MedcadError

    nibabel.save(nibabel.AnalyzeImage(np.zeros((8, 6, 4), np.int16), np.diag([0.7, 0.8, 2.5, 1.0])),
                 str(tmp_path / "old.img"))
    with pytest.raises(MedcadError, match="Analyze 7.5 header"):
        read_image(tmp_path / "old.hdr")
    nibabel.save(nibabel.Nifti2Pair(np.zeros((8, 6, 4), np.int16), np.eye(4)), str(tmp_path / "two.img"))
    with pytest.raises(MedcadError, match="NIfTI-2 header and data pair"):
        read_image(tmp_path / "two.hdr")
    (tmp_path / "text.hdr").write_text("not a header at all\n")
    with pytest.raises(MedcadError, match="not a NIfTI header"):
        read_image(tmp_path / "text.hdr")
