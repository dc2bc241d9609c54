"""npe2 reader: DICOM folders and files, NIfTI, NRRD, MetaImage, TIFF and pictures.

The reader declines (returns None) for paths it does not handle so other plugins can try.
For a file it handles but cannot read, napari shows our one-line reason as a notification
and no layer is added: a bad file never becomes a traceback dialog.
"""

from __future__ import annotations

import os
from typing import Callable

from ..core.errors import MedcadError
from ..core.io import is_supported_path, read_images
from .layers import image_layer_data

#: napari's sentinel for "read, but nothing to add"
NOTHING = [(None,)]


def get_reader(path: str | list[str]) -> Callable | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None  # stacks of files are napari's business
        path = path[0]
    path = os.fspath(path)
    try:
        supported = is_supported_path(path)
    except OSError:
        supported = False
    return read_layers if supported else None


def read_layers(path: str | list[str]) -> list[tuple]:
    """Every image at ``path`` as LayerDataTuples (one per DICOM series)."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        images = read_images(path)
    except MedcadError as err:
        from napari.utils.notifications import show_error

        show_error(str(err))
        return NOTHING
    return [image_layer_data(image) for image in images]
