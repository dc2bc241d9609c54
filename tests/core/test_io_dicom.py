"""DICOM: folders with several series, radiographs, rescale to HU, enhanced multi-frame files.

References: pydicom's raw pixels and header values, and SimpleITK (GDCM) where GDCM reads the
geometry the file states.  Where GDCM ignores or misreads it (enhanced files without functional
groups or with frames out of order), our values are deliberately different; those tests say so.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dicom_factory import enhanced_from_emri, frame_positions, shuffle_names, write_series
from napari_medcad.core import MedcadError, image_info, read_image, read_images

sitk = pytest.importorskip("SimpleITK")
pydicom = pytest.importorskip("pydicom")

ATOL = 1e-6


def _raw(path):
    return pydicom.dcmread(path).pixel_array


def _gdcm_series(folder, uid):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def _assert_geometry(image, reference):
    assert image.size_xyz == reference.GetSize()
    np.testing.assert_allclose(image.geometry.spacing_xyz, reference.GetSpacing(), atol=ATOL)
    np.testing.assert_allclose(image.geometry.origin_xyz, reference.GetOrigin(), atol=ATOL)
    np.testing.assert_allclose(image.geometry.direction, reference.GetDirection(), atol=ATOL)


# ------------------------------------------------------------------------------------------
# a folder holding two series, shuffled, with a report and junk beside them


@pytest.fixture(scope="module")
def two_series_folder(real_data, tmp_path_factory, pydicom_file):
    folder = tmp_path_factory.mktemp("two_series")
    lung = sitk.ReadImage(str(real_data / "lung1_image.nrrd"))[190:238, 210:258, 12:21]  # 9 slices
    brain = sitk.ReadImage(str(real_data / "brain1_image.nrrd"))[100:148, 100:148, 9:14]  # 5 slices
    lung_files = write_series(lung, folder / "a", series_number=2, description="Chest CT 5 mm",
                              modality="CT", rescale_intercept=-1024.0)
    brain_files = write_series(brain, folder / "b", series_number=7, description="T1 post contrast",
                               modality="MR", rescale_intercept=None)
    # all in one folder, renamed so that neither names nor listing order follow slice position
    for path in shuffle_names(lung_files, seed=1, prefix="IM") + shuffle_names(brain_files, seed=2, prefix="IM"):
        path.rename(folder / path.name)
    (folder / "a").rmdir()
    (folder / "b").rmdir()
    shutil.copy(pydicom_file("rtstruct.dcm"), folder / "structures.dcm")  # no pixel data
    shutil.copy(pydicom_file("test-SR.dcm"), folder / "report.dcm")  # a structured report
    (folder / "notes.txt").write_text("reader notes, not an image\n")
    (folder / "junk.dcm").write_bytes(np.random.default_rng(3).bytes(4000))
    return folder, lung, brain


def test_folder_with_two_series_gives_one_image_per_series(two_series_folder):
    folder, lung, brain = two_series_folder
    images = read_images(folder)
    assert [im.name for im in images] == ["Chest CT 5 mm", "T1 post contrast"]  # largest first
    assert [im.modality for im in images] == ["CT", "MR"]
    assert [im.array.shape[0] for im in images] == [9, 5]
    # values: HU come back exactly (stored + intercept), MR values untouched
    np.testing.assert_array_equal(images[0].array, sitk.GetArrayViewFromImage(lung))
    # brain1's flipped y makes GDCM (and us) stack its slices top first
    np.testing.assert_array_equal(images[1].array, sitk.GetArrayViewFromImage(brain)[::-1])


def test_folder_series_geometry_equals_simpleitk(two_series_folder):
    folder, _, _ = two_series_folder
    by_name = {im.name: im for im in read_images(folder)}
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    assert len(uids) == 2
    for uid in uids:
        reference = _gdcm_series(folder, uid)
        description = reference_description(folder, uid)
        image = by_name[description]
        _assert_geometry(image, reference)
        np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(reference))


def reference_description(folder, uid):
    first = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).SeriesDescription)


def test_folder_info_lists_every_series(two_series_folder, cli_info):
    folder, lung, _ = two_series_folder
    info = cli_info(folder)
    assert [s["name"] for s in info["series"]] == ["Chest CT 5 mm", "T1 post contrast"]
    assert info["name"] == "Chest CT 5 mm"
    assert info["series"][0]["size_xyz"] == list(lung.GetSize())
    assert info["series"][1]["size_xyz"] == [48, 48, 5]
    np.testing.assert_allclose(info["spacing_xyz"], lung.GetSpacing(), atol=ATOL)
    np.testing.assert_allclose(info["origin_xyz"], lung.GetOrigin(), atol=1e-4)


def test_series_with_the_same_description_get_distinct_names(real_data, tmp_path):
    lung = sitk.ReadImage(str(real_data / "lung1_image.nrrd"))[200:216, 200:216, 0:3]
    write_series(lung, tmp_path, series_number=1, description="Axial", names=[f"a{k}.dcm" for k in range(3)])
    write_series(lung[:, :, 0:2], tmp_path, series_number=2, description="Axial",
                 names=[f"b{k}.dcm" for k in range(2)], study_uid="1.2.3.9")
    assert [im.name for im in read_images(tmp_path)] == ["Axial", "Axial (2)"]


# ------------------------------------------------------------------------------------------
# rescale slope / intercept: CT in Hounsfield units


def test_ct_small_is_in_hounsfield_units(pydicom_file):
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    image = read_image(path)
    assert image.modality == "CT"
    expected = ds.pixel_array.astype(np.int64) * 1 - 1024
    np.testing.assert_array_equal(image.array[0], expected)
    assert image.array.min() < -800  # air around the patient
    _assert_geometry(image, sitk.ReadImage(path))  # a placed slice: 3-D, one slice, as ITK
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(sitk.ReadImage(path)))


def test_synthetic_series_with_intercept_minus_1024(real_data, tmp_path):
    hu = sitk.ReadImage(str(real_data / "lung1_image.nrrd"))[150:182, 250:282, 20:24]
    files = write_series(hu, tmp_path, rescale_intercept=-1024.0, rescale_slope=1.0)
    image = read_image(tmp_path)
    np.testing.assert_array_equal(image.array, sitk.GetArrayViewFromImage(hu))
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        np.testing.assert_array_equal(image.array[k], ds.pixel_array.astype(np.int64) - 1024)
    assert image.array.dtype == np.int16


# ------------------------------------------------------------------------------------------
# a single 2-D radiograph


def test_radiograph_monochrome1_is_inverted(pydicom_file):
    path = pydicom_file("RG1_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "CR" and ds.PhotometricInterpretation == "MONOCHROME1"
    image = read_image(path)
    assert image.ndim == 2 and image.array.shape == (1955, 1841) and not image.rgb
    assert image.modality == "CR"
    raw = ds.pixel_array.astype(np.int64)
    np.testing.assert_array_equal(image.array.astype(np.int64), (2 ** int(ds.BitsStored) - 1) - raw)
    # GDCM inverts MONOCHROME1 the same way
    gdcm = sitk.GetArrayFromImage(sitk.ReadImage(path))[0]
    np.testing.assert_array_equal(image.array, gdcm)


def test_radiograph_jpeg2000_lossless_equals_its_uncompressed_twin(pydicom_file):
    """RG1_J2KR decodes to exactly RG1_UNCR.  (RG1_UNCI is the decompressed *lossy* RG1_J2KI:
    it shares J2KI's SOP Instance UID, so it differs from J2KR by a few grey levels.)"""
    j2kr = read_image(pydicom_file("RG1_J2KR.dcm"))
    uncr = read_image(pydicom_file("RG1_UNCR.dcm"))
    np.testing.assert_array_equal(j2kr.array, uncr.array)
    assert j2kr.geometry == uncr.geometry and j2kr.modality == "CR"
    unci = read_image(pydicom_file("RG1_UNCI.dcm"))
    assert unci.array.shape == j2kr.array.shape
    assert np.corrcoef(unci.array.ravel(), j2kr.array.ravel())[0, 1] > 0.999


def test_radiograph_cli(pydicom_file, cli_info):
    info = cli_info(pydicom_file("RG1_UNCI.dcm"))
    assert info["size_xyz"] == [1841, 1955]
    assert len(info["direction"]) == 4 and info["modality"] == "CR"


# ------------------------------------------------------------------------------------------
# enhanced multi-frame files: geometry from the functional groups


def test_enhanced_ct_frames_sit_at_their_plane_positions(pydicom_file):
    path = pydicom_file("eCT_Supplemental.dcm")
    image = read_image(path)
    positions = frame_positions(path)
    assert image.array.shape[0] == len(positions) == 2
    for k, position in enumerate(positions):
        np.testing.assert_allclose(image.index_to_world([k, 0, 0]), position, atol=1e-4)
    # GDCM reads these functional groups too, and agrees number for number
    _assert_geometry(image, sitk.ReadImage(path))
    # rescale from the shared Pixel Value Transformation group (intercept -1024)
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(image.array, ds.pixel_array.astype(np.int64) - 1024)
    assert image.modality == "CT"


@pytest.mark.parametrize(
    "case,order,orientation",
    [
        ("ascending", list(range(10)), (1, 0, 0, 0, 1, 0)),
        ("descending", list(range(9, -1, -1)), (1, 0, 0, 0, 1, 0)),
        ("oblique", list(range(10)), (np.cos(0.3), np.sin(0.3), 0, -np.sin(0.3) * 0.8, np.cos(0.3) * 0.8, 0.6)),
        ("sagittal descending", list(range(9, -1, -1)), (0, 1, 0, 0, 0, -1)),
    ],
)
def test_enhanced_mr_geometry_from_functional_groups(pydicom_file, tmp_path, case, order, orientation):
    path = enhanced_from_emri(pydicom_file("emri_small.dcm"), tmp_path / "enhanced.dcm",
                              orientation=orientation, order=order)
    image = read_image(path)
    positions = frame_positions(path)
    # frames stay in file order: voxel (k, 0, 0) is frame k's ImagePositionPatient
    for k, position in enumerate(positions):
        np.testing.assert_allclose(image.index_to_world([k, 0, 0]), position, atol=1e-4)
    np.testing.assert_allclose(image.geometry.spacing_xyz, (0.8, 0.9, 2.5), atol=1e-6)
    np.testing.assert_array_equal(image.array, _raw(path))
    # GDCM reads these groups as well: same numbers
    _assert_geometry(image, sitk.ReadImage(str(path)))


def test_enhanced_mr_with_shuffled_frames_is_sorted(pydicom_file, tmp_path):
    """GDCM keeps file order and gets spacing 1 and wrong positions here: we deliberately differ."""
    order = [3, 1, 0, 2, 4, 5, 9, 8, 7, 6]
    path = enhanced_from_emri(pydicom_file("emri_small.dcm"), tmp_path / "shuffled.dcm", order=order)
    image = read_image(path)
    positions = frame_positions(path)
    frame_of_slice = image.metadata["frame_order"]
    assert sorted(frame_of_slice) == list(range(10))
    raw = _raw(path)
    for k, frame in enumerate(frame_of_slice):
        np.testing.assert_allclose(image.index_to_world([k, 0, 0]), positions[frame], atol=1e-4)
        np.testing.assert_array_equal(image.array[k], raw[frame])
    np.testing.assert_allclose(image.geometry.spacing_xyz[2], 2.5, atol=1e-6)
    assert np.linalg.det(image.geometry.direction_matrix) > 0


def test_enhanced_mr_without_functional_groups(pydicom_file):
    """emri_small.dcm carries no plane position or orientation at all.  GDCM reports spacing 1
    between frames; we use the file's SpacingBetweenSlices (1.2 mm), deliberately, and say that
    the origin and direction are assumed."""
    path = pydicom_file("emri_small.dcm")
    image = read_image(path)
    assert image.array.shape == (10, 64, 64) and image.modality == "MR"
    np.testing.assert_array_equal(image.array, _raw(path))
    assert image.geometry.spacing_xyz == (1.0, 1.0, 1.2)
    assert image.geometry.origin_xyz == (0.0, 0.0, 0.0)
    assert "geometry_note" in image.metadata
    reference = sitk.ReadImage(path)
    assert reference.GetSpacing()[2] == 1.0  # GDCM ignores SpacingBetweenSlices here


def test_enhanced_mr_compressed_variants_decode_the_same(pydicom_file):
    plain = read_image(pydicom_file("emri_small.dcm")).array
    for name in ("emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm",
                 "emri_small_big_endian.dcm"):
        np.testing.assert_array_equal(read_image(pydicom_file(name)).array, plain, err_msg=name)


def test_multiframe_with_repeated_positions_is_refused(pydicom_file, tmp_path):
    path = enhanced_from_emri(pydicom_file("emri_small.dcm"), tmp_path / "cine.dcm",
                              order=[0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    with pytest.raises(MedcadError, match="share a slice position") as info:
        read_image(path)
    assert info.value.path == str(path)


# ------------------------------------------------------------------------------------------
# other single files


def test_big_endian_file_gives_native_numbers(pydicom_file):
    little = read_image(pydicom_file("MR_small.dcm"))
    big = read_image(pydicom_file("MR_small_bigendian.dcm"))
    assert big.array.dtype.isnative
    np.testing.assert_array_equal(big.array, little.array)
    assert big.geometry == little.geometry


def test_file_without_preamble_is_still_read(pydicom_file):
    image = read_image(pydicom_file("OT-PAL-8-face.dcm"))  # no 'DICM' marker, palette colour
    assert image.rgb and image.array.shape == (480, 640, 3)


def test_rt_dose_is_scaled_to_dose(pydicom_file):
    path = pydicom_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    image = read_image(path)
    np.testing.assert_allclose(image.array, ds.pixel_array * float(ds.DoseGridScaling), rtol=1e-6)
    for k, offset in enumerate(ds.GridFrameOffsetVector):
        expected = np.asarray([float(v) for v in ds.ImagePositionPatient]) + [0, 0, float(offset)]
        np.testing.assert_allclose(image.index_to_world([k, 0, 0]), expected, atol=1e-4)


def test_metadata_holds_no_patient_identity(pydicom_file):
    image = read_image(pydicom_file("CT_small.dcm"))
    text = repr(image.metadata).lower()
    for field in ("patientname", "patient_name", "patientid", "birth", "accession"):
        assert field not in text
    info = image_info(pydicom_file("CT_small.dcm"))
    assert "CompressedSamples" not in repr(info)
