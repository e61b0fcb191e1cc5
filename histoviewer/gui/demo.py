"""Try the viewer with no data and no model: ``python -m histoviewer.gui.demo``.

Writes a synthetic H&E-like slide (an uncompressed strip TIFF like the Kather
CRC-Prim-HE slides, 5000 x 5000 px at 0.495 µm/px), builds a small randomly
initialised classifier, opens both in the main window and maps the slide.
The map is meaningless (the model is untrained) but every part of the app works
on it. ``--screenshot PATH`` also selects a patch, saves a picture of the window
and quits; the README's screenshots are made this way (under Xvfb).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QSettings, QTimer

from histoviewer.gui.app import create_application, install_excepthook
from histoviewer.mapping.cache import MapCache
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.patches import read_patches
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap
from histoviewer.model import Classifier, ModelInfo, build_network, preprocess
from histoviewer.slide import SlideReader, open_slide
from histoviewer.slide.synthetic import write_strip_tiff

log = logging.getLogger(__name__)


def demo_classifier(slide: SlideReader, seed: int = 0) -> Classifier:
    """A ResNet-18 with random weights that sees 64 x 64 px inputs: quick on any CPU.

    Its batch-norm statistics are measured on patches of ``slide``, so that its
    random features vary from patch to patch and the map shows several classes
    in patterns that follow the tissue. They are still not tissue types.
    """
    torch.manual_seed(seed)
    info = ModelInfo.recipe(arch="resnet18", input_size=64, name="untrained demo model")
    network = build_network("resnet18", info.num_classes)
    grid = make_grid(slide, info)
    rows = np.linspace(0, grid.rows - 1, min(grid.rows, 12)).round().astype(int)
    cols = np.linspace(0, grid.cols - 1, min(grid.cols, 12)).round().astype(int)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    pixels = read_patches(slide, grid, rr.ravel().tolist(), cc.ravel().tolist())
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    network.train()
    with torch.no_grad():
        network(preprocess(torch.from_numpy(pixels), info))
    return Classifier.from_network(network.eval(), info)


def pick_patch(tmap: TissueMap) -> tuple[int, int]:
    """A classified patch near the middle of the map, for the Patch panel."""
    cells = np.argwhere(tmap.state == CLASSIFIED)
    middle = np.array([tmap.rows / 2, tmap.cols / 2])
    row, col = cells[np.argmin(((cells - middle) ** 2).sum(axis=1))]
    return int(row), int(col)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m histoviewer.gui.demo", description=__doc__)
    parser.add_argument("--size", type=int, default=5000, help="slide width and height in px")
    parser.add_argument("--folder", type=Path, help="where to write the slide (default: temp)")
    parser.add_argument(
        "--screenshot",
        type=Path,
        help="save a window picture here (and a zoomed one beside it, -zoom) and quit",
    )
    parser.add_argument("--window-size", default="1500x950", help="window size, WxH")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    folder = args.folder or Path(tempfile.mkdtemp(prefix="histoviewer-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    slide = folder / "CRC-synthetic-HE.tif"
    if not slide.exists():
        log.info("writing %s", slide)
        write_strip_tiff(slide, width=args.size, height=args.size)

    app = create_application()
    install_excepthook()
    from histoviewer.gui.mainwindow import MainWindow

    # Private settings and cache: the demo never touches the user's own.
    settings = QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings, MapCache(folder / "cache"), restore_model=False)
    width, height = (int(v) for v in args.window_size.lower().split("x"))
    window.resize(width, height)
    window.show()
    with open_slide(slide) as reader:
        window.set_classifier(demo_classifier(reader))
    window.open_slide(slide)

    def mapped(tmap: TissueMap) -> None:
        if args.screenshot is None:
            return
        row, col = pick_patch(tmap)
        window.select_patch(row, col)
        window.patch_dock.raise_()
        QTimer.singleShot(1500, lambda: save(args.screenshot, zoom_next=(row, col)))

    def save(path: Path, zoom_next: tuple[int, int] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(path)):
            log.error("could not write %s", path)
        log.info("saved %s", path)
        if zoom_next is None:
            window.close()
            return
        x, y, w, h = window.tissue_map.patch_box(*zoom_next)
        window.view.set_zoom(0.6)
        window.view.center_on(x + w / 2, y + h / 2)
        zoomed = path.with_name(f"{path.stem}-zoom{path.suffix}")
        QTimer.singleShot(1500, lambda: save(zoomed))  # tiles of the new level load

    window.mapping_finished.connect(mapped)
    if window.tissue_map is None:
        window.map_tissue()
    else:  # mapped before: the cache brought it back at once
        QTimer.singleShot(0, lambda: mapped(window.tissue_map))
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
