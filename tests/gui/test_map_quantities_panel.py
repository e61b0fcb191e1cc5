"""The Map panel's quantities: shares of tissue, tumour-stroma ratio, lymphocytes, and
the same for the patches selected with Shift+drag."""

from __future__ import annotations

import numpy as np
import pytest

from histoviewer.classes import class_colors, class_names
from histoviewer.gui.legend import LegendPanel, draw_legend, legend_entries
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.quantities import LYMPHOCYTE_DEFINITION, TSR_DEFINITION
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

#: Patches per class, laid out row by row in this order, then background.
COUNTS = {"tumor": 50, "stroma": 20, "complex": 10, "lympho": 15, "empty": 5}
BACKGROUND_PATCHES = 10
ROWS, COLS = 10, 11  # 110 cells: 100 classified, 10 background


def known_map() -> TissueMap:
    """Cells of 200 px at 0.5 µm/px: 0.1 x 0.1 mm, 0.01 mm² each. Tissue: 95 patches
    (0.95 mm²; the 5 empty ones are glass); tumour-stroma ratio (20 + 10) / (50 + 30) =
    37.5 % stroma; lymphocytes 15 / 95 = 15.8 %."""
    grid = PatchGrid(rows=ROWS, cols=COLS, patch_size=200, stride=200)
    names = class_names()
    tmap = TissueMap.empty(grid, names, class_colors(), mpp=0.5)
    labels = [names.index(n) for n, k in COUNTS.items() for _ in range(k)]
    for i, label in enumerate(labels):
        r, c = divmod(i, COLS)
        probs = np.full(len(names), 0.1 / (len(names) - 1), np.float32)
        probs[label] = 0.9
        tmap.probs[r, c] = probs
        tmap.state[r, c] = CLASSIFIED
    for i in range(len(labels), ROWS * COLS):
        tmap.state[divmod(i, COLS)] = BACKGROUND
    return tmap


def cell_of(index: int) -> tuple[int, int]:
    return divmod(index, COLS)


def test_the_class_table_gives_shares_of_the_tissue(qtbot):
    legend = LegendPanel()
    qtbot.addWidget(legend)
    legend.set_map(known_map())
    rows = {label: (n, share, area) for label, n, share, area in legend.row_texts()}
    assert rows["Tumour epithelium"] == ("50", "52.6 %", "0.50 mm²")  # 50 / 95
    assert rows["Simple stroma"] == ("20", "21.1 %", "0.20 mm²")
    assert rows["Lymphocytes"] == ("15", "15.8 %", "0.15 mm²")
    assert rows["Adipose tissue"] == ("0", "0.0 %", "0.00 mm²")
    assert rows["Empty (no tissue)"] == ("5", "–", "0.05 mm²")  # glass: no share
    assert "empty glass excluded" in legend.share_header.toolTip()


def test_the_quantities_block_gives_what_a_pathologist_reports(qtbot):
    legend = LegendPanel()
    qtbot.addWidget(legend)
    assert legend.quantities_block.isHidden()  # no map, no numbers
    legend.set_map(known_map())
    assert not legend.quantities_block.isHidden()
    assert legend.quantities_block.texts() == [
        "Tissue 0.95 mm² · 95 patches",
        "Tumour-stroma ratio 37.5 % stroma · stroma-low · 80 patches",
        "Lymphocytes 15.8 % of tissue · 95 patches",
    ]
    tissue, tsr, lymph = legend.quantities_block.line_labels()
    assert TSR_DEFINITION in tsr.toolTip() and "invasive front" in tsr.toolTip()
    assert LYMPHOCYTE_DEFINITION in lymph.toolTip()
    assert "Empty" in tissue.toolTip()
    q = legend.map_quantities()
    assert q is not None and q.tumour_stroma_ratio.value == pytest.approx(0.375)
    legend.set_map(None)
    assert legend.quantities_block.isHidden() and legend.map_quantities() is None


