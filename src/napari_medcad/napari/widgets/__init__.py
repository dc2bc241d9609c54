"""Dock widgets: one module each, thin layers over napari_medcad.core."""
