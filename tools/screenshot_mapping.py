"""Screenshots of view-first mapping in the viewer (run under Xvfb), and its timing.

Writes a synthetic 5000 x 5000 px slide, loads a randomly initialised ResNet-50
(224 px input, like the Kather models) on the CPU, then saves into OUT_DIR:

- ``select-<size>.png``: Map Region with the rectangle being dragged;
- ``mapping-<size>.png``: the region being mapped (progress in the status bar);
- ``partial-<size>.png``: the partial map after Cancel (its note in the Map panel);
- ``view-first-<size>.png``: Map Tissue zoomed into a corner, a few seconds in.

and prints the seconds from Map Tissue to the first patches painted in view.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot_mapping.py OUT_DIR \\
        --window-size 1600x1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from shots import open_window, wait, wait_until

from histoviewer.gui.app import create_application
from histoviewer.model import Classifier, ModelInfo, build_network
from histoviewer.slide.synthetic import write_strip_tiff


def mouse(window, kind: QEvent.Type, pos: QPointF, held: bool) -> None:
    viewport = window.view.viewport()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    button = none if kind == QEvent.Type.MouseMove else left
    buttons = left if held else none
    global_pos = QPointF(viewport.mapToGlobal(pos.toPoint()))
    event = QMouseEvent(kind, pos, global_pos, button, buttons, Qt.KeyboardModifier.NoModifier)
    window.view.viewportEvent(event)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--window-size", default="1366x768")
    args = parser.parse_args()
    _app = create_application()  # kept alive until the end
    window, size, folder = open_window(args.window_size, "histoviewer-shots-")
    window.ask_proceed = lambda title, text, proceed: True
    slide = write_strip_tiff(folder / "slide.tif", width=5000, height=5000, seed=1)
    torch.manual_seed(0)
    info = ModelInfo.recipe(arch="resnet50", name="resnet50-random")
    classifier = Classifier.from_network(build_network("resnet50", info.num_classes), info)
    window.set_classifier(classifier)
    window.open_slide(slide)
    args.out.mkdir(parents=True, exist_ok=True)
    wait(1500)

    # Map Region: drag a rectangle over part of the tissue.
    view = window.view
    view.set_zoom(view.fit_zoom() * 2)
    view.center_on(3200, 3000)
    wait(1000)
    window.map_region()
    start, end = view.map_from_slide(QPointF(2500, 2300)), view.map_from_slide(QPointF(3900, 3500))
    mouse(window, QEvent.Type.MouseButtonPress, start, True)
    mouse(window, QEvent.Type.MouseMove, (start + end) / 2, True)
    mouse(window, QEvent.Type.MouseMove, end, True)
    wait(300)
    window.grab().save(str(args.out / f"select-{size}.png"))
    mouse(window, QEvent.Type.MouseButtonRelease, end, False)
    wait(1500)
    window.grab().save(str(args.out / f"mapping-{size}.png"))
    window.cancel_mapping()
    wait_until(lambda: not window.is_mapping(), 30)
    wait(500)
    window.close_slide()  # reopened: the partial map comes back from the cache
    window.open_slide(slide)
    view.set_zoom(view.fit_zoom() * 2)
    view.center_on(3200, 3000)
    wait(1500)
    window.grab().save(str(args.out / f"partial-{size}.png"))

    # Map Tissue zoomed into a corner: time to the first patches painted in view.
    window.close_slide()
    for path in window.cache.root.rglob("*.npz"):
        path.unlink()
    window.open_slide(slide)
    view.set_zoom(view.fit_zoom() * 3)
    view.center_on(4200, 4200)
    wait(1500)
    area = view.visible_rect()
    painted: list[float] = []

    def on_batch(job_id, batch) -> None:
        if painted or not hasattr(batch, "probs"):  # the glass found first is not painted
            return
        for r, c in zip(batch.rows.tolist(), batch.cols.tolist(), strict=True):
            x, y, w, h = window.tissue_map.patch_box(r, c)
            if area.contains(QPointF(x + w / 2, y + h / 2)):
                view.viewport().repaint()  # painted now, not at the next idle moment
                painted.append(time.perf_counter())
                return

    window.mapping.runner.partial.connect(on_batch)
    t0 = time.perf_counter()
    window.map_tissue()
    wait_until(lambda: bool(painted), 60)
    first = painted[0] - t0 if painted else float("nan")
    wait(3000)
    window.grab().save(str(args.out / f"view-first-{size}.png"))
    print(f"first patches painted in view: {first:.2f} s after Map Tissue ({size})")
    print(f"progress: {window.progress_label.text()}")
    window.cancel_mapping()
    wait_until(lambda: not window.is_mapping(), 30)
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
