"""Atomic writes: the target is either the old file or the complete new one, never a part."""

from __future__ import annotations

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
