"""Model > Train New Model end to end on a tiny dataset: check, start, progress, hide,
cancel, resume, results, use the model; closing the app mid-run; the error paths; what
keeps a run from starting by accident (Enter, the question with the time estimate);
remembered choices; the wheel over the form."""

from __future__ import annotations

import errno
import os
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton
from viewer_support import wheel

from histoviewer.classes import class_label
from histoviewer.errors import DeviceError
from histoviewer.gui import settings as config
from histoviewer.gui import training_dialog
from histoviewer.gui.curves import TrainingCurves
from histoviewer.gui.mainwindow import MainWindow
from histoviewer.gui.training_dialog import TrainingDialog
from histoviewer.gui.training_form import (
    ERROR_STYLE,
    TYPICAL_RATES,
    Estimate,
    TrainingForm,
    approx_duration,
    split_sizes,
    typical_speed,
)
from histoviewer.gui.training_results import ResultsPanel
from histoviewer.mapping.cache import MapCache
from histoviewer.model import load_model
from histoviewer.tasks import elapsed_duration
from histoviewer.training import TrainConfig, classification_metrics
from histoviewer.training.checkpoint import load_last, save_last

TIMEOUT = 60_000
FOLDERS = ("01_TUMOR", "02_STROMA", "07_ADIPOSE")
COLORS = ((150, 40, 110), (235, 150, 190), (245, 240, 245))


def make_tiles(root: Path, per_class: int = 6, size: int = 40, seed: int = 0) -> Path:
    """Noisy tiles of one clear colour per class (a tiny network learns them quickly)."""
    rng = np.random.default_rng(seed)
    for folder, colour in zip(FOLDERS, COLORS, strict=True):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.normal(0, 12, (size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / folder / f"tile_{i:03d}.png")
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread", "start_questions")


@pytest.fixture
def make_window(qtbot, settings, tmp_path):
    def make() -> MainWindow:
        window = MainWindow(settings, MapCache(tmp_path / "cache"), restore_model=False)
        qtbot.addWidget(window)
        window.resize(900, 600)
        window.show()
        return window

    return make


@pytest.fixture
def tiles(tmp_path):
    return make_tiles(tmp_path / "tiles")


def wait_ready(qtbot, dialog):
    qtbot.waitUntil(lambda: not dialog.form.checking(), timeout=TIMEOUT)


def set_up_tiny_run(qtbot, dialog, data: Path, out: Path, mpp: float | None = None) -> None:
    """resnet18 at 32 px, 2 epochs, batch 4 on 40 px tiles (at ``mpp``: None leaves the
    tile scale field alone)."""
    form = dialog.form
    if mpp is not None:
        form.mpp_spin.setValue(mpp)
    form.data_edit.setText(str(data))
    form.out_edit.setText(str(out))
    form.arch_combo.setCurrentText("resnet18")
    form.epochs_spin.setValue(2)
    form.batch_spin.setValue(4)
    form.image_spin.setValue(32)
    wait_ready(qtbot, dialog)


class EventGate:
    """Wraps the real fit(): after the first event ``when`` picks, the worker waits until
    the test releases it or the run is cancelled, so the test can act mid-run without
    timing guesses. The training itself is untouched."""

    def __init__(self, monkeypatch, when) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        real_fit = training_dialog.fit

        def gated_fit(cfg, progress, cancel, **kwargs):
            def report(event):
                progress(event)
                if not self.reached.is_set() and when(event):
                    self.reached.set()
                    while not self.release.wait(0.02) and not cancel.cancelled:
                        pass

            return real_fit(cfg, report, cancel, **kwargs)

        monkeypatch.setattr(training_dialog, "fit", gated_fit)


class EpochGate(EventGate):
    """Holds the run after the event of epoch ``hold_after_epoch``."""

    def __init__(self, monkeypatch, hold_after_epoch: int = 1) -> None:
        super().__init__(monkeypatch, lambda e: e.kind == "epoch" and e.epoch == hold_after_epoch)


def test_dataset_check_lists_classes_and_counts(qtbot, make_window, tiles, tmp_path):
    dialog = make_window().open_training_dialog()
    assert not dialog.start_button.isEnabled()  # nothing chosen yet
    dialog.form.data_edit.setText(str(tiles))
    wait_ready(qtbot, dialog)
    assert dialog.form.dataset_ok
    assert dialog.form.class_counts() == [(f, 6) for f in FOLDERS]
    assert "3 classes, 18 images" in dialog.form.check_label.text()
    assert dialog.start_button.isEnabled()
    # The default output folder is a new one under the runs folder.
    assert Path(dialog.form.out_folder).parent == tmp_path / "runs"

    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tiles.rglob("*.png")):
            zf.write(path, "Kather_tiles/" + path.relative_to(tiles).as_posix())
    dialog.form.data_edit.setText(str(archive))
    wait_ready(qtbot, dialog)
    assert dialog.form.class_counts() == [(f, 6) for f in FOLDERS]


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("one_class", "class"),
        ("flat", "class"),
        ("missing", "does not exist"),
    ],
)
def test_a_broken_dataset_is_explained_in_red_and_blocks_start(
    qtbot, make_window, tmp_path, layout, words
):
    data = tmp_path / "broken"
    if layout == "one_class":
        make_tiles(data)
        for folder in FOLDERS[1:]:
            for f in (data / folder).iterdir():
                f.unlink()
            (data / folder).rmdir()
    elif layout == "flat":
        make_tiles(tmp_path / "src")
        data.mkdir()
        for f in (tmp_path / "src" / FOLDERS[0]).iterdir():
            f.rename(data / f.name)
    dialog = make_window().open_training_dialog()
    dialog.form.data_edit.setText(str(data))
    wait_ready(qtbot, dialog)
    label = dialog.form.check_label
    assert not dialog.form.dataset_ok and not dialog.start_button.isEnabled()
    assert label.styleSheet() == ERROR_STYLE and str(data) in label.text()
    assert words in label.text().lower()
    assert not dialog.form.class_table.isVisible()