def test_a_partial_map_says_so_and_a_model_without_stroma_is_not_measured(qtbot):
    legend = LegendPanel()
    qtbot.addWidget(legend)
    tmap = known_map()
    tmap.state[0, :4] = 0  # 4 tumour patches not classified yet
    legend.set_map(tmap, live=True)
    texts = legend.quantities_block.texts()
    assert texts[1] == "Tumour-stroma ratio 39.5 % stroma · stroma-low · 76 patches"
    assert texts[-1] == "Partial 4 patches not classified yet"
    other = TissueMap.empty(PatchGrid(rows=1, cols=2, patch_size=100, stride=100),
                            ["a", "b"], [(0, 0, 0), (9, 9, 9)], mpp=0.5)  # fmt: skip
    other.probs[0, 0] = [0.9, 0.1]
    other.state[0, 0] = CLASSIFIED
    legend.set_map(other)
    assert legend.quantities_block.texts()[1].startswith("Tumour-stroma ratio – (the model has")


def test_a_selected_region_gets_its_own_quantities(qtbot, make_window):
    window = make_window(restore_model=False)
    tmap = known_map()
    window.state.set_map(tmap)
    legend = window.legend
    assert legend.region_block.isHidden() and legend.region_quantities() is None
    # 3 tumour, 1 simple and 2 complex stroma, 2 lymphocyte, 2 empty, 1 background.
    picks = [0, 1, 2, 50, 70, 71, 80, 81, 95, 96, 105]
    window.labelling.select_cells([cell_of(i) for i in picks])
    assert not legend.region_block.isHidden()
    assert legend.region_block.title_text() == "Selected region (11 patches)"
    assert legend.region_block.texts() == [
        "Tissue 0.08 mm² · 8 patches",
        "Tumour-stroma ratio 50.0 % stroma · stroma-low · 6 patches",
        "Lymphocytes 25.0 % of tissue · 8 patches",
    ]
    q = legend.region_quantities()
    assert q is not None and q.background_patches == 1 and q.glass_patches == 2
    assert legend.region_cells() == sorted(cell_of(i) for i in picks)
    # The whole map's numbers stay as they were.
    assert legend.quantities_block.texts()[1].startswith("Tumour-stroma ratio 37.5 %")
    # Adding stroma by Shift+click: the region follows.
    window.labelling.select_cells([cell_of(60)], add=True)
    assert legend.region_block.texts()[1].startswith("Tumour-stroma ratio 57.1 % stroma")
    window.labelling.clear_selection()
    assert legend.region_block.isHidden() and legend.region_quantities() is None
    # One patch is not a region.
    window.labelling.select_cells([cell_of(0)])
    assert legend.region_block.isHidden()
    window.labelling.select_cells([cell_of(0), cell_of(50)])
    assert not legend.region_block.isHidden()
    # Another map: the selection, and its block, go.
    window.state.set_map(known_map())
    assert legend.region_block.isHidden() and legend.region_cells() == []


def test_the_labelling_controller_announces_its_selection(qtbot, make_window):
    window = make_window(restore_model=False)
    window.state.set_map(known_map())
    seen: list[list] = []
    window.labelling.cellsSelected.connect(seen.append)
    window.labelling.select_cells([(0, 0), (0, 1)])
    window.labelling.select_cells([(0, 0), (0, 1)])  # no change: said once
    window.labelling.clear_selection()
    assert seen == [[(0, 0), (0, 1)], []]


def test_exported_legends_leave_glass_without_a_share(qtbot):
    from PySide6.QtGui import QImage, QPainter

    entries = legend_entries(known_map())
    by_name = {e.name: e for e in entries}
    assert by_name["empty"].share is None and by_name["empty"].count == 5
    assert by_name["tumor"].share == pytest.approx(50 / 95)
    image = QImage(400, 300, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    box = draw_legend(painter, 10, 10, entries)
    painter.end()
    assert box.width() > 0 and box.height() > 0
