"""The open slide's scale: a status-bar badge, Analysis > Set Slide Scale, remembered values.

Every patch size and area rests on the slide's microns per pixel. When its file
records none (or an implausible one) the scale is *assumed*, and the badge says so
in warning colours for as long as the slide is open; it also warns when the slide is
much coarser than the model's tiles. Clicking the badge (or Analysis > Set Slide
Scale) sets the scale; the value is remembered per slide file and applied whenever
that file is opened again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings
from PySide6.QtWidgets import QToolButton

from histoviewer.gui import settings as config
from histoviewer.gui.dialogs import UserDialogs
from histoviewer.mapping.checks import SCALE_ASSUMED, SCALE_COARSE, scale_warnings
from histoviewer.slide.mpp import ASSUMED, GIVEN_VIEWER
from histoviewer.viewer_state import MAPPING, ViewerState

if TYPE_CHECKING:
    from histoviewer.slide import SlideReader

WARNING_STYLE = (
    "QToolButton { background: #f6c343; color: #222; border-radius: 3px; padding: 0 6px; }"
)


class SlideScaleController(QObject):
    """Keeps ``button`` describing the state's slide scale and changes that scale."""

    def __init__(
        self,
        state: ViewerState,
        dialogs: UserDialogs,
        settings: QSettings,
        button: QToolButton,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self.dialogs = dialogs
        self.settings = settings
        self.button = button
        self.button.setAutoRaise(True)
        self.button.clicked.connect(self.ask_and_set)
        state.slide_changed.connect(self.update_badge)
        state.model_changed.connect(self.update_badge)
        state.slide_scale_changed.connect(self.update_badge)
        self.update_badge()

    def adopt(self, reader: SlideReader) -> None:
        """Apply the scale remembered for ``reader``'s file, if any."""
        if reader.path is None:
            return
        remembered = config.slide_scale(self.settings, str(reader.path))
        if remembered is not None:
            try:
                reader.set_mpp(remembered, GIVEN_VIEWER)
            except ValueError:
                config.set_slide_scale(self.settings, str(reader.path), None)

    def set_scale(self, mpp: float | None) -> bool:
        """Use ``mpp`` µm/px as the open slide's scale (None: its file's again).

        Remembered for the slide's file. The map shown is dropped, since its patches
        were cut at the old scale (a saved map for the new scale is shown if there
        is one). Refused (False, with a message) while mapping or for a value outside
        0.05-40 µm/px.
        """
        slide = self.state.slide
        if slide is None:
            return False
        if self.state.is_running(MAPPING):
            self.dialogs.show_info(
                "Mapping in progress",
                "The slide's scale decides the size of every patch: cancel the mapping "
                "before changing it.",
            )
            return False
        try:
            self.apply(slide, mpp)
        except ValueError as exc:
            text = str(exc)
            self.dialogs.show_error("Cannot set the slide's scale", text[:1].upper() + text[1:])
            return False
        self.state.scale_changed()
        self.state.notify(f"Slide scale: {slide.mpp:g} µm/px ({slide.mpp_source}).")
        return True

    def apply(self, reader: SlideReader, mpp: float | None) -> None:
        """Use ``mpp`` for ``reader`` (None, or the file's own value: the file's scale)
        and remember the choice for its file. ValueError for an implausible value."""
        file_mpp, file_source, _ = reader.file_scale
        back_to_file = mpp is None or (file_source != ASSUMED and abs(mpp - file_mpp) < 1e-9)
        if back_to_file:
            reader.reset_mpp()
        else:
            reader.set_mpp(mpp, GIVEN_VIEWER)
        if reader.path is not None:
            remembered = None if back_to_file else reader.mpp
            config.set_slide_scale(self.settings, str(reader.path), remembered)
        self.update_badge()

    def ask_and_set(self) -> None:
        """Analysis > Set Slide Scale: ask for the open slide's µm/px and use it."""
        slide = self.state.slide
        if slide is None:
            return
        file_mpp, file_source, _ = slide.file_scale
        if file_source == ASSUMED:
            said = "Its file records no usable scale."
        else:
            said = f"Its file says {file_mpp:g} µm/px ({file_source})."
        value = self.dialogs.ask_slide_scale(
            slide.mpp,
            f"Microns per pixel of the slide at full resolution. {said}\n"
            "40x scans are about 0.25 µm/px, 20x scans about 0.5 µm/px.",
        )
        if value is not None:
            self.set_scale(value)

    def update_badge(self, *_: object) -> None:
        """Describe the slide scale on the badge (hidden without a slide)."""
        slide = self.state.slide
        if slide is None:
            self.button.setVisible(False)
            return
        from histoviewer.model.info import ModelInfo

        clf = self.state.classifier
        info = clf.info if clf is not None else ModelInfo.recipe()
        kinds = {warning.kind: warning for warning in scale_warnings(slide, info)}
        text = f"{slide.mpp:.4g} µm/px"
        tip = [f"Slide scale: {slide.mpp:g} µm/px ({slide.mpp_source})."]
        if SCALE_ASSUMED in kinds:
            text = f"⚠ Scale assumed: {slide.mpp:.4g} µm/px"
        elif SCALE_COARSE in kinds:
            text = f"⚠ {slide.mpp:.4g} µm/px: coarse"
        tip += [warning.message for warning in kinds.values()]
        tip.append("Click to set the slide's scale (remembered for this file).")
        self.button.setText(text)
        self.button.setToolTip("\n\n".join(tip))
        self.button.setStyleSheet(WARNING_STYLE if kinds else "")
        self.button.setVisible(True)

    def is_warning(self) -> bool:
        """Whether the badge shows a warning (assumed or too coarse a scale)."""
        return self.button.isVisible() and self.button.text().startswith("⚠")
