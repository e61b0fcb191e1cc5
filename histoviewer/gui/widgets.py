"""Small widget helpers shared by the dialogs.

:func:`resize_within_screen` sizes a window as asked, but never larger than the
screen it opens on (a laptop's 1366 x 768), so its buttons stay reachable.

:func:`guard_wheel` stops the mouse wheel from changing spin boxes and combo boxes
that the pointer merely passes over while a form is scrolled: only a field with
keyboard focus (clicked or tabbed into) takes the wheel; otherwise the wheel goes on
to the scroll area around it, as in Firefox's and Qt Creator's settings pages.

:class:`TileSourceRow` is the line and buttons that choose a tile dataset.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

#: The fields the wheel would change (spin boxes of every kind, combo boxes).
WHEEL_FIELDS = (QAbstractSpinBox, QComboBox)


class WheelGuard(QObject):
    """An event filter that hands wheel events over unfocused fields to their parents."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.Wheel
            and isinstance(watched, WHEEL_FIELDS)
            and not watched.hasFocus()
        ):
            # Not accepted: Qt offers a (real, spontaneous) wheel event to the parents
            # next, so the scroll area around the form scrolls instead.
            event.ignore()
            return True
        return super().eventFilter(watched, event)


def guard_wheel(root: QWidget) -> WheelGuard:
    """Let the wheel change only focused spin and combo boxes in ``root`` (and ``root``
    itself when it is one): each gets Qt.StrongFocus (the wheel no longer gives it focus)
    and a :class:`WheelGuard`, which lives as long as ``root``. Call it after the fields
    are created; fields added later need another call."""
    guard = root.findChild(WheelGuard, "wheel_guard", Qt.FindChildOption.FindDirectChildrenOnly)
    if guard is None:
        guard = WheelGuard(root)
        guard.setObjectName("wheel_guard")
    fields = [w for kind in WHEEL_FIELDS for w in root.findChildren(kind)]
    if isinstance(root, WHEEL_FIELDS):
        fields.append(root)
    for field in fields:
        field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        # Installing the same filter twice is harmless: Qt keeps it once.
        field.installEventFilter(guard)
    return guard


def sentence(text: str) -> str:
    """``text`` with a capital first letter (error messages of the library start in
    lower case, to fit after "cannot ...: "; shown on their own they are sentences)."""
    return text[:1].upper() + text[1:] if text[:1].islower() else text


def resize_within_screen(window: QWidget, width: int, height: int, share: float = 0.92) -> None:
    """Resize ``window`` to ``width`` x ``height``, or to ``share`` of the available
    screen where that is smaller (its minimum size still applies)."""
    screen = window.screen() or QApplication.primaryScreen()
    if screen is not None:
        area = screen.availableGeometry()
        width = min(width, int(area.width() * share))
        height = min(height, int(area.height() * share))
    window.resize(width, height)


class TileSourceRow(QHBoxLayout):
    """A line for a tile dataset (folder or .zip) with "Folder..." and "Zip..." buttons
    that fill it in; ``title`` names the choosing dialogs."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("a folder or .zip with one sub-folder per class")
        self.folder_button = QPushButton("Folder...")
        self.zip_button = QPushButton("Zip...")
        self.folder_button.clicked.connect(self.choose_folder)
        self.zip_button.clicked.connect(self.choose_zip)
        self.addWidget(self.edit, 1)
        self.addWidget(self.folder_button)
        self.addWidget(self.zip_button)

    def choose_folder(self) -> None:
        start = self.edit.text().strip()
        if path := QFileDialog.getExistingDirectory(self.edit, self.title, start):
            self.edit.setText(path)

    def choose_zip(self) -> None:
        start = self.edit.text().strip()
        path, _ = QFileDialog.getOpenFileName(
            self.edit, self.title, start, "Zip archives (*.zip);;All files (*)"
        )
        if path:
            self.edit.setText(path)