def test_a_new_run_never_writes_over_an_earlier_one(qtbot, make_window, tiles, tmp_path):
    old = b"a file of the earlier run"
    dialog = make_window().open_training_dialog()
    # A model and a report without last.pt: nothing to resume, but a run all the same.
    out = tmp_path / "old"
    out.mkdir()
    for name in ("best.safetensors", "report.json"):
        (out / name).write_bytes(old)
    set_up_tiny_run(qtbot, dialog, tiles, out)
    label = dialog.form.run_label
    assert label.text() == (
        f"{out} holds files of an earlier run (best.safetensors, report.json) but no last.pt "
        "to resume it. Choose another folder."
    )
    assert label.styleSheet() == ERROR_STYLE
    assert not dialog.start_button.isEnabled() and not dialog.resume_button.isEnabled()
    assert dialog.start() is None and not dialog.is_running()

    # A free folder, in which a run appears after it was checked (another process).
    fresh = tmp_path / "fresh"
    dialog.form.out_edit.setText(str(fresh))
    wait_ready(qtbot, dialog)
    assert dialog.start_button.isEnabled()
    fresh.mkdir()
    (fresh / "last.pt").write_bytes(old)
    assert dialog.start() is None and not dialog.is_running()
    assert _shows_error(dialog, f"{fresh} now holds a training run; choose another folder")
    wait_ready(qtbot, dialog)
    assert not dialog.start_button.isEnabled()  # the form has looked again
    assert "Choose another folder." in dialog.form.run_label.text()
    assert [p.read_bytes() for p in (out / "best.safetensors", fresh / "last.pt")] == [old, old]


