"""Bad input never gives a traceback, a hang, or a wall of text.

Every case runs the real command line, ``python -m napari_medcad.cli info PATH``, in a
subprocess with a timeout, and expects exit status 2 and exactly one line on stderr that names
the path and says why.  The corpus is built in tmp_path from tiny synthetic images and
pydicom's own test files, so it needs neither the network nor the real scans.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from dicom_factory import corrupt_copy, enhanced_from_emri, write_series

sitk = pytest.importorskip("SimpleITK")
pydicom = pytest.importorskip("pydicom")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
QUICK_S = 15.0  # "refused quickly": Python start-up included, far below any allocation of terabytes


def _volume(size_zyx=(6, 24, 24), dtype=np.int16):
    array = (np.arange(np.prod(size_zyx)) % 2000 - 1000).astype(dtype).reshape(size_zyx)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.7, 2.5))
    image.SetOrigin((-10.0, 20.0, -30.0))
    return image


def _write(image, path: Path, compress=False) -> Path:
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def _cut(path: Path, fraction: float, target: Path) -> Path:
    data = path.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    if target != path and path.exists():
        path.unlink()
    return target


def _text(path: Path) -> Path:
    path.write_text("Patient arrived at 10:30. This is a note, not an image.\n" * 10)
    return path


# --- builders: each makes one bad input inside `d` and returns the path to give the CLI ---------


def text_nii(d, dcm):
    return _text(d / "note.nii")


def text_nii_gz(d, dcm):
    return _text(d / "note.nii.gz")


def text_nrrd(d, dcm):
    return _text(d / "note.nrrd")


def text_mha(d, dcm):
    return _text(d / "note.mha")


def text_dcm(d, dcm):
    return _text(d / "note.dcm")


def text_png(d, dcm):
    return _text(d / "note.png")


def text_tif(d, dcm):
    return _text(d / "note.tif")


def random_bytes_nii(d, dcm):
    path = d / "noise.nii"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    return path


def random_bytes_no_extension(d, dcm):
    path = d / "noise"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    return path


def gz_that_is_not_gzip(d, dcm):
    path = d / "noise.nii.gz"
    path.write_bytes(b"\x1f\x8c" + np.random.default_rng(2).bytes(3000))
    return path


def gz_with_a_broken_deflate_stream(d, dcm):
    path = d / "broken.nii.gz"  # a gzip header, then data zlib refuses (not a clean end of file)
    path.write_bytes(b"\x1f\x8b\x08\x00 this is not a complete gzip stream")
    return path


def truncated_nii_gz(d, dcm):
    return _cut(_write(_volume(), d / "full.nii.gz", compress=True), 0.5, d / "cut.nii.gz")


def truncated_nii(d, dcm):
    return _cut(_write(_volume(), d / "full.nii"), 0.6, d / "cut.nii")


def truncated_raw_nrrd(d, dcm):
    return _cut(_write(_volume(), d / "full.nrrd"), 0.8, d / "cut.nrrd")


def truncated_gzip_nrrd(d, dcm):
    return _cut(_write(_volume(), d / "full.nrrd", compress=True), 0.5, d / "cut.nrrd")


def truncated_mha(d, dcm):
    return _cut(_write(_volume(), d / "full.mha"), 0.7, d / "cut.mha")


def nhdr_with_missing_data_file(d, dcm):
    header = _write(_volume(), d / "volume.nhdr")
    for raw in d.glob("volume.raw*"):
        raw.unlink()
    return header


def mhd_with_missing_raw_file(d, dcm):
    header = _write(_volume(), d / "volume.mhd")
    (d / "volume.raw").unlink()
    return header


def zero_byte_file(d, dcm):
    path = d / "empty.nrrd"
    path.touch()
    return path


def empty_folder(d, dcm):
    (d / "empty").mkdir()
    return d / "empty"


def folder_of_junk(d, dcm):
    folder = d / "junk"
    folder.mkdir()
    _text(folder / "readme.txt")
    (folder / "table.csv").write_text("id,value\n1,2\n")
    (folder / "blob.bin").write_bytes(np.random.default_rng(4).bytes(2000))
    (folder / "image.dcm").write_bytes(np.random.default_rng(5).bytes(2000))
    return folder


def folder_with_only_a_report(d, dcm):
    folder = d / "report_only"
    folder.mkdir()
    shutil.copy(dcm("test-SR.dcm"), folder / "sr.dcm")
    shutil.copy(dcm("rtstruct.dcm"), folder / "rtstruct.dcm")
    return folder


def folder_with_only_link_loops(d, dcm):
    folder = d / "loops"
    folder.mkdir()
    os.symlink("..", folder / "up")
    os.symlink(folder, folder / "self")
    return folder


def dicom_rtstruct(d, dcm):
    return Path(shutil.copy(dcm("rtstruct.dcm"), d / "rtstruct.dcm"))


def dicom_structured_report(d, dcm):
    return Path(shutil.copy(dcm("test-SR.dcm"), d / "report.dcm"))


def dicom_truncated_pixel_data(d, dcm):
    source = Path(dcm("CT_small.dcm"))
    return corrupt_copy(source, d / "ct_cut.dcm", keep_bytes=source.stat().st_size - 5000)


def dicom_cut_before_pixel_data(d, dcm):
    return corrupt_copy(dcm("CT_small.dcm"), d / "ct_head_only.dcm", keep_bytes=700)


def dicom_mr_truncated(d, dcm):
    return Path(shutil.copy(dcm("MR_truncated.dcm"), d / "mr_truncated.dcm"))


def dicom_corrupt_header(d, dcm):
    return corrupt_copy(dcm("CT_small.dcm"), d / "ct_corrupt.dcm", overwrite=(300, b"\xff" * 40))


def dicom_malformed_value(d, dcm):
    return Path(shutil.copy(dcm("badVR.dcm"), d / "bad_value.dcm"))  # NumberOfFrames '1A'


def dicom_undecodable_compression(d, dcm):
    # 12-bit JPEG Extended: no pydicom plugin here, and GDCM prints errors and returns garbage
    pytest.importorskip("pydicom")
    try:
        import pylibjpeg  # noqa: F401

        pytest.skip("pylibjpeg is installed: this file is decodable")
    except ImportError:
        pass
    return Path(shutil.copy(dcm("JPEG-lossy.dcm"), d / "jpeg12.dcm"))


def dicom_12_bit_jpeg_series(d, dcm):
    """A series of the file above: GDCM's complaints were ignored for a series and garbage read."""
    dicom_undecodable_compression(d, dcm)
    folder = d / "series"
    folder.mkdir()
    for k in range(3):
        ds = pydicom.dcmread(dcm("JPEG-lossy.dcm"))
        ds.SOPInstanceUID = f"1.2.3.12.{k}"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 2.0 * k]
        ds.save_as(folder / f"s{k}.dcm")
    return folder


