"""Long text in a dock widget without squeezing the rows around it."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QLabel, QScrollArea


def description_area(label: QLabel, lines: int) -> QScrollArea:
    """A word-wrapped label in a frameless scroll area of fixed height.  A bare word-wrapped label
    asks the dock for too little height (Qt's dock layout ignores height-for-width), so in a
    crowded dock area the rows above it were squeezed under their text."""
    area = QScrollArea()
    area.setWidget(label)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    area.setFixedHeight(label.fontMetrics().lineSpacing() * lines + 2 * label.margin() + 10)
    return area
