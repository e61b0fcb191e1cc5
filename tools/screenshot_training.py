"""Screenshots of Model > Train New Model (run under Xvfb), for the README.

Trains a small ResNet-18 in the dialog on TILES (64 px input, LIMIT tiles per class,
EPOCHS epochs, on the CPU) and saves into OUT_DIR:

- ``training-question-<size>.png``: Start asks first, with the estimate;
- ``training-running-<size>.png``: the run half-way (curves, log, speed);
- ``training-done-<size>.png``: the finished run's test results.

With ``--folds K`` the run also tests on unseen specimens (a K-fold cross-validation by
specimen; the tiles' names must carry their specimen, as the Kather 2016 tiles' do), and
two more are saved:

- ``training-form-unseen-<size>.png``: the form with the choice and its estimate;
- ``training-unseen-<size>.png``: the results switched to the unseen specimens.

    xvfb-run -a -s "-screen 0 1366x768x24" python tools/screenshot_training.py TILES OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QScrollArea
from shots import open_window, wait, wait_until

from histoviewer.gui.app import create_application


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiles")
    parser.add_argument("out", type=Path)
    parser.add_argument("--window-size", default="1366x768")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit", type=int, default=100, help="tiles per class")
    parser.add_argument(
        "--folds", type=int, default=0, help="also test on unseen specimens, with K folds"
    )
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    _app = create_application()
    window, size, folder = open_window(args.window_size, "histoviewer-training-")
    args.out.mkdir(parents=True, exist_ok=True)

    dialog = window.open_training_dialog()
    dialog.move(0, 0)
    form = dialog.form
    form.data_edit.setText(args.tiles)
    form.out_edit.setText(str(folder / "run"))
    form.arch_combo.setCurrentText("resnet18")
    form.epochs_spin.setValue(args.epochs)
    form.batch_spin.setValue(32)
    form.image_spin.setValue(args.image_size)
    form.advanced_box.setChecked(True)
    form.limit_spin.setValue(args.limit)
    if args.folds:
        form.unseen_check.setChecked(True)
        form.folds_spin.setValue(args.folds)
    wait_until(lambda: dialog.start_button.isEnabled(), 120)
    wait_until(lambda: not form.measuring(), 60)
    if args.folds:
        # The choice, the specimens found and the estimate of all the trainings in view.
        scroll = next(w for w in dialog.findChildren(QScrollArea) if w.widget() is form)
        scroll.ensureWidgetVisible(form.estimate_label)
        wait(300)
        dialog.grab().save(str(args.out / f"training-form-unseen-{size}.png"))

    def answer() -> None:  # the real question box: photographed, then Start
        box = QApplication.activeModalWidget()
        QApplication.primaryScreen().grabWindow(0).save(
            str(args.out / f"training-question-{size}.png")
        )
        if isinstance(box, QMessageBox):
            start = next(b for b in box.buttons() if b.text().replace("&", "") == "Start")
            start.click()

    QTimer.singleShot(800, answer)
    dialog.start()
    half = max(1, args.epochs // 2)
    wait_until(lambda: len(dialog.curves.series()["val_loss"]) >= half, 900)
    QApplication.processEvents()
    dialog.grab().save(str(args.out / f"training-running-{size}.png"))
    wait_until(lambda: not dialog.is_running(), 900)
    dialog.tabs.setCurrentWidget(dialog.results)
    wait(500)
    dialog.grab().save(str(args.out / f"training-done-{size}.png"))
    if args.folds:
        dialog.results.unseen_button.click()
        wait(300)
        dialog.grab().save(str(args.out / f"training-unseen-{size}.png"))
    print(dialog.status_label.text())
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
