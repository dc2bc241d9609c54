"""The Qt-free compute core: images and geometry, IO, preprocessing, models, findings, export.

Nothing below this package imports Qt or napari, and torch is imported only inside the
functions that need it, so notebooks, the CLI and batch jobs can use it on any machine.
"""

from .errors import Cancelled, MedcadError
from .image import Geometry, MedicalImage
from .io import image_info, read_image, read_images, write_image

__all__ = [
    "Cancelled",
    "Geometry",
    "MedcadError",
    "MedicalImage",
    "image_info",
    "read_image",
    "read_images",
    "write_image",
]
