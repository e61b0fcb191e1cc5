"""Screenshots of what a map measures (run under Xvfb), for the README: the Map panel's
quantities with a selected region, one class alone (solo), a probability heatmap, and
page 1 of the report of the same map and region.

Maps SLIDE with MODEL at ``--stride`` model px (overlapping patches give the heatmap
more nodes), then saves into OUT_DIR (``<name>-<size>.png``):

- ``quantities``: the whole slide, a block of patches selected (Shift+drag's result),
  the Map panel scrolled to the "Selected region" quantities;
- ``solo``: only tumour shown;
- ``heatmap``: tumour's probability as a heatmap, zoomed in;
- ``report-page1`` / ``report-page2``: File > Export Report's PDF of the map and
  region, its pages rendered at 110 dpi (the PDF itself is saved beside them).

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot_report.py MODEL SLIDE \\
        OUT_DIR --window-size 1366x768
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from shots import open_window, wait, wait_until

from histoviewer.gui.app import create_application
from histoviewer.mapping import report
from histoviewer.mapping.export import REPORT_THUMBNAIL
from histoviewer.viewer_state import MappingSettings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("slide")
    parser.add_argument("out", type=Path)
    parser.add_argument("--window-size", default="1366x768")
    parser.add_argument("--stride", type=int, default=50, help="model px (default 50)")
    parser.add_argument("--heat-class", default="tumor")
    parser.add_argument(
        "--zoom-at", default="1100,1500", help="level-0 x,y the heatmap view centres on"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _app = create_application()
    window, size, _ = open_window(args.window_size, "hv-shots-report-")
    window.set_mapping_settings(MappingSettings(device="cpu", stride=args.stride))
    window.load_model(args.model)
    if not wait_until(lambda: window.classifier is not None, 120):
        raise SystemExit("the model did not load")
    window.open_slide(args.slide)
    wait(500)
    window.map_tissue()
    if not wait_until(lambda: window.tissue_map is not None and not window.is_mapping(), 900):
        raise SystemExit("mapping did not finish")
    tmap = window.tissue_map
    window.view.fit()
    wait(800)

    # A block of patches in the middle third, as a Shift+drag selects it.
    r0, c0 = tmap.rows // 3, tmap.cols // 3
    block = [(r, c) for r in range(r0, r0 + tmap.rows // 3) for c in range(c0, c0 + tmap.cols // 3)]
    window.labelling.select_cells(block)
    wait(800)
    window.grab().save(str(args.out / f"quantities-{size}.png"))

    pdf = args.out / f"report-{size}.pdf"
    if not window.export_map("report", pdf):
        raise SystemExit("the report export failed")
    mask = np.zeros(tmap.state.shape, dtype=bool)
    for r, c in window.legend.region_cells():
        mask[r, c] = True
    regions = [(f"Selected region ({len(block)} patches)", mask)]
    thumbnail = window.state.slide.thumbnail(REPORT_THUMBNAIL)
    pages = report.preview_pages(tmap, thumbnail=thumbnail, regions=regions, dpi=110)
    for i, page in enumerate(pages, 1):
        Image.fromarray(page).save(args.out / f"report-page{i}-{size}.png")

    window.labelling.clear_selection()
    window.show_only_class(args.heat_class)
    wait(800)
    window.grab().save(str(args.out / f"solo-{size}.png"))

    window.show_heatmap(args.heat_class)
    x, y = (float(v) for v in args.zoom_at.split(","))
    window.view.set_zoom(window.view.fit_zoom() * 3)
    window.view.center_on(x, y)
    wait(1200)
    window.grab().save(str(args.out / f"heatmap-{size}.png"))
    window.show_only_class(None)
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
