"""DICOM: folders with several series, radiographs, rescale to HU, enhanced multi-frame files.

References: pydicom's raw pixels and header values, and SimpleITK (GDCM) where GDCM reads the
geometry the file states.  Where GDCM ignores or misreads it (enhanced files without functional
groups or with frames out of order), our values are deliberately different; those tests say so.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dicom_factory import enhanced_from_emri, frame_positions, shuffle_names, write_raw_series, write_series
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


# ------------------------------------------------------------------------------------------
# series that are not a plain even stack: gaps, varying rescale, orientation noise


def _positions_along_z(zs, origin=(-10.0, -20.0)):
    return [(origin[0], origin[1], float(z)) for z in zs]


def _ipp(path):
    return np.array([float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient])


def _hu(path):
    ds = pydicom.dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_series_with_missing_slices_is_resampled_so_every_slice_is_in_place(real_data, tmp_path):
    """Slices 5 to 7 of a 5 mm series are missing: read as an even stack with the mean step, every
    slice after the gap would sit up to 10 mm off.  Each acquired slice must be at its own
    ImagePositionPatient with its own values, and the gap filled by interpolation."""
    lung = sitk.ReadImage(str(real_data / "lung1_image.nrrd"))[180:212, 200:232, 0:16]
    files = write_series(lung, tmp_path, rescale_intercept=-1024.0)
    step = lung.GetSpacing()[2]
    for path in files[5:8]:
        path.unlink()
    kept = files[:5] + files[8:]
    image = read_image(tmp_path)
    assert image.array.shape[0] == 16
    np.testing.assert_allclose(image.geometry.spacing_xyz[2], step, atol=1e-6)
    for path in kept:
        index = image.world_to_index(_ipp(path))
        np.testing.assert_allclose(index, np.rint(index), atol=1e-6, err_msg=path.name)
        np.testing.assert_array_equal(image.array[int(round(index[0]))], _hu(path), err_msg=path.name)
    # a filled slice lies between its neighbours, linearly (two thirds of the way from 4 to 8 for slice 7)
    expected = _hu(files[4]) / 4 + _hu(files[8]) * 3 / 4
    np.testing.assert_allclose(image.array[7], expected, atol=0.5)
    note = image.metadata["slice_spacing_note"]
    assert "not evenly spaced" in note and "13 slices" in note and f"{4 * step:.4g} mm" in note
    assert "resampled to 16 slices" in note


def test_series_with_an_unreadable_slice_says_so_and_keeps_positions(pydicom_file, tmp_path):
    stored = (np.arange(6 * 8 * 10).reshape(6, 8, 10) % 50 + 100 * np.arange(6)[:, None, None]).astype(np.int16)
    files = write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored,
                             _positions_along_z(30 + 2.5 * np.arange(6)))
    files[3].write_bytes(files[3].read_bytes()[:200])  # damaged inside the file meta
    image = read_image(tmp_path)
    for k in (0, 1, 2, 4, 5):
        np.testing.assert_allclose(image.world_to_index(_ipp(files[k])), [k, 0, 0], atol=1e-6)
        np.testing.assert_array_equal(image.array[k], stored[k] - 1024)
    assert "not evenly spaced" in image.metadata["slice_spacing_note"]
    assert "1 file or series in the folder could not be read" in image.metadata["unreadable_note"]


def test_evenly_spaced_series_is_not_resampled(pydicom_file, tmp_path):
    """Positions written with two decimals (errors up to 0.005 mm) are an even stack: left as GDCM reads it."""
    stored = np.zeros((5, 8, 10), np.int16) + np.arange(5, dtype=np.int16)[:, None, None]
    zs = np.round(12.3456 + 0.625 * np.arange(5), 2)
    write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored, _positions_along_z(zs))
    image = read_image(tmp_path)
    assert image.array.shape[0] == 5 and "slice_spacing_note" not in image.metadata
    np.testing.assert_array_equal(image.array, stored - 1024)


@pytest.mark.parametrize("rescales,stored_dtype,expected_dtype", [
    ([(1.0, 0.0)] + [(1.0, -1024.0)] * 3, np.uint16, np.int16),  # the first file alone has no intercept
    ([(1.0, 0.0)] + [(0.01, 0.0)] * 3, np.int16, np.float32),  # PET-like: the slope varies
    ([(0.5, -3.0)] * 4, np.int16, np.float32),  # one slope for all, not a whole number
])
def test_series_whose_rescale_varies_per_file(pydicom_file, tmp_path, rescales, stored_dtype, expected_dtype):
    """GDCM takes the pixel type from the first file: -997 came back as 64539, 30.03 as 30."""
    stored = np.stack([np.full((8, 10), 3000 + k) for k in range(4)]).astype(stored_dtype)
    if stored_dtype == np.uint16:
        stored = stored - 2976  # 24, 25, 26, 27: the others become -999...-997 HU
    files = write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored,
                             _positions_along_z(2.0 * np.arange(4)), rescale=rescales)
    image = read_image(tmp_path)
    assert image.array.dtype == expected_dtype
    for k, path in enumerate(files):
        slope, intercept = rescales[k]
        np.testing.assert_allclose(image.array[k], stored[k].astype(float) * slope + intercept, rtol=1e-6)
        np.testing.assert_allclose(image.array[k], _hu(path), rtol=1e-6)


def test_orientation_noise_does_not_split_a_series(pydicom_file, tmp_path):
    """Per-slice orientations differing by 1e-6 (straddling a rounding boundary) are one series."""
    a = 0.1235
    orientations = []
    for k in range(6):
        aa = a + (1e-6 if k % 2 else -1e-6)
        bb = np.sqrt(1 - aa * aa)
        orientations.append((bb, aa, 0.0, -aa, bb, 0.0))
    stored = np.zeros((6, 8, 10), np.int16) + np.arange(6, dtype=np.int16)[:, None, None]
    write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored, _positions_along_z(2.5 * np.arange(6)),
                     orientation=orientations)
    images = read_images(tmp_path)
    assert len(images) == 1 and images[0].array.shape == (6, 8, 10)
    np.testing.assert_array_equal(images[0].array[:, 0, 0], np.arange(6) - 1024)


def test_series_of_another_orientation_is_still_split(pydicom_file, tmp_path):
    stored = np.zeros((4, 8, 10), np.int16)
    tilted = (np.cos(0.1), np.sin(0.1), 0.0, -np.sin(0.1), np.cos(0.1), 0.0)
    write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored, _positions_along_z(2.5 * np.arange(4)),
                     orientation=[(1, 0, 0, 0, 1, 0)] * 2 + [tilted] * 2, series_uid="1.2.3.4.5")
    assert sorted(im.array.shape[0] for im in read_images(tmp_path)) == [2, 2]


def test_folder_of_bare_datasets_without_extension_is_read(pydicom_file, tmp_path):
    """Old exports: no preamble, no file meta, no extension."""
    from napari_medcad.core.io import is_supported_path

    stored = np.zeros((4, 8, 10), np.int16) + np.arange(4, dtype=np.int16)[:, None, None]
    files = write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored,
                             _positions_along_z(2.0 * np.arange(4)), bare=True)
    assert files[0].read_bytes()[128:132] != b"DICM" and files[0].suffix == ""
    image = read_image(tmp_path)
    np.testing.assert_array_equal(image.array, stored - 1024)
    assert is_supported_path(tmp_path) and is_supported_path(files[0])
    assert read_image(files[0]).array.shape == (1, 8, 10)


def test_12_bit_jpeg_series_is_treated_like_a_single_file(pydicom_file, tmp_path):
    """GDCM cannot decode 12-bit JPEG: it prints complaints and returns garbage.  A single file was
    refused while a series of the same files was read; both must have the same outcome."""
    for k in range(3):
        ds = pydicom.dcmread(pydicom_file("JPEG-lossy.dcm"))
        ds.SeriesInstanceUID = "1.2.3.12"
        ds.SOPInstanceUID = f"1.2.3.12.{k}"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 2.0 * k]
        ds.PixelSpacing = [0.5, 0.5]
        ds.save_as(tmp_path / f"s{k}.dcm")
    try:
        single = read_image(tmp_path / "s0.dcm").array[0]
    except MedcadError as err:
        assert "cannot decode" in err.reason
        with pytest.raises(MedcadError, match="cannot decode"):
            read_images(tmp_path)
    else:  # a decoder for 12-bit JPEG is installed: the series is these slices
        np.testing.assert_array_equal(read_image(tmp_path).array[0], single)


# ------------------------------------------------------------------------------------------
# orientation that is not a rotation; enhanced files of one frame


def test_clearly_non_orthogonal_orientation_is_refused(pydicom_file, tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.ImageOrientationPatient = [1, 0, 0, 0.2, 0.98, 0]
    ds.save_as(tmp_path / "sheared.dcm")
    with pytest.raises(MedcadError, match="78.5 degrees apart"):
        read_image(tmp_path / "sheared.dcm")


def test_slightly_non_orthogonal_orientation_is_made_orthonormal(pydicom_file, tmp_path, capfd):
    """Rounded values leave row and column 0.3 degrees off a right angle: read with a rotation close
    to the header's, a note, and a label map written from it has the same direction (ITK neither
    coerces it nor prints its warning)."""
    from napari_medcad.core import write_image

    col = np.array([0.005, 1.0, 0.0]) / np.linalg.norm([0.005, 1.0, 0.0])
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.ImageOrientationPatient = [1, 0, 0, *col]
    ds.save_as(tmp_path / "rounded.dcm")
    image = read_image(tmp_path / "rounded.dcm")
    matrix = image.geometry.direction_matrix
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(matrix[:, 0], [1, 0, 0], atol=3e-3)
    np.testing.assert_allclose(matrix[:, 1], col, atol=3e-3)
    assert "made orthogonal" in image.metadata["orientation_note"]
    written = write_image(image, tmp_path / "labels.nii.gz")
    np.testing.assert_allclose(sitk.ReadImage(str(written)).GetDirection(), image.geometry.direction, atol=1e-6)
    assert capfd.readouterr().err == ""


def test_series_with_slightly_non_orthogonal_orientation(pydicom_file, tmp_path):
    """GDCM turns an orientation 0.3 degrees off into the identity; the series must keep its own."""
    angle = 0.3
    col = np.array([-np.sin(angle) + 0.005, np.cos(angle), 0.0])
    col /= np.linalg.norm(col)
    stored = np.zeros((3, 8, 10), np.int16)
    write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored, _positions_along_z(2.0 * np.arange(3)),
                     orientation=(np.cos(angle), np.sin(angle), 0.0, *col))
    image = read_image(tmp_path)
    matrix = image.geometry.direction_matrix
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(matrix[:, 0], [np.cos(angle), np.sin(angle), 0], atol=3e-3)
    assert "orientation_note" in image.metadata


def test_write_image_keeps_itk_warnings_off_the_terminal(tmp_path, capfd):
    from napari_medcad.core import MedicalImage, write_image
    from napari_medcad.core.image import Geometry

    sheared = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0.2, 0, 0, 0.98, 0, 0, 0, 1))
    write_image(MedicalImage(np.zeros((2, 3, 4), np.uint8), sheared), tmp_path / "out.nii.gz")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_enhanced_file_of_one_frame_keeps_its_plane(pydicom_file, tmp_path):
    path = enhanced_from_emri(pydicom_file("emri_small.dcm"), tmp_path / "one.dcm", frames=1,
                              orientation=(0, 1, 0, 0, 0, -1), origin=(12.0, -7.0, 3.0))
    image = read_image(path)
    assert image.array.shape == (1, 64, 64)
    np.testing.assert_allclose(image.index_to_world([0, 0, 0]), frame_positions(path)[0], atol=1e-6)
    reference = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.geometry.origin_xyz, reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.geometry.direction, reference.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(image.geometry.spacing_xyz[:2], reference.GetSpacing()[:2], atol=1e-6)


def test_one_frame_segmentation_is_placed_as_simpleitk_places_it(pydicom_file):
    path = pydicom_file("liver_1frame.dcm")
    image = read_image(path)
    reference = sitk.ReadImage(path)
    assert image.size_xyz == reference.GetSize()
    np.testing.assert_allclose(image.geometry.origin_xyz, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.geometry.direction, reference.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(image.geometry.spacing_xyz, reference.GetSpacing(), atol=1e-6)


def test_multiframe_with_uneven_frames_is_resampled(pydicom_file, tmp_path):
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12]  # the last frame is 4 steps beyond the one before
    path = enhanced_from_emri(pydicom_file("emri_small.dcm"), tmp_path / "uneven.dcm", order=order)
    image = read_image(path)
    raw = _raw(path)
    assert image.array.shape[0] == 13
    for frame, position in enumerate(frame_positions(path)):
        index = image.world_to_index(position)
        np.testing.assert_allclose(index, np.rint(index), atol=1e-6)
        np.testing.assert_array_equal(image.array[int(round(index[0]))], raw[frame])
    assert "resampled to 13 slices" in image.metadata["slice_spacing_note"]


def test_info_shows_reader_notes(pydicom_file, tmp_path, cli_info):
    stored = np.zeros((4, 8, 10), np.int16)
    write_raw_series(pydicom_file("CT_small.dcm"), tmp_path, stored, _positions_along_z([0.0, 2.0, 4.0, 10.0]))
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 500)
    info = cli_info(tmp_path)
    assert len(info["notes"]) == 2
    assert "not evenly spaced" in info["notes"][0] and "could not be read" in info["notes"][1]
    assert info["series"][0]["notes"] == info["notes"]
    assert len(info["unreadable_in_folder"]) == 1


def test_read_image_of_a_study_folder_says_which_series_it_took(tmp_path):
    """`predict FOLDER` reads one series (the most slices); with others in the folder a reader
    note says which, by number and size only (descriptions are free text)."""
    from napari_medcad.core.io import reader_notes

    thin = sitk.GetImageFromArray(np.full((12, 16, 16), -1000, np.int16))
    thin.SetSpacing((1.0, 1.0, 2.0))
    thick = sitk.GetImageFromArray(np.full((6, 16, 16), -1000, np.int16))
    thick.SetSpacing((1.0, 1.0, 4.0))
    write_series(thin, tmp_path / "study", series_number=3, description="Doe^John thin",
                 names=[f"a{k}.dcm" for k in range(12)])
    write_series(thick, tmp_path / "study", series_number=4, description="Doe^John thick",
                 names=[f"b{k}.dcm" for k in range(6)])
    image = read_image(tmp_path / "study")
    assert image.array.shape[0] == 12
    [note] = [n for n in reader_notes(image) if "image series" in n]
    assert "holds 2 image series; this is series 3 (12 slices)" in note and "not used: series 4 (6 slices)" in note
    assert "Doe" not in note
    write_series(thin, tmp_path / "one", series_number=3)
    assert not [n for n in reader_notes(read_image(tmp_path / "one")) if "image series" in n]