def test_presets_prefill_the_hyperparameters(make_window):
    form = make_window().open_training_dialog().form
    form.preset_combo.setCurrentText("best")
    values = (
        form.arch_combo.currentText(),
        form.epochs_spin.value(),
        form.batch_spin.value(),
        form.image_spin.value(),
        form.lr_spin.value(),
    )
    assert values == ("resnet50", 60, 128, 224, pytest.approx(2e-3))
    assert form.augment_check.isChecked() and form.optimizer_combo.currentText() == "adamw"
    form.epochs_spin.setValue(3)
    cfg = form.config()
    assert (cfg.preset, cfg.epochs, cfg.scheduler, cfg.flips) == ("best", 3, "cosine", True)
    form.preset_combo.setCurrentText("recipe")
    assert (form.epochs_spin.value(), form.batch_spin.value()) == (15, 64)
    assert form.lr_spin.value() == pytest.approx(1e-3) and not form.augment_check.isChecked()
    assert not form.config().augments


def test_tile_scale_and_size_fields(make_window):
    form = make_window().open_training_dialog().form
    assert form.mpp_label.text() == "Tile scale (µm/px):"
    assert form.mpp_label.buddy() is form.mpp_spin
    assert form.mpp_spin.value() == pytest.approx(0.495) and form.mpp_spin.text() == "0.495"
    tip = form.mpp_spin.toolTip()
    assert "Microns per pixel of the tiles" in tip and "µm/px" in tip
    assert not re.search(r"\bum\b", tip)
    # Left alone, the scale is only assumed (the run notes it); the tiles keep their size.
    cfg = form.config()
    assert cfg.mpp is None and cfg.mpp_assumed and cfg.patch_size is None
    assert form.tile_spin.text() == "the tiles' own"
    form.mpp_spin.setValue(0.25)
    form.tile_spin.setValue(64)
    # A preset sets the training, not the data: the scale and size stay.
    form.preset_combo.setCurrentText("best")
    cfg = form.config()
    assert (cfg.preset, cfg.mpp, cfg.patch_size) == ("best", 0.25, 64)
    form.mpp_spin.setValue(0.495)  # typed in: given, not assumed
    assert form.config().mpp == pytest.approx(0.495)
    # An earlier run's settings bring its scale back, assumed or not.
    form.apply_config(TrainConfig(mpp=0.3))
    assert form.mpp_spin.value() == pytest.approx(0.3) and form.config().mpp == 0.3
    form.apply_config(TrainConfig())
    assert form.mpp_spin.value() == pytest.approx(0.495) and form.config().mpp is None
    assert form.tile_spin.text() == "the tiles' own"


