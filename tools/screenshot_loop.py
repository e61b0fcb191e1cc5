"""README screenshots of labelling and reviewing patches (run under Xvfb).

Opens SLIDE, maps it with MODEL (a trained model: the pictures show its real map and
doubts), then:

- ``labelling.png``: labels a few patches with the number keys and a block with
  Shift+drag and a key, each as the model's own class (the picture shows how labels
  look, not a pathologist's corrections), and leaves a Shift+drag multi-selection;
- ``review.png``: the Review panel, two patches accepted with Enter, the next selected;
- ``review-uncertain.png``: View > Uncertain Only at the panel's threshold, whole slide.

Labels go to a temporary folder, never the user's.

    xvfb-run -a -s "-screen 0 1366x768x24" python tools/screenshot_loop.py MODEL SLIDE OUT \\
        --window-size 1366x768
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from shots import open_window, wait, wait_until

from histoviewer.gui.app import create_application
from histoviewer.labels.store import LABELS_ENV
from histoviewer.mapping.tissue_map import CLASSIFIED


def shift_drag(window, start: QPointF, end: QPointF) -> None:
    """A Shift+left-drag on the view between two level-0 points."""
    view = window.view
    left, shift = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier
    for kind, point, button, buttons in (
        (QEvent.Type.MouseButtonPress, start, left, left),
        (QEvent.Type.MouseMove, end, Qt.MouseButton.NoButton, left),
        (QEvent.Type.MouseButtonRelease, end, left, Qt.MouseButton.NoButton),
    ):
        pos = view.map_from_slide(point)
        global_pos = QPointF(view.viewport().mapToGlobal(pos.toPoint()))
        view.viewportEvent(QMouseEvent(kind, pos, global_pos, button, buttons, shift))


def tissue_block(tmap, rows: int, cols: int) -> tuple[int, int]:
    """The top-left cell of the first rows x cols block of classified patches, in
    reading order from the middle of the slide."""
    done = tmap.state == CLASSIFIED
    for r in range(tmap.rows // 3, tmap.rows - rows):
        for c in range(tmap.cols // 4, tmap.cols - cols):
            if done[r : r + rows, c : c + cols].all():
                return r, c
    raise SystemExit("no block of tissue patches found")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("slide")
    parser.add_argument("out", type=Path)
    parser.add_argument("--window-size", default="1366x768")
    parser.add_argument("--zoom", type=float, default=2.0, help="times the fitted zoom")
    args = parser.parse_args()
    os.environ[LABELS_ENV] = tempfile.mkdtemp(prefix="histoviewer-labels-")
    _app = create_application()
    window, _size, _folder = open_window(args.window_size, "histoviewer-loop-")
    window.ask_proceed = lambda title, text, proceed: True
    window.load_model(args.model)
    wait_until(lambda: window.classifier is not None and not window.is_loading_model(), 120)
    window.open_slide(args.slide)
    window.map_tissue()
    if not wait_until(lambda: not window.is_mapping() and window.tissue_map is not None, 900):
        print("mapping did not finish")
        return 1
    tmap = window.tissue_map
    view = window.view
    r0, c0 = tissue_block(tmap, 4, 7)
    x, y, w, h = tmap.patch_box(r0 + 2, c0 + 3)
    view.set_zoom(view.fit_zoom() * args.zoom, (x + w / 2, y + h / 2))
    wait(500)
    view.setFocus()
    labels = tmap.labels

    def centre(row: int, col: int) -> QPointF:
        bx, by, bw, bh = tmap.patch_box(row, col)
        return QPointF(bx + bw / 2, by + bh / 2)

    def key_of(row: int, col: int):
        return getattr(Qt.Key, f"Key_{int(labels[row, col]) + 1}")

    for col in range(c0, c0 + 4):  # single patches, each its model class
        window.select_patch(r0, col)
        QTest.keyClick(view, key_of(r0, col))
    shift_drag(window, centre(r0 + 1, c0), centre(r0 + 2, c0 + 1))
    QTest.keyClick(view, key_of(r0 + 1, c0))
    shift_drag(window, centre(r0 + 1, c0 + 4), centre(r0 + 2, c0 + 6))  # shown selected
    wait_until(view.fully_loaded, 20)
    wait(800)
    args.out.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(args.out / "labelling.png"))
    print(args.out / "labelling.png", window.statusBar().currentMessage())

    QTest.keyClick(view, Qt.Key.Key_Escape)
    window.review_dock.raise_()
    panel = window.review
    panel.list.setFocus()
    panel.step_to(0)
    for _ in range(2):
        QTest.keyClick(panel.list, Qt.Key.Key_Return)
    wait_until(view.fully_loaded, 20)
    wait(1200)
    window.grab().save(str(args.out / "review.png"))
    print(args.out / "review.png")
    window.uncertain_action.trigger()
    view.fit()
    wait_until(view.fully_loaded, 20)
    wait(1200)
    window.grab().save(str(args.out / "review-uncertain.png"))
    print(args.out / "review-uncertain.png")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
