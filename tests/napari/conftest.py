"""Viewer tests need a display: run them under Xvfb (the Makefile uses xvfb-run)."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    skip = pytest.mark.skip(reason="no display: run the tests under xvfb-run (make test)")
    for item in items:
        if "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


REAL_DATA = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


@pytest.fixture
def real_data():
    """The workspace's real scans (../shared/data/real); skipped where they are not present."""
    if not (REAL_DATA / "lung1_image.nrrd").exists():
        pytest.skip(f"real scans not found at {REAL_DATA}")
    return REAL_DATA
