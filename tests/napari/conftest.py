"""Viewer tests need a display: run them under Xvfb (the Makefile uses xvfb-run).

Without a display they are skipped on a developer's machine, but fail in CI (CI=true), where a
missing display means the test command is broken, not that there is nothing to test.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="no display: run the tests under xvfb-run (make test)")
    for item in items:
        if "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture
def shown_errors(monkeypatch):
    """The messages widgets show as napari error notifications, instead of showing them."""
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    return shown


@pytest.fixture(autouse=True)
def reviews(tmp_path, monkeypatch):
    """A fresh reviews folder per test: a review saved by one test is never resumed by another."""
    folder = tmp_path / "reviews"
    monkeypatch.setenv("NAPARI_MEDCAD_REVIEWS", str(folder))
    return folder
