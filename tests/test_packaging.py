"""The built wheel carries everything the installed plugin needs: manifest, samples, built-in models."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "src" / "napari_medcad"


@pytest.mark.slow
def test_wheel_holds_manifest_samples_and_builtin_models(tmp_path):
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(REPO_ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [wheel] = tmp_path.glob("napari_medcad-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = archive.read("napari_medcad/napari.yaml").decode()
    assert manifest == (REPO_ROOT / "napari.yaml").read_text()  # the root manifest is the installed one
    for sample in (REPO_ROOT / "sample_data").iterdir():
        assert f"napari_medcad/sample_data/{sample.name}" in names
    builtin = PACKAGE / "core" / "models" / "builtin"
    for path in builtin.rglob("*") if builtin.exists() else []:
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"napari_medcad/{path.relative_to(PACKAGE).as_posix()}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "napari-medcad = napari_medcad:napari.yaml" in archive.read(entry_points).decode()