def dicom_sheared_orientation(d, dcm):
    ds = pydicom.dcmread(dcm("CT_small.dcm"))
    ds.ImageOrientationPatient = [1, 0, 0, 0.2, 0.98, 0]  # row and column 78.5 degrees apart
    ds.save_as(d / "sheared.dcm")
    return d / "sheared.dcm"


def dicom_absurd_size(d, dcm):
    ds = pydicom.dcmread(dcm("CT_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100000
    ds.save_as(d / "absurd.dcm")
    return d / "absurd.dcm"


def dicom_multiframe_repeated_positions(d, dcm):
    return enhanced_from_emri(dcm("emri_small.dcm"), d / "cine.dcm", order=[0, 1, 2, 3, 4, 0, 1, 2, 3, 4])


def dicom_series_with_repeated_slice(d, dcm):
    folder = d / "series"
    files = write_series(_volume((4, 16, 16)), folder, description="dup")
    shutil.copy(files[1], folder / "copy_of_slice_1.dcm")
    return folder


def dicom_series_with_truncated_slice(d, dcm):
    folder = d / "series"
    files = write_series(_volume((4, 16, 16)), folder, description="cut")
    corrupt_copy(files[2], files[2], keep_bytes=files[2].stat().st_size - 200)
    return folder


def nifti_4d_time_series(d, dcm):
    frames = [_volume((3, 8, 8)) for _ in range(4)]
    return _write(sitk.JoinSeries(frames), d / "fmri.nii.gz", compress=True)


def nifti_vector_voxels(d, dcm):
    vector = sitk.Compose([_volume((3, 8, 8))] * 3)
    return _write(vector, d / "field.nii.gz", compress=True)


def nrrd_1d(d, dcm):
    path = d / "line.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 1\nsizes: 10\nencoding: raw\nendian: little\n\n" + bytes(20))
    return path


def nrrd_absurd_size(d, dcm):
    path = d / "huge.nrrd"
    path.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 100000 100000 100000\n"
                    "encoding: raw\nendian: little\n\n" + "x" * 100)
    return path


