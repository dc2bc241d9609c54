"""Fixtures shared by the whole suite: core only (paths to real data, the info CLI).

Viewer fixtures belong in tests/napari/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the real scans live beside the repository: ../shared/data/real (see its README.md)
REAL_DATA = (REPO_ROOT / ".." / "shared" / "data" / "real").resolve()
REAL_FILES = ("lung1_image.nrrd", "lung1_label.nrrd", "brain1_image.nrrd", "brain1_label.nrrd")

#: no reader may take longer than this on a small file; a hang fails the test instead of the run
CLI_TIMEOUT_S = 60


#: the user's own folders and files, which no test may read or write: scratch ones for the session
USER_PLACES = {"NAPARI_MEDCAD_MODELS": "models", "NAPARI_MEDCAD_REVIEWS": "reviews",
               "NAPARI_MEDCAD_TRUST": "trusted.json"}


@pytest.fixture(scope="session", autouse=True)
def scratch_user_places(tmp_path_factory):
    """Point the user model folder, the reviews folder and the TorchScript trust list at scratch
    places (tests that need their own set them again with monkeypatch; CLI subprocesses inherit)."""
    root = tmp_path_factory.mktemp("user")
    before = {name: os.environ.get(name) for name in USER_PLACES}
    os.environ.update({name: str(root / place) for name, place in USER_PLACES.items()})
    yield root
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real scans; the test is skipped when it is absent."""
    if not all((REAL_DATA / name).is_file() for name in REAL_FILES):
        pytest.skip(f"real test data not found in {REAL_DATA}")
    return REAL_DATA


def _pydicom_file(name: str) -> str:
    """Path of a DICOM test file shipped by pydicom or pydicom-data; skips if it is not installed.

    Only files already on disk are used (``download=False``): tests never touch the network.
    """
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name, download=False)
    except TypeError:  # older pydicom without the keyword
        path = get_testdata_file(name)
    except Exception as err:  # pragma: no cover - depends on what is installed
        pytest.skip(f"pydicom test file {name} unavailable ({err})")
    if not path or not os.path.isfile(path):
        pytest.skip(f"pydicom test file {name} is not installed (pip install pydicom-data)")
    return path


def _run_cli(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python -m napari_medcad.cli ARGS`` as a user would, with a hang guard."""
    env = dict(os.environ, PYTHONWARNINGS="default")  # warnings must not break the one-line rule
    return subprocess.run(
        [sys.executable, "-m", "napari_medcad.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _cli_info(path: str | os.PathLike) -> dict:
    """`napari-medcad info PATH` parsed; fails the test with stderr if it did not succeed."""
    result = _run_cli("info", os.fspath(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def pydicom_file():
    """``pydicom_file(name)``: a pydicom / pydicom-data test file's path (skips if absent)."""
    return _pydicom_file


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args)``: the real command line in a subprocess, with a timeout."""
    return _run_cli


@pytest.fixture(scope="session")
def cli_info():
    """``cli_info(path)``: the parsed JSON of `napari-medcad info PATH` (asserts success)."""
    return _cli_info


@pytest.fixture
def not_utf8_path():
    """``make(folder, name)``: ``folder / name`` for a name (bytes) that is not valid UTF-8, as
    old exports and zip files leave; skips the test where the file system refuses such names."""

    def make(folder: Path, name: bytes) -> Path:
        path = os.fsencode(folder) + b"/" + name
        try:
            open(path, "wb").close()
            os.remove(path)
        except OSError:
            pytest.skip("this file system refuses names that are not UTF-8")
        return Path(os.fsdecode(path))

    return make
