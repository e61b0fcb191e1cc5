"""The shared widget helpers: the wheel changes only focused fields; error sentences."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QScrollArea,
    QSpinBox,
    QWidget,
)
from viewer_support import wheel

from histoviewer.gui.settings import MappingSettings, MappingSettingsDialog
from histoviewer.gui.widgets import WheelGuard, guard_wheel, sentence


def make_form(qtbot):
    """A scrolled form with a spin box, a decimal one and a combo box."""
    form = QWidget()
    spin = QSpinBox(minimum=0, maximum=1000)
    spin.setValue(150)
    decimal = QDoubleSpinBox(minimum=0.0, maximum=10.0, singleStep=0.5)
    decimal.setValue(1.0)
    combo = QComboBox()
    combo.addItems(["recipe", "best", "other"])
    combo.setCurrentIndex(1)
    layout = QFormLayout(form)
    layout.addRow("Tile size:", spin)
    layout.addRow("Decay:", decimal)
    layout.addRow("Preset:", combo)
    scroll = QScrollArea()
    scroll.setWidget(form)
    scroll.setWidgetResizable(True)
    qtbot.addWidget(scroll)
    scroll.show()
    qtbot.waitExposed(scroll)
    return scroll, form, spin, decimal, combo


def values(spin, decimal, combo):
    return spin.value(), decimal.value(), combo.currentIndex()


def test_unguarded_fields_take_the_wheel(qtbot):
    # What the guard is for: without it, scrolling over a field changes it.
    _scroll, _form, spin, decimal, combo = make_form(qtbot)  # kept: they own the fields
    for field in (spin, decimal, combo):
        wheel(field)
    assert values(spin, decimal, combo) != (150, 1.0, 1)


def test_the_wheel_changes_only_a_focused_field(qtbot):
    scroll, form, spin, decimal, combo = make_form(qtbot)
    guard = guard_wheel(form)
    assert isinstance(guard, WheelGuard) and guard.parent() is form
    assert guard_wheel(form) is guard  # once per root, however often it is called
    for field in (spin, decimal, combo):
        assert field.focusPolicy() == Qt.FocusPolicy.StrongFocus
        assert not wheel(field)  # not taken: Qt offers it to the scroll area
        assert not wheel(field, -3)
    assert values(spin, decimal, combo) == (150, 1.0, 1)

    scroll.activateWindow()
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus)
    assert wheel(spin)
    assert values(spin, decimal, combo) == (151, 1.0, 1)
    combo.setFocus()
    qtbot.waitUntil(combo.hasFocus)
    wheel(spin)  # focus moved on: the spin box is left alone again
    wheel(combo, -1)
    assert values(spin, decimal, combo) == (151, 1.0, 2)


def test_the_mapping_settings_dialog_guards_its_fields(qtbot):
    dialog = MappingSettingsDialog(MappingSettings(stride=150, batch_size=64, device="cpu"))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    before = dialog.settings()
    for field in (dialog.stride, dialog.batch_size, dialog.device):
        assert not wheel(field)
    assert dialog.settings() == before
    dialog.activateWindow()
    dialog.stride.setFocus()
    qtbot.waitUntil(dialog.stride.hasFocus)
    wheel(dialog.stride)
    assert dialog.settings().stride == 160  # one step of 10 px


def test_error_messages_read_as_sentences():
    assert sentence("cannot write x: the disk is full") == "Cannot write x: the disk is full"
    assert sentence("/tmp/run holds a run") == "/tmp/run holds a run"
    assert sentence("CUDA ran out") == "CUDA ran out"
    assert sentence("") == ""