def mha_absurd_size(d, dcm):
    path = d / "huge.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
                    "ElementType = MET_SHORT\nElementDataFile = LOCAL\n" + "x" * 100)
    return path


def nrrd_gigabyte_claim_tiny_file(d, dcm):
    # fits in memory, so only the size check stops ITK from allocating 1 GB for nothing
    path = d / "claims_1GB.nrrd"
    path.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 1000 1000 500\n"
                    "encoding: raw\nendian: little\n\n" + "x" * 100)
    return path


def nifti_with_a_zero_size_dimension(d, dcm):
    # ITK reads dim[2] = 0 as 1 and fills the image with whatever follows the header
    full = _write(_volume((4, 8, 8)), d / "small.nii")
    data = bytearray(full.read_bytes())
    data[44:46] = np.array([0], dtype="<i2").tobytes()  # dim[2]
    target = d / "no_rows.nii"
    target.write_bytes(bytes(data))
    full.unlink()
    return target


def nii_gz_gigabyte_claim_tiny_file(d, dcm):
    full = _write(_volume((4, 8, 8)), d / "small.nii")
    data = bytearray(full.read_bytes())
    data[42:48] = np.array([1000, 1000, 500], dtype="<i2").tobytes()  # dim[1..3]
    target = d / "claims_1GB.nii.gz"
    target.write_bytes(gzip.compress(bytes(data)))
    full.unlink()
    return target


def fifo(d, dcm):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = d / "pipe.nii"
    os.mkfifo(path)
    return path


def unreadable_file(d, dcm):
    path = _write(_volume(), d / "locked.nii")
    path.chmod(0)
    return path


def file_in_unlistable_folder(d, dcm):
    folder = d / "locked"
    folder.mkdir()
    path = _write(_volume(), folder / "scan.nii")
    folder.chmod(0o600)  # readable names, but no execute: the file cannot be reached
    return path


def nonexistent_path(d, dcm):
    return d / "no_such_scan.nii.gz"


def dangling_symlink(d, dcm):
    os.symlink(d / "gone.nii", d / "link.nii")
    return d / "link.nii"


def symlink_loop(d, dcm):
    os.symlink(d / "b.nii", d / "a.nii")
    os.symlink(d / "a.nii", d / "b.nii")
    return d / "a.nii"


def truncated_png(d, dcm):
    picture = sitk.Cast(sitk.RescaleIntensity(_volume((1, 64, 64))[:, :, 0]), sitk.sitkUInt8)
    return _cut(_write(picture, d / "full.png"), 0.5, d / "cut.png")


def truncated_jpeg(d, dcm):
    picture = sitk.Cast(sitk.RescaleIntensity(_volume((1, 64, 64))[:, :, 0]), sitk.sitkUInt8)
    return _cut(_write(picture, d / "full.jpg"), 0.5, d / "cut.jpg")


