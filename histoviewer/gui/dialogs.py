"""What the viewer's controllers may ask of the user, as an interface.

The controllers (mapping, models, export, slide scale) tell and ask the user
through a :class:`UserDialogs`; the main window is the one the app passes, and
tests answer the questions by replacing its ``ask_*`` methods, so that no test
blocks on a modal box. The controllers therefore never import the window.
"""

from __future__ import annotations

from typing import Protocol

from PySide6.QtWidgets import QWidget


class UserDialogs(Protocol):
    """Messages and questions for the user, shown over :meth:`dialog_parent`."""

    def dialog_parent(self) -> QWidget:
        """The widget other windows (Model Info, settings) are opened over."""
        ...

    def show_error(self, title: str, text: str) -> object:
        """Tell the user something failed (never blocks)."""
        ...

    def show_info(self, title: str, text: str) -> object: ...

    def ask_open_file(self, title: str, directory: str, filters: str) -> str | None: ...

    def ask_directory(self, title: str, directory: str) -> str | None: ...

    def ask_save_file(self, title: str, suggestion: str, filters: str) -> str | None: ...

    def ask_slide_scale(self, current: float, text: str) -> float | None: ...

    def ask_proceed(self, title: str, text: str, proceed: str) -> bool:
        """A warning with ``proceed`` and Cancel buttons (Cancel the default)."""
        ...
