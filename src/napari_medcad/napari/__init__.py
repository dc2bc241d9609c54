"""Everything that touches napari or Qt: npe2 entry points, the layer adapter and dock widgets."""