def test_train_cancel_resume_results_and_use_the_model(
    qtbot, make_window, tiles, tmp_path, settings, monkeypatch, start_questions
):
    gate = EpochGate(monkeypatch)
    window = make_window()
    dialog = window.open_training_dialog()
    out = tmp_path / "run"
    set_up_tiny_run(qtbot, dialog, tiles, out, mpp=0.25)
    assert dialog.start() is not None and dialog.is_running()
    assert "tiles at 0.25 µm/px; output" in dialog.log_text()
    assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    assert not dialog.form.data_edit.isEnabled()

    # Epoch 1 is on the curves and in the log while the run is held after it.
    qtbot.waitUntil(lambda: len(dialog.curves.series()["val_loss"]) == 1, timeout=TIMEOUT)
    assert gate.reached.is_set()
    assert "Epoch 1/2: train loss" in dialog.log_text()
    assert dialog.curves.series()["batch_loss"] == []  # epoch 1's batches are summarised
    assert "left" in dialog.speed_label.text() and "images/s" in dialog.speed_label.text()
    assert window.training_label.isVisible() and "epoch 1/2" in window.training_label.text()
    # Hiding the dialog keeps the job; the menu brings the same dialog back; the viewer
    # stays usable meanwhile.
    dialog.close()
    assert not dialog.isVisible() and dialog.is_running()
    assert window.open_training_dialog() is dialog and dialog.isVisible()
    assert window.map_action.isEnabled() and window.load_model_action.isEnabled()

    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.cancel_button.click()
    cancelled = blocker.args[0]
    assert cancelled.cancelled and cancelled.epochs_done == 1
    saved = load_last(out / "last.pt")
    assert saved["epoch"] == 1 and 0 < saved["elapsed_s"] <= cancelled.elapsed_s
    assert dialog.status_label.text() == (
        "Cancelled after epoch 1 of 2. Resume continues from there."
    )
    # The run's real speed now makes the estimates (and is remembered).
    assert dialog.form.estimate().speed.basis == "run"
    assert config.training_value(settings, "speed/resnet18-cpu-32-0-4")
    # Pretend the first part took an hour: the finished run counts it.
    saved["elapsed_s"] = 3600.0
    save_last(out / "last.pt", saved)
    assert not window.training_label.isVisible()
    qtbot.waitUntil(dialog.resume_button.isEnabled, timeout=TIMEOUT)
    assert "interrupted run was found at epoch 1 of 2" in dialog.form.run_label.text()
    assert not dialog.start_button.isEnabled()  # a new run would overwrite it
    assert not dialog.use_button.isEnabled()

    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.resume_button.click()
    result = blocker.args[0]
    assert not result.cancelled and result.epochs_done == 2
    assert "Continuing after epoch 1 of 2" in dialog.log_text()
    assert 3600 < result.elapsed_s < 3600 + 600
    assert result.report["timings"]["elapsed_seconds"] == pytest.approx(result.elapsed_s, abs=5)
    status = dialog.status_label.text()
    assert status.startswith("Finished in 1 h 0 min in all (") and " since resuming): " in status
    assert "Resume the run in" in start_questions[-1] and "1 more epoch of 2" in start_questions[-1]
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert len(dialog.curves.series()["train_acc"]) == 2

    metrics = result.test_metrics
    assert dialog.tabs.currentWidget() is dialog.results
    assert f"Test accuracy {metrics['accuracy'] * 100:.1f} %" in dialog.results.summary.text()
    rows = dialog.results.per_class_rows()
    assert [r[0] for r in rows] == [class_label(n) for n in ("tumor", "stroma", "adipose")]
    assert [r[3] for r in rows] == [f"{c['f1']:.3f}" for c in metrics["per_class"]]
    assert dialog.results.confusion_values() == metrics["confusion_matrix"]
    assert sum(map(sum, dialog.results.confusion_values())) == metrics["n"]
    details = dialog.results.details.text()
    assert "Patches: 40 px at 0.25 µm/px (10 µm of tissue); tiles at 0.25 µm/px" in details
    assert "Note:" not in details and "Note:" not in dialog.log_text()
    # The finished folder is taken: the form points at a new one for the next run.
    assert Path(dialog.form.out_folder) != out

    best = out / "best.safetensors"
    with qtbot.waitSignal(window.model_changed, timeout=TIMEOUT):
        dialog.use_button.click()
    assert window.classifier.fingerprint == load_model(best).fingerprint
    assert window.classifier.class_names == ["tumor", "stroma", "adipose"]
    assert (window.classifier.info.mpp, window.classifier.info.patch_size) == (0.25, 40)
    assert window.model_path == str(best) == config.last_model_path(settings)
    # (How the model is named there belongs to the main window, which is being reworked.)
    assert window.model_label.text().startswith("Model: ")

    # The finished run can be extended: its folder again, Epochs raised, Resume.
    dialog.form.out_edit.setText(str(out))
    qtbot.waitUntil(lambda: dialog.form.earlier_run is not None, timeout=TIMEOUT)
    assert "A finished run of 2 epochs" in dialog.form.run_label.text()
    assert dialog.form.epochs == 2  # the run's own settings are shown
    assert not dialog.resume_button.isEnabled() and not dialog.start_button.isEnabled()
    assert dialog.resume_button.text() == "Extend to 2 Epochs"
    dialog.form.epochs_spin.setValue(3)
    assert dialog.resume_button.isEnabled() and dialog.resume_button.text() == "Extend to 3 Epochs"
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.resume_button.click()
    extended = blocker.args[0]
    assert not extended.cancelled and extended.epochs_done == 3
    assert extended.extensions == [{"from_epochs": 2, "to_epochs": 3, "after_epoch": 2}]
    assert "Continuing after epoch 2 of 3" in dialog.log_text()
    assert [h["epoch"] for h in extended.history] == [1, 2, 3]


