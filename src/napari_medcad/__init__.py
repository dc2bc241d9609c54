"""napari-medcad: computer-aided diagnosis on medical images, as a napari plugin.

The compute core (:mod:`napari_medcad.core`) needs neither Qt nor napari; everything that
touches napari lives in :mod:`napari_medcad.napari`.
"""

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-medcad")
except Exception:  # running from a source tree that is not installed
    __version__ = "0+unknown"
