"""Atomic writes: the target is either the old file or the complete new one, never a part."""

from __future__ import annotations

import os

import pytest

from napari_medcad.core.atomic import replacing, write_text


def test_write_text_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    write_text(target, "old")
    write_text(target, "new", durable=True)
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "image.nii.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target, suffix=".nii.gz") as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".nii.gz")
            temporary.write_text("half")
            raise RuntimeError("killed half-way")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["image.nii.gz"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    """As open() would create them: a temporary file's private mode must not stick to the result."""
    previous = os.umask(umask)
    try:
        write_text(tmp_path / "state.json", "x", durable=True)
        with replacing(tmp_path / "image.nii.gz", suffix=".nii.gz") as temporary:
            temporary.write_bytes(b"voxels")
    finally:
        os.umask(previous)
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "image.nii.gz").stat().st_mode & 0o777 == mode


def test_temporary_names_are_the_ones_stale_cleanup_looks_for(tmp_path):
    with replacing(tmp_path / "review.json") as temporary:
        assert temporary.name.startswith(".review.json.") and temporary.name.endswith(".partial")
        assert temporary.exists()
        temporary.write_text("{}")