def test_curve_redraws_are_coalesced(qtbot):
    curves = TrainingCurves(min_interval_ms=200)
    qtbot.addWidget(curves)
    curves.set_history([], epochs=3)
    drawn = curves.draw_count
    for batch in range(1, 101):
        curves.add_batch_loss(1, batch, 100, 2.0 - batch / 100)
    # A hundred reports right after a draw: none drawn now, one a moment later.
    assert curves.draw_count == drawn
    qtbot.waitUntil(lambda: curves.draw_count == drawn + 1, timeout=2000)
    qtbot.wait(250)
    assert curves.draw_count == drawn + 1
    (line,) = [ln for ln in curves.loss_ax.lines if ln.get_label() == "train, this epoch"]
    assert len(line.get_xdata()) == 100 and line.get_xdata()[-1] == pytest.approx(1.0)
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "train_acc": 0.6, "val_acc": 0.5}]
    curves.set_history(history)  # an epoch ends: drawn at once, its batch trace folded in
    assert curves.series()["batch_loss"] == []
    assert [ln.get_label() for ln in curves.acc_ax.lines] == ["train", "validation"]


def test_closing_the_app_mid_run_stops_cleanly_and_the_run_resumes_later(
    qtbot, make_window, tiles, tmp_path, monkeypatch
):
    gate = EpochGate(monkeypatch)
    window = make_window()
    dialog = window.open_training_dialog()
    out = tmp_path / "run"
    set_up_tiny_run(qtbot, dialog, tiles, out)
    dialog.start()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    # The scale field was left alone: the log says what was assumed, early.
    qtbot.waitUntil(lambda: "Note: The tiles' scale was not given" in dialog.log_text())
    assert "tiles at 0.495 µm/px (assumed)" in dialog.log_text()

    asked = []
    monkeypatch.setattr(window, "ask_yes_no", lambda t, text: asked.append(text) or False)
    assert not window.close()  # the user said no: nothing stops
    assert window.isVisible() and dialog.is_running() and "resumed" in asked[0]

    monkeypatch.setattr(window, "ask_yes_no", lambda t, text: True)
    assert window.close()
    assert not dialog.is_running() and dialog.runner.running_jobs() == []
    saved = load_last(out / "last.pt")  # a whole checkpoint, not a torn one
    assert saved["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # Next start of the app: the interrupted run is offered at once.
    again = make_window().open_training_dialog()
    assert again.form.out_folder == str(out)
    qtbot.waitUntil(again.resume_button.isEnabled, timeout=TIMEOUT)
    assert "epoch 1 of 2" in again.form.run_label.text()
    assert again.form.data_edit.text() == str(tiles)
    assert again.form.epochs_spin.value() == 2 and again.form.image_spin.value() == 32


def _shows_error(dialog, words: str) -> bool:
    return dialog.error_label.isVisible() and words in dialog.error_label.text()


def test_out_of_memory_is_shown_in_the_dialog(qtbot, make_window, tiles, tmp_path, monkeypatch):
    message = "the CUDA device ran out of memory training resnet18 at 32 px with batch size 4"

    def out_of_memory(*args, **kwargs):
        raise DeviceError(message)

    monkeypatch.setattr(training_dialog, "fit", out_of_memory)
    window = make_window()
    dialog = window.open_training_dialog()
    set_up_tiny_run(qtbot, dialog, tiles, tmp_path / "run")
    with qtbot.waitSignal(dialog.run_failed, timeout=TIMEOUT):
        dialog.start_button.click()
    shown = "The CUDA device ran out of memory training resnet18 at 32 px with batch size 4"
    assert dialog.error_label.text() == shown  # a sentence: a capital first letter
    assert _shows_error(dialog, shown)
    assert dialog.error_label.styleSheet() == ERROR_STYLE
    assert f"Error: {shown}" in dialog.log_text()
    assert dialog.status_label.text() == "Stopped by an error."
    wait_ready(qtbot, dialog)
    assert dialog.start_button.isEnabled()  # the folder is still free: try again
    assert window.isVisible()


def test_a_full_disk_stops_the_run_with_a_message_and_an_intact_checkpoint(
    qtbot, make_window, tiles, tmp_path, monkeypatch
):
    real_replace = os.replace
    writes = []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "last.pt":
            writes.append(dst)
            if len(writes) > 1:  # the checkpoint before epoch 1 lands, the next does not
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    dialog = make_window().open_training_dialog()
    out = tmp_path / "run"
    set_up_tiny_run(qtbot, dialog, tiles, out)
    with qtbot.waitSignal(dialog.run_failed, timeout=TIMEOUT):
        dialog.start()
    monkeypatch.undo()
    assert _shows_error(dialog, f"Cannot write {out / 'last.pt'}: the disk is full")
    assert "the disk is full" in dialog.log_text()
    assert load_last(out / "last.pt")["epoch"] == 0
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    qtbot.waitUntil(dialog.resume_button.isEnabled, timeout=TIMEOUT)


def test_results_show_the_scale_and_the_notes(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    metrics = classification_metrics([0, 1, 1], [0, 1, 0], ["tumor", "stroma"])
    scale = {"patch_size": 150, "mpp": 0.495, "patch_microns": 74.25, "tile_mpp": 0.495}
    note = "The tiles' scale was not given, so 0.495 µm/px <the Kather scale> was assumed."
    panel.set_results(metrics, scale={**scale, "mpp_assumed": True}, notes=[note])
    text = panel.details.text()
    assert (
        "Patches: 150 px at 0.495 µm/px (74.25 µm of tissue); tiles at 0.495 µm/px (assumed)"
        in text
    )
    assert "Note: The tiles' scale was not given, so 0.495 µm/px &lt;the Kather scale&gt;" in text
    panel.set_results(metrics, scale={**scale, "mpp_assumed": False})
    assert "(assumed)" not in panel.details.text() and "Note" not in panel.details.text()


# --- nothing starts a run by accident ---------------------------------------------------


def test_enter_starts_nothing(qtbot, make_window, tiles, tmp_path, start_questions):
    dialog = make_window().open_training_dialog()
    set_up_tiny_run(qtbot, dialog, tiles, tmp_path / "run")
    assert dialog.start_button.isEnabled()
    buttons = dialog.findChildren(QPushButton)
    assert dialog.start_button in buttons
    assert not [b.text() for b in buttons if b.isDefault() or b.autoDefault()]
    form = dialog.form
    for widget in (
        dialog,
        dialog.start_button,
        form.data_edit,
        form.out_edit,
        form.epochs_spin,
        form.arch_combo,
        form.data_folder_button,
    ):
        for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            qtbot.keyClick(widget, key)
    assert not dialog.is_running() and start_questions == []
    assert dialog.status_label.text() == "Not started."


def test_start_asks_first_with_an_estimate(qtbot, make_window, tiles, tmp_path, monkeypatch):
    dialog = make_window().open_training_dialog()
    out = tmp_path / "run"
    set_up_tiny_run(qtbot, dialog, tiles, out)
    # The form shows the estimate as the settings change.
    label = dialog.form.estimate_label.text()
    assert label.startswith("About ") and " on this CPU: 2 epochs × 14 training tiles" in label
    assert "resnet18 at 32 px, batch 4 (approximate: " in label and "typical speed" in label
    dialog.form.epochs_spin.setValue(4)
    assert " on this CPU: 4 epochs × 14 training tiles" in dialog.form.estimate_label.text()
    dialog.form.epochs_spin.setValue(2)

    asked = []
    monkeypatch.setattr(dialog, "ask_start", lambda text: asked.append(text) or False)
    dialog.start_button.click()
    assert dialog.start() is None
    assert len(asked) == 2 and not dialog.is_running() and not out.exists()
    assert dialog.status_label.text() == "Not started."
    question = asked[0]
    assert question.startswith(
        "Train resnet18 for 2 epochs (32 px, batch 4) on this CPU, 14 training tiles an epoch?"
    )
    assert re.search(r"\n\nAbout \d+ (s|min)\b.*, plus reading the tiles \(approximate: ", question)
    assert "Cancel stops after the current batch" in question


def test_estimates_scale_with_the_work():
    assert [approx_duration(s) for s in (0.2, 40, 720, 3600, 7800)] == [
        "1 s",
        "40 s",
        "12 min",
        "1 h",
        "2 h 10 min",
    ]
    assert [elapsed_duration(s) for s in (45, 65, 3605, 7830)] == [
        "45 s",
        "1 min 5 s",
        "1 h 0 min",
        "2 h 10 min",
    ]
    speed = typical_speed("resnet50", "cpu", 224)
    assert speed.train == TYPICAL_RATES["cpu"]["resnet50"] and speed.basis == "typical"
    assert typical_speed("resnet50", "cpu", 448).train == pytest.approx(speed.train / 4)
    assert typical_speed("resnet50", "cuda", 224).train > 10 * speed.train
    # The Kather 100k recipe on a CPU: 80,000 training, 4,000 validation, 16,000 test tiles.
    cfg = TrainConfig()
    counts = [12_500] * 8
    assert split_sizes(counts, cfg) == (80_000, 4_000, 16_000)
    assert split_sizes(counts, cfg.replace(limit_per_class=1000)) == (6_400, 320, 1_280)
    est = Estimate.of(cfg, 15, counts, speed, "this CPU")
    assert est.seconds == pytest.approx(15 * (80_000 / 10 + 4_000 / 30) + 16_000 / 30)
    assert est.short == "About 34 h 2 min on this CPU"
    assert est.work == "15 epochs × 80,000 training tiles, resnet50 at 224 px, batch 64"
    assert est.basis.startswith("approximate: 10 images/s, a typical speed")


def test_the_speed_is_measured_on_this_computer(qtbot, make_window, tiles, tmp_path, monkeypatch):
    monkeypatch.setattr(TrainingForm, "measure_speeds", True)
    rng = torch.get_rng_state()
    dialog = make_window().open_training_dialog()
    form = dialog.form
    set_up_tiny_run(qtbot, dialog, tiles, tmp_path / "run")

    def measured():
        est = form.estimate()
        return est is not None and est.speed.basis == "measured"

    qtbot.waitUntil(measured, timeout=TIMEOUT)
    assert not form.measuring()
    text = form.estimate_label.text()
    assert "the speed measured with a few batches on this computer" in text
    assert torch.equal(torch.get_rng_state(), rng)  # the measurement left it alone
    assert form.estimate().speed.train > 0
    form.shutdown()


# --- remembered choices -----------------------------------------------------------------


def test_choices_come_back_in_a_new_dialog(qtbot, settings, tiles):
    first = TrainingDialog(settings)
    qtbot.addWidget(first)
    form = first.form
    form.preset_combo.setCurrentText("best")
    form.arch_combo.setCurrentText("resnet34")
    form.epochs_spin.setValue(7)
    form.batch_spin.setValue(16)
    form.image_spin.setValue(96)
    form.lr_spin.setValue(5e-4)
    form.device_combo.setCurrentText("cpu")
    form.advanced_box.setChecked(True)
    form.optimizer_combo.setCurrentText("sgd")
    form.weight_decay_spin.setValue(0.05)
    form.augment_check.setChecked(False)
    form.tile_spin.setValue(150)
    form.limit_spin.setValue(500)
    form.mpp_spin.setValue(0.25)
    form.data_edit.setText(str(tiles))
    wait_ready(qtbot, first)
    wanted = form.config().replace(out="")
    first.shutdown()
    first.close()

    second = TrainingDialog(settings)
    qtbot.addWidget(second)
    wait_ready(qtbot, second)
    again = second.form
    assert again.config().replace(out="") == wanted
    assert (wanted.preset, wanted.arch, wanted.epochs, wanted.batch_size) == (
        "best",
        "resnet34",
        7,
        16,
    )
    assert (wanted.image_size, wanted.optimizer, wanted.patch_size) == (96, "sgd", 150)
    assert (wanted.limit_per_class, wanted.mpp, wanted.augments) == (500, 0.25, False)
    assert wanted.lr == pytest.approx(5e-4) and wanted.weight_decay == pytest.approx(0.05)
    assert again.advanced_box.isChecked() and again.dataset_ok
    assert again.data_edit.text() == str(tiles)
    second.shutdown()


def test_a_scale_left_alone_stays_assumed_next_time(qtbot, settings):
    first = TrainingDialog(settings)
    qtbot.addWidget(first)
    first.form.epochs_spin.setValue(3)
    first.shutdown()
    second = TrainingDialog(settings)
    qtbot.addWidget(second)
    assert second.form.epochs == 3 and second.form.config().mpp is None
    second.shutdown()


# --- the wheel over the form ------------------------------------------------------------


def test_the_wheel_changes_only_the_focused_field(qtbot, make_window):
    dialog = make_window().open_training_dialog()
    form = dialog.form
    form.advanced_box.setChecked(True)
    form.tile_spin.setValue(150)
    fields = (form.tile_spin, form.epochs_spin, form.lr_spin, form.arch_combo, form.preset_combo)
    before = [form.config()]
    for field in fields:
        assert field.focusPolicy() == Qt.FocusPolicy.StrongFocus
        assert not wheel(field)  # passed on to the scroll area
    assert [form.config()] == before and form.tile_spin.value() == 150

    dialog.activateWindow()
    form.tile_spin.setFocus()
    qtbot.waitUntil(form.tile_spin.hasFocus)
    assert wheel(form.tile_spin)
    assert form.tile_spin.value() == 151


# --- what a cancelled run left ----------------------------------------------------------


def test_cancelled_before_the_first_epoch_ended(
    qtbot, make_window, tiles, tmp_path, monkeypatch, start_questions
):
    gate = EventGate(monkeypatch, lambda e: e.kind == "batch" and e.phase == "train")
    dialog = make_window().open_training_dialog()
    out = tmp_path / "run"
    set_up_tiny_run(qtbot, dialog, tiles, out)
    dialog.start()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.cancel_button.click()
    assert blocker.args[0].epochs_done == 0
    assert load_last(out / "last.pt")["epoch"] == 0
    status = dialog.status_label.text()
    assert status == (
        "Cancelled before the first of 2 epochs was completed. Resume starts the run again "
        "from its first epoch (a new run needs another folder)."
    )
    assert "after epoch 0" not in dialog.log_text()
    assert (
        f"Cancelled: no epoch was completed; resuming from {out / 'last.pt'} starts again at "
        "the first epoch with the same settings." in dialog.log_text()
    )
    qtbot.waitUntil(dialog.resume_button.isEnabled, timeout=TIMEOUT)
    assert "stopped before completing its first epoch" in dialog.form.run_label.text()
    # And so it does.
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.resume_button.click()
    assert "2 more epochs of 2" in start_questions[-1]
    result = blocker.args[0]
    assert not result.cancelled and [h["epoch"] for h in result.history] == [1, 2]
    assert "Continuing after epoch" not in dialog.log_text()


def test_cancelled_while_reading_the_tiles(qtbot, make_window, tmp_path, monkeypatch):
    # More tiles than one decoding chunk (256), so that the reading checks again.
    data = make_tiles(tmp_path / "many", per_class=100, size=16)
    gate = EventGate(monkeypatch, lambda e: e.kind == "load")
    dialog = make_window().open_training_dialog()
    out = tmp_path / "run"
    set_up_tiny_run(qtbot, dialog, data, out)
    dialog.start()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT):
        dialog.cancel()
    assert dialog.status_label.text() == (
        "Cancelled while reading the tiles: nothing was trained or saved. Start begins afresh."
    )
    assert not (out / "last.pt").exists()
    wait_ready(qtbot, dialog)
    assert dialog.start_button.isEnabled() and not dialog.resume_button.isEnabled()
