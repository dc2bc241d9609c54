"""A renamed image layer takes its findings along.

Findings, graph and explanation layers record the image they were made on by its layer name
(``metadata["medcad"]["source_layer"]``): the review finds a case's masks and boxes by it, and
a re-run finds the findings it replaces.  napari lets the reader rename any layer, so one
watcher per viewer rewrites that record when the image is renamed.  Widgets call
:func:`follow_source_renames` (any number of times, any widget); it watches for as long as the
viewer lives.
"""

from __future__ import annotations

import weakref
from typing import Callable

from .layers import META_KEY

_WATCHERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class SourceNames:
    """Keeps ``source_layer`` records in step with layer names in one viewer."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.listeners: list[Callable[[object, str], None]] = []  # (renamed layer, its old name)
        self._names: dict[int, tuple] = {}  # id(layer) -> (layer, its name before a rename)
        viewer.layers.events.inserted.connect(lambda event: self._watch(event.value))
        viewer.layers.events.removed.connect(lambda event: self._unwatch(event.value))
        for layer in viewer.layers:
            self._watch(layer)

    def _watch(self, layer) -> None:
        if id(layer) not in self._names:
            layer.events.name.connect(self._on_renamed)
        self._names[id(layer)] = (layer, layer.name)

    def _unwatch(self, layer) -> None:
        if self._names.pop(id(layer), None) is not None:
            layer.events.name.disconnect(self._on_renamed)

    def _on_renamed(self, event) -> None:
        layer = event.source
        entry = self._names.get(id(layer))
        old = entry[1] if entry is not None and entry[0] is layer else None
        self._names[id(layer)] = (layer, layer.name)
        if not old or old == layer.name:
            return
        for other in self.viewer.layers:
            info = other.metadata.get(META_KEY) if isinstance(other.metadata, dict) else None
            if other is not layer and isinstance(info, dict) and info.get("source_layer") == old:
                info["source_layer"] = layer.name
        for listener in list(self.listeners):
            listener(layer, old)


def follow_source_renames(viewer) -> SourceNames:
    """The viewer's one :class:`SourceNames` watcher, made on first call."""
    watcher = _WATCHERS.get(viewer)
    if watcher is None:
        watcher = _WATCHERS[viewer] = SourceNames(viewer)
    return watcher
