"""Screenshots of every screen of the viewer (run under Xvfb), to look at and for the README.

Opens the viewer at the given window size with MODEL and SLIDE and saves into OUT_DIR
(``<name>-<size>.png``):

- ``empty``: the window before a slide is open;
- ``mapping``: Map Tissue a moment after it started (progress in the status bar);
- ``main``: the finished map, zoomed in, with a patch selected (Patch panel);
- ``model-info``, ``shortcuts``, ``mapping-settings``, ``training``: those dialogs;
- ``region``: Map Region over the middle of the slide (a fresh map), a patch selected;
- ``small``: the window at its minimum size with every panel open.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot_tour.py MODEL SLIDE \\
        OUT_DIR --window-size 1366x768
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QApplication, QWidget
from shots import open_window, wait, wait_until

from histoviewer.gui.app import create_application
from histoviewer.mapping.tissue_map import CLASSIFIED


def save_screen(path: Path) -> None:
    """The whole screen (dialogs included, where they stand over the window)."""
    QApplication.primaryScreen().grabWindow(0).save(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("slide")
    parser.add_argument("out", type=Path)
    parser.add_argument("--window-size", default="1366x768")
    parser.add_argument("--zoom", type=float, default=3.0, help="times the fit zoom for 'main'")
    args = parser.parse_args()
    _app = create_application()
    window, size, _folder = open_window(args.window_size, "histoviewer-tour-")
    window.ask_proceed = lambda title, text, proceed: True
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    def shot(name: str, widget: QWidget | None = None) -> None:
        wait(400)
        path = out / f"{name}-{size}.png"
        if widget is None:
            save_screen(path)
        else:
            widget.grab().save(str(path))
        print(path)

    shot("empty", window)

    window.load_model(args.model)
    wait_until(lambda: window.classifier is not None, 120)
    window.open_slide(args.slide)
    wait(1500)
    window.map_tissue()
    wait(4000)
    shot("mapping", window)
    wait_until(lambda: not window.is_mapping(), 600)
    tmap = window.tissue_map
    classified = np.argwhere(tmap.state == CLASSIFIED)
    row, col = (int(v) for v in classified[len(classified) // 2])
    x, y, w, h = tmap.patch_box(row, col)
    window.view.set_zoom(window.view.fit_zoom() * args.zoom)
    window.view.center_on(x + w / 2, y + h / 2)
    window.select_patch(row, col)
    window.view.cursorMoved.emit(x + w / 2, y + h / 2)
    shot("main", window)

    dialog = window.show_model_info()
    dialog.move(60, 40)
    shot("model-info")
    dialog.close()
    dialog = window.show_shortcuts()
    dialog.move(60, 40)
    shot("shortcuts")
    dialog.close()
    window.edit_mapping_settings()
    wait(300)
    shot("mapping-settings")
    if (settings_dialog := QApplication.activeModalWidget()) is not None:
        settings_dialog.reject()
    dialog = window.open_training_dialog()
    dialog.move(40, 20)
    wait(3000)  # the speed estimate measures a few batches
    shot("training")
    dialog.close()

    # Map Region on a fresh map: the middle third of the slide.
    window.close_slide()
    for path in window.cache.root.rglob("*.npz"):
        path.unlink()
    window.open_slide(args.slide)
    wait(1000)
    sw, sh = window.slide.dimensions
    window.view.fit()
    window.map_tissue_region(sw / 4, sh / 3, sw / 2, sh / 3)
    wait_until(lambda: not window.is_mapping(), 600)
    tmap = window.tissue_map
    classified = np.argwhere(tmap.state == CLASSIFIED)
    window.select_patch(*(int(v) for v in classified[len(classified) // 2]))
    shot("region", window)

    window.resize(window.minimumSizeHint())
    wait(500)
    print("minimum size", window.minimumSizeHint().width(), window.minimumSizeHint().height())
    shot("small", window)
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
