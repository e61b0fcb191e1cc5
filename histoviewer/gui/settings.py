"""Persistent settings (QSettings) and the mapping settings dialog.

Everything the app remembers between runs goes through the helpers here, so the
keys live in one place. Tests pass their own ``QSettings`` (an INI file in a
temporary folder) and never touch the user's settings.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from histoviewer.viewer_state import MappingSettings, ViewSettings

ORGANIZATION = "HistoViewer"
APPLICATION = "HistoViewer"
MAX_RECENT = 10

_RECENT = "files/recent"
_MODEL = "model/last_path"
_MAPPING = "mapping/"
_VIEW = "view/"
_TRAINING = "training/"
_SCALES = "slide_scales/"


def app_settings() -> QSettings:
    """The user's settings (needs QApplication's organisation and application names)."""
    return QSettings(ORGANIZATION, APPLICATION)


def load_mapping_settings(qs: QSettings) -> MappingSettings:
    d = MappingSettings()
    return MappingSettings(
        stride=_int(qs.value(_MAPPING + "stride"), d.stride, 0, 10_000),
        device=str(qs.value(_MAPPING + "device", d.device)) or d.device,
        batch_size=_int(qs.value(_MAPPING + "batch_size"), d.batch_size, 1, 4096),
        skip_background=_bool(qs.value(_MAPPING + "skip_background"), d.skip_background),
        tta=_bool(qs.value(_MAPPING + "tta"), d.tta),
    )


def save_mapping_settings(qs: QSettings, s: MappingSettings) -> None:
    qs.setValue(_MAPPING + "stride", s.stride)
    qs.setValue(_MAPPING + "device", s.device)
    qs.setValue(_MAPPING + "batch_size", s.batch_size)
    qs.setValue(_MAPPING + "skip_background", s.skip_background)
    qs.setValue(_MAPPING + "tta", s.tta)


def load_view_settings(qs: QSettings) -> ViewSettings:
    """The view settings kept from the last run. Solo and the probability heatmap
    (``solo_class``, ``heatmap_class``) are transient views: never saved, and a run
    always starts without them."""
    d = ViewSettings()
    return ViewSettings(
        overlay_visible=_bool(qs.value(_VIEW + "overlay_visible"), d.overlay_visible),
        opacity=_fraction(qs.value(_VIEW + "opacity"), d.opacity),
        confidence_shading=_bool(qs.value(_VIEW + "confidence_shading"), d.confidence_shading),
        uncertain_only=_bool(qs.value(_VIEW + "uncertain_only"), d.uncertain_only),
        uncertain_threshold=_fraction(
            qs.value(_VIEW + "uncertain_threshold"), d.uncertain_threshold
        ),
    )


def _fraction(value: object, default: float) -> float:
    """A stored number from 0 to 1 (clamped); ``default`` when absent or not a number."""
    try:
        number = float(value if value is not None else default)
    except (TypeError, ValueError):
        return default
    return min(1.0, max(0.0, number)) if number == number else default


def save_view_settings(qs: QSettings, s: ViewSettings) -> None:
    """Keep the view settings for the next run, all but the transient solo and
    heatmap (see :func:`load_view_settings`)."""
    qs.setValue(_VIEW + "overlay_visible", s.overlay_visible)
    qs.setValue(_VIEW + "opacity", s.opacity)
    qs.setValue(_VIEW + "confidence_shading", s.confidence_shading)
    qs.setValue(_VIEW + "uncertain_only", s.uncertain_only)
    qs.setValue(_VIEW + "uncertain_threshold", s.uncertain_threshold)


def recent_files(qs: QSettings) -> list[str]:
    """Recently opened slides, newest first."""
    value = qs.value(_RECENT, [])
    if isinstance(value, str):  # QSettings gives a bare string for a one-item list
        value = [value]
    return [str(v) for v in (value or []) if v]


def add_recent_file(qs: QSettings, path: str) -> list[str]:
    files = [path] + [p for p in recent_files(qs) if p != path]
    files = files[:MAX_RECENT]
    qs.setValue(_RECENT, files)
    return files


def remove_recent_file(qs: QSettings, path: str) -> list[str]:
    files = [p for p in recent_files(qs) if p != path]
    qs.setValue(_RECENT, files)
    return files


def clear_recent_files(qs: QSettings) -> None:
    qs.setValue(_RECENT, [])


def last_model_path(qs: QSettings) -> str | None:
    value = qs.value(_MODEL)
    return str(value) if value else None


def set_last_model_path(qs: QSettings, path: str | None) -> None:
    if path:
        qs.setValue(_MODEL, path)
    else:
        qs.remove(_MODEL)


def training_value(qs: QSettings, key: str) -> str:
    """A remembered Train New Model choice ("data", "last_run", "runs_root", "device",
    "preset"); "" when none."""
    value = qs.value(_TRAINING + key)
    return str(value) if value else ""


def set_training_value(qs: QSettings, key: str, value: str) -> None:
    qs.setValue(_TRAINING + key, value)


def slide_scale(qs: QSettings, path: str) -> float | None:
    """The µm/px the user set for the slide file ``path`` (resolved), or None."""
    try:
        value = float(qs.value(_SCALES + _path_key(path)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def set_slide_scale(qs: QSettings, path: str, mpp: float | None) -> None:
    """Remember (or, with None, forget) the µm/px the user set for ``path``."""
    if mpp is None:
        qs.remove(_SCALES + _path_key(path))
    else:
        qs.setValue(_SCALES + _path_key(path), float(mpp))


def _path_key(path: str) -> str:
    # Paths hold characters QSettings keys must not (slashes nest groups); a digest
    # of the resolved path is stable and safe.
    resolved = str(Path(path).expanduser().resolve())
    return hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:32]


def _int(value: object, default: int, lo: int, hi: int) -> int:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if lo <= number <= hi else default


def _bool(value: object, default: bool) -> bool:
    # INI files hand booleans back as the strings "true" / "false".
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def available_devices() -> list[str]:
    """Device names worth offering: auto, cpu and whichever accelerators exist."""
    import torch  # heavy; only when the dialog opens

    names = ["auto", "cpu"]
    names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


class MappingSettingsDialog(QDialog):
    """Edits :class:`MappingSettings`; read the result with :meth:`settings`."""

    def __init__(self, current: MappingSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Mapping Settings")
        self.stride = QSpinBox(minimum=0, maximum=1000, singleStep=10, suffix=" px")
        self.stride.setSpecialValueText("Patch size (no overlap)")
        self.stride.setValue(current.stride)
        self.stride.setToolTip(
            "Distance between patches in the model's pixels (0.495 µm each for the Kather "
            "models). The lowest setting, the model's patch size (150 px for the Kather "
            "models), covers the slide with non-overlapping patches; smaller values overlap "
            "and take longer, larger ones leave gaps."
        )
        self.device = QComboBox()
        devices = available_devices()
        if current.device not in devices:
            devices.append(current.device)
        self.device.addItems(devices)
        self.device.setCurrentText(current.device)
        self.device.setToolTip("auto uses a GPU when one is available, else the CPU.")
        self.batch_size = QSpinBox(minimum=1, maximum=1024)
        self.batch_size.setValue(current.batch_size)
        self.batch_size.setToolTip(
            "Most patches classified at once; lower it if memory runs out. On the CPU "
            "batches are smaller, about a second's work each, so the map fills in steadily."
        )
        self.skip_background = QCheckBox("Skip background (empty glass)")
        self.skip_background.setChecked(current.skip_background)
        self.skip_background.setToolTip(
            "Patches that are almost white are not classified, which saves time."
        )
        self.tta = QCheckBox("Test-time augmentation (8 views per patch, 8x slower)")
        self.tta.setChecked(current.tta)
        self.tta.setToolTip(
            "Classifies every patch in its 8 flips and 90-degree rotations and keeps their "
            "mean; the Review panel and exports also get how far the 8 views disagree."
        )

        form = QFormLayout()
        form.addRow("Stride:", self.stride)
        form.addRow("Device:", self.device)
        form.addRow("Batch size:", self.batch_size)
        form.addRow("", self.skip_background)
        form.addRow("", self.tta)
        note = QLabel(
            "Changes apply to the next mapping. Maps made with other settings stay saved "
            "and come back when those settings are chosen again."
        )
        note.setWordWrap(True)
        note.setEnabled(False)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(
            lambda: self.set_settings(MappingSettings())
        )
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)
        # The wheel changes a field only once it is clicked or tabbed into.
        from histoviewer.gui.widgets import guard_wheel

        guard_wheel(self)

    def set_settings(self, s: MappingSettings) -> None:
        self.stride.setValue(s.stride)
        if self.device.findText(s.device) < 0:
            self.device.addItem(s.device)
        self.device.setCurrentText(s.device)
        self.batch_size.setValue(s.batch_size)
        self.skip_background.setChecked(s.skip_background)
        self.tta.setChecked(s.tta)

    def settings(self) -> MappingSettings:
        return MappingSettings(
            stride=self.stride.value(),
            device=self.device.currentText(),
            batch_size=self.batch_size.value(),
            skip_background=self.skip_background.isChecked(),
            tta=self.tta.isChecked(),
        )