def tiff_5d(d, dcm):
    import tifffile

    path = d / "hyperstack.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 2, 8, 8), np.uint8), metadata={"axes": "TZCYX"})
    return path


def truncated_tiff(d, dcm):
    import tifffile

    tifffile.imwrite(d / "full.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    return _cut(d / "full.tif", 0.5, d / "cut.tif")


def unknown_extension(d, dcm):
    path = d / "scan.xyz"
    path.write_bytes(b"\x00" * 100)
    return path


def analyze_header(d, dcm):
    import nibabel

    nibabel.save(nibabel.AnalyzeImage(np.zeros((8, 6, 4), np.int16), np.eye(4)), str(d / "old.img"))
    return d / "old.hdr"


def nifti_pair_without_data(d, dcm):
    import nibabel

    nibabel.save(nibabel.Nifti1Pair(np.zeros((8, 6, 4), np.int16), np.eye(4)), str(d / "pair.img"))
    (d / "pair.img").unlink()
    return d / "pair.hdr"


#: case -> (builder, words one of which the reason must contain)
CASES = {
    "text file .nii": (text_nii, ["not an image"]),
    "text file .nii.gz": (text_nii_gz, ["not an image"]),
    "text file .nrrd": (text_nrrd, ["not an image"]),
    "text file .mha": (text_mha, ["not an image"]),
    "text file .dcm": (text_dcm, ["not a dicom file"]),
    "text file .png": (text_png, ["not an image"]),
    "text file .tif": (text_tif, ["not a readable tiff"]),
    "random bytes .nii": (random_bytes_nii, ["not an image"]),
    "random bytes, no extension": (random_bytes_no_extension, ["unsupported file type"]),
    ".nii.gz that is not gzip": (gz_that_is_not_gzip, ["not an image"]),
    ".nii.gz with a broken deflate stream": (gz_with_a_broken_deflate_stream, ["not an image", "corrupt"]),
    "truncated .nii.gz": (truncated_nii_gz, ["truncated"]),
    "truncated .nii": (truncated_nii, ["truncated"]),
    "truncated raw .nrrd": (truncated_raw_nrrd, ["truncated"]),
    "truncated gzip .nrrd": (truncated_gzip_nrrd, ["truncated"]),
    "truncated .mha": (truncated_mha, ["truncated"]),
    ".nhdr with missing data file": (nhdr_with_missing_data_file, ["missing"]),
    ".mhd with missing raw file": (mhd_with_missing_raw_file, ["missing"]),
    "zero-byte file": (zero_byte_file, ["empty"]),
    "empty folder": (empty_folder, ["empty"]),
    "folder of junk": (folder_of_junk, ["no dicom"]),
    "folder with only non-image DICOM": (folder_with_only_a_report, ["no dicom image"]),
    "folder with only symlink loops": (folder_with_only_link_loops, ["no files"]),
    "DICOM RT structure set (no pixels)": (dicom_rtstruct, ["holds no image"]),
    "DICOM structured report": (dicom_structured_report, ["holds no image"]),
    "DICOM truncated pixel data": (dicom_truncated_pixel_data, ["truncated"]),
    "DICOM cut before pixel data": (dicom_cut_before_pixel_data, ["truncated", "missing"]),
    "DICOM MR_truncated.dcm": (dicom_mr_truncated, ["truncated"]),
    "DICOM corrupt header": (dicom_corrupt_header, ["corrupt"]),
    "DICOM malformed header value": (dicom_malformed_value, ["corrupt dicom header"]),
    "DICOM undecodable compression": (dicom_undecodable_compression, ["cannot decode"]),
    "DICOM absurd size": (dicom_absurd_size, ["memory"]),
    "DICOM series of 12-bit JPEG": (dicom_12_bit_jpeg_series, ["cannot decode"]),
    "DICOM orientation far from orthogonal": (dicom_sheared_orientation, ["not 90"]),
    "NIfTI with a dimension of size 0": (nifti_with_a_zero_size_dimension, ["no voxels"]),
    "DICOM multi-frame with repeated positions": (dicom_multiframe_repeated_positions, ["share a slice position"]),
    "DICOM series with a repeated slice": (dicom_series_with_repeated_slice, ["share a slice position"]),
    "DICOM series with a truncated slice": (dicom_series_with_truncated_slice, ["truncated", "corrupt"]),
    "4-D NIfTI time series": (nifti_4d_time_series, ["dimensionality"]),
    "NIfTI with vector voxels": (nifti_vector_voxels, ["values per voxel"]),
    "1-D image": (nrrd_1d, ["dimensionality"]),
    "NRRD header claiming 100000^3": (nrrd_absurd_size, ["memory"]),
    "MHA header claiming 100000^3": (mha_absurd_size, ["memory"]),
    "NRRD claiming 1 GB in 100 bytes": (nrrd_gigabyte_claim_tiny_file, ["truncated"]),
    "NIfTI.gz claiming 1 GB in a few kB": (nii_gz_gigabyte_claim_tiny_file, ["truncated"]),
    "FIFO": (fifo, ["not a regular file"]),
    "unreadable file (chmod 000)": (unreadable_file, ["permission"]),
    "file in a folder without execute permission": (file_in_unlistable_folder, ["permission"]),
    "nonexistent path": (nonexistent_path, ["no such file"]),
    "dangling symlink": (dangling_symlink, ["no such file"]),
    "symlink loop": (symlink_loop, ["symbolic links", "cannot access"]),
    "truncated PNG": (truncated_png, ["truncated"]),
    "truncated JPEG": (truncated_jpeg, ["truncated"]),
    "5-D TIFF": (tiff_5d, ["unsupported tiff layout"]),
    "truncated TIFF": (truncated_tiff, ["tiff"]),
    "unknown extension": (unknown_extension, ["unsupported file type"]),
    "Analyze 7.5 header (no orientation)": (analyze_header, ["analyze 7.5"]),
    "NIfTI pair without its .img": (nifti_pair_without_data, ["missing"]),
}
QUICK_CASES = {"NRRD header claiming 100000^3", "MHA header claiming 100000^3", "DICOM absurd size",
               "NRRD claiming 1 GB in 100 bytes", "NIfTI.gz claiming 1 GB in a few kB", "FIFO"}
NEEDS_NON_ROOT = {"unreadable file (chmod 000)", "file in a folder without execute permission"}


def _params() -> list:
    root_skip = [pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions")]
    return [pytest.param(name, id=name.replace(" ", "_"), marks=root_skip if name in NEEDS_NON_ROOT else [])
            for name in CASES]


@pytest.fixture
def restore_permissions(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:  # let pytest clean up what we locked
        try:
            if not path.is_symlink():
                path.chmod(0o700)
        except OSError:
            pass


@pytest.mark.parametrize("case", _params())
def test_bad_input_gives_one_line_and_exit_2(case, tmp_path, run_cli, pydicom_file, restore_permissions):
    builder, expected = CASES[case]
    path = builder(tmp_path, pydicom_file)
    started = time.monotonic()
    result = run_cli("info", str(path))
    elapsed = time.monotonic() - started
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    assert result.returncode == 2, f"rc={result.returncode}\nstdout={result.stdout[:500]}\nstderr={stderr}"
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert str(path) in lines[0] or str(path.parent) in lines[0], lines[0]
    assert any(word in lines[0].lower() for word in expected), lines[0]
    assert result.stdout == ""
    if case in QUICK_CASES:
        assert elapsed < QUICK_S, f"took {elapsed:.1f} s"


def test_corpus_is_large_enough():
    assert len(CASES) >= 20


def test_itk_reason_is_one_line_without_source_paths():
    from napari_medcad.core.io.itk_formats import itk_reason

    text = (
        "Exception thrown in SimpleITK ImageFileReader_Execute: /tmp/SimpleITK-build/ITK/Modules/IO/NRRD/"
        "src/itkNrrdImageIO.cxx:935:\nITK ERROR: NrrdImageIO(0x55a50b443560): Read: Error reading x.nrrd:\n"
        '[nrrd] nrrdLoad: trouble reading "/data/x.nrrd"\n[nrrd] _nrrdEncodingRaw_read: fread got only 50 '
        "2-sized things, not 500000000 (1e-05% of expected)\n"
    )
    assert itk_reason(RuntimeError(text)) == "the file is truncated or corrupt"
    odd = (
        "Exception thrown in SimpleITK ImageFileReader_Execute: /work/src/Code/IO/src/sitkImageReaderBase.cxx:99:\n"
        "ITK ERROR: SomeImageIO(0x1): first line\nsomething odd happened in /home/user/secret/scan.xyz\n"
    )
    reason = itk_reason(RuntimeError(odd))
    assert "\n" not in reason and "/" not in reason and ".cxx" not in reason
    assert "something odd happened" in reason


def test_reader_errors_name_the_file_in_process(tmp_path):
    """The library raises MedcadError with the path set (the CLI and napari print it)."""
    from napari_medcad.core import MedcadError, read_images

    path = truncated_nii(tmp_path, None)
    with pytest.raises(MedcadError) as info:
        read_images(path)
    assert info.value.path == str(path) and "truncated" in info.value.reason
    assert str(info.value).count("\n") == 0


def test_notgzip_named_nii_gz_is_still_read(tmp_path):
    """A plain .nii misnamed .nii.gz is a good image (ITK reads it transparently): not an error."""
    from napari_medcad.core import read_image

    plain = _write(_volume(), tmp_path / "plain.nii")
    renamed = plain.rename(tmp_path / "plain.nii.gz")
    assert read_image(renamed).array.shape == (6, 24, 24)


def test_reading_leaves_nothing_on_stderr(tmp_path, capfd):
    """A bad file read in-process prints nothing itself (ITK, GDCM and MetaIO are silenced)."""
    from napari_medcad.core import MedcadError, read_images

    for builder in (mhd_with_missing_raw_file, truncated_png):
        sub = tmp_path / builder.__name__
        sub.mkdir()
        with pytest.raises(MedcadError):
            read_images(builder(sub, None))
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


# ------------------------------------------------------------------------------------------
# names that are not valid UTF-8: SimpleITK aborted the process (exit 134) or raised TypeError


def test_names_that_are_not_utf8_on_the_command_line(not_utf8_path, tmp_path, run_cli, pydicom_file):
    good = _write(_volume(), tmp_path / "good.nii.gz", compress=True).rename(not_utf8_path(tmp_path, b"\xe9t\xe9.nii.gz"))
    result = run_cli("info", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""

    folder = not_utf8_path(tmp_path, b"s\xe9rie")
    write_series(_volume((4, 16, 16)), tmp_path / "series", description="series")  # SimpleITK writes UTF-8 names
    (tmp_path / "series").rename(folder)
    result = run_cli("info", str(folder))
    assert result.returncode == 0 and result.stderr == "", result.stderr

    for bad in (_text(not_utf8_path(tmp_path, b"\xe9_note.nii.gz")),
                dicom_undecodable_compression(tmp_path, pydicom_file).rename(not_utf8_path(tmp_path, b"\xe9.dcm")),
                _write(_volume(), tmp_path / "v.mhd").rename(not_utf8_path(tmp_path, b"\xe9.mhd"))):
        result = run_cli("info", str(bad))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert r"\xe9" in result.stderr and r"\udce9" not in result.stderr  # the odd byte, shown readably


def test_a_library_error_becomes_a_one_line_reason():
    from napari_medcad.core.errors import first_line

    assert first_line(ValueError("\n  shapes differ\n  (traceback of the library)")) == "shapes differ"
    assert first_line(KeyError()) == "KeyError" and first_line(AssertionError("  \n ")) == "AssertionError"
    long = first_line(RuntimeError("x" * 500), 120)
    assert len(long) == 120 and long.endswith("...")
