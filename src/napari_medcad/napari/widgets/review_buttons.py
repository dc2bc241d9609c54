"""The Review widget's decision buttons and their keyboard shortcuts.

One table says which keys do what, and one function makes the buttons (titled with their keys)
and the shortcuts from it, so a button and its keys cannot drift apart.  The shortcuts belong
to the whole Review widget, the findings table included, so the keys work wherever in it the
focus is, and nowhere else in napari.
"""

from __future__ import annotations

from typing import Callable

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QGridLayout, QPushButton, QShortcut, QWidget

SHORTCUTS = {
    "accept": ("A",), "reject": ("R",), "next": ("N",), "previous": ("P",),
    "undo": ("Ctrl+Z",), "redo": ("Ctrl+Shift+Z", "Ctrl+Y"),
}
TITLES = {"previous": "Previous (P, Up)", "next": "Next (N, Down)", "accept": "Accept (A)",
          "reject": "Reject (R)", "undo": "Undo (Ctrl+Z)", "redo": "Redo (Ctrl+Shift+Z / Ctrl+Y)"}
ORDER = ("accept", "reject", "previous", "next", "undo", "redo")


def decision_buttons(widget: QWidget, actions: dict[str, Callable[[], None]]) -> tuple[QGridLayout, dict]:
    """The buttons in a two-column grid, by name, and their shortcuts on ``widget`` and its children."""
    buttons: dict[str, QPushButton] = {}
    grid = QGridLayout()
    for position, name in enumerate(ORDER):
        button = QPushButton(TITLES[name])
        button.clicked.connect(lambda checked=False, act=actions[name]: act())
        buttons[name] = button
        grid.addWidget(button, position // 2, position % 2)
        for keys in SHORTCUTS[name]:
            shortcut = QShortcut(QKeySequence(keys), widget)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(actions[name])
    return grid, buttons
