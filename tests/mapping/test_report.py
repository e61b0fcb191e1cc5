"""The PDF report and the map picture with its legend (histoviewer.mapping.report).

The report's text is read back from the PDF itself (pdf_text: matplotlib's fonts and
their Unicode maps), so these tests see what a reader of the file sees.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pdf_text import info, page_count, page_texts

from histoviewer import __version__
from histoviewer.classes import class_colors, class_names
from histoviewer.mapping import report
from histoviewer.mapping.export import BACKGROUND_COLOR, map_image, png_scale
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap
from histoviewer.slide.mpp import ASSUMED

CREATED = datetime(2025, 3, 4, 14, 5, tzinfo=timezone(timedelta(hours=1)))
FINGERPRINT = "0123456789abcdef" * 4
# Interior cells, row by row: the classes in this order and number; (0, 0) is
# pending, the last row pending and the last column background.
LAYOUT = [("tumor", 25), ("stroma", 20), ("complex", 10), ("lympho", 20), ("empty", 5)]


def known_map(*, complete: bool = True, mpp_source: str = "given") -> TissueMap:
    """10 x 10 patches of 150 px at 0.8 µm/px on a 1450 x 1420 px slide (the last row and
    column of cells are narrower). 75 tissue patches of 150 x 150 px (0.0144 mm²): tumour 25, stroma
    20, complex stroma 10, lymphocytes 20 (so a tumour-stroma ratio of 30 / 55 =
    54.5 %, stroma-high, and lymphocytes 20 / 75 = 26.7 % of tissue), 5 empty glass;
    the last column background, the last row and (0, 0) pending.
    """
    grid = PatchGrid(rows=10, cols=10, patch_size=150, stride=150, extent=(1450, 1420))
    tmap = TissueMap.empty(
        grid,
        class_names(),
        class_colors(),
        mpp=0.8,
        slide={"path": "/data/case 7/CRC-0042.svs", "mpp_source": mpp_source},
        model={
            "name": "kather-resnet50-v3",
            "arch": "resnet50",
            "fingerprint": FINGERPRINT,
            "input_size": 224,
            "patch_size": 150,
            "mpp": 0.495,
            "test_accuracy": 0.925,
        },
    )
    cells = [(r, c) for r in range(9) for c in range(9) if (r, c) != (0, 0)]
    names = [name for name, count in LAYOUT for _ in range(count)]
    for (r, c), name in zip(cells, names, strict=True):
        tmap.probs[r, c] = 0.01
        tmap.probs[r, c, tmap.class_names.index(name)] = 0.9
        tmap.state[r, c] = CLASSIFIED
    tmap.state[:, 9] = BACKGROUND
    if complete:
        tmap.state[9, :9] = BACKGROUND
        tmap.state[0, 0] = BACKGROUND
    tmap.complete = complete
    tmap.elapsed = 83.0
    tmap.settings = {
        "stride_model_px": 150,
        "skip_background": True,
        "min_tissue": 0.05,
        "tta": False,
        "precision": "auto",
        "backend": "auto",
        "device": "cuda:0",
        "ran_with": "torch bf16",
    }
    return tmap


def read_report(tmp_path, tmap, **kwargs) -> tuple[bytes, list[str]]:
    path = tmp_path / "report.pdf"
    report.write_report(tmap, path, created=CREATED, **kwargs)
    data = path.read_bytes()
    return data, ["\n".join(lines) for lines in page_texts(data)]


@pytest.fixture(scope="module")
def complete_report(tmp_path_factory):
    thumbnail = np.full((142, 145, 3), 230, dtype=np.uint8)
    return read_report(tmp_path_factory.mktemp("report"), known_map(), thumbnail=thumbnail)


def test_page_one_summarises_the_map(complete_report):
    data, (first, _) = complete_report
    assert page_count(data) == 2
    assert first.count(report.RESEARCH_ONLY) == 2  # under the title and in the footer
    assert "HistoViewer tissue map report" in first
    assert "CRC-0042.svs" in first
    assert "2025-03-04 14:05 (UTC+01:00)" in first
    assert "1.08 mm² (75 patches)" in first  # 75 whole cells of 120 x 120 µm
    assert "54.5 % stroma, stroma-high (55 tumour and stroma patches)" in first
    assert "26.7 % of tissue (of 75 tissue patches)" in first
    assert "Definition: stroma / (tumour + stroma) by area" in first
    assert "most stroma-rich field" in first
    # The legend: one row per class with patches, area and share of the tissue.
    rows = first.splitlines()
    i = rows.index("Tumour epithelium")
    assert rows[i + 1 : i + 4] == ["25", "0.360", "33.3 %"]
    i = rows.index("Empty (no tissue)")
    assert rows[i + 1 : i + 4] == ["5", "0.072", "not tissue"]
    i = rows.index("Background (glass, skipped)")
    assert rows[i + 1] == str(10 + 9 + 1)
    assert "Not mapped (pending)" not in first
    assert "Partial map" not in first
    assert "Assumed scale" not in first
    assert "no slide thumbnail" not in first
    assert "page 1 of 2" in first


def test_page_two_records_how_the_map_was_made(complete_report):
    data, (_, second) = complete_report
    for text in (
        "kather-resnet50-v3",
        "resnet50",
        FINGERPRINT[:16],
        "92.5 %",
        "150 px at 0.495 µm/px (74 µm square), resized to 224 px for the network",
        "/data/case 7/CRC-0042.svs",
        "1,450 x 1,420 px",
        "1.16 x 1.14 mm",
        "0.8 µm/px, given by the user (given)",
        "150 model px = 150 level-0 px, no overlap",
        "on: patches under 5 % tissue skipped as glass",
        "torch bf16 on cuda:0",  # what "auto" came to
        "10 x 10 = 100 patches of 150 level-0 px",
        "1 min 23 s",
        f"HistoViewer {__version__}",
        "2025-03-04 14:05 (UTC+01:00)",
        "For research use only. Not for diagnostic use.",
        "page 2 of 2",
    ):
        assert text in second, text
    assert FINGERPRINT[:17] not in second
    assert "not recorded" not in second
    meta = info(data)
    assert meta["Title"] == "HistoViewer tissue map report: CRC-0042.svs"
    assert meta["Author"] == f"HistoViewer {__version__}"
    assert meta["CreationDate"].startswith("D:20250304130500")  # 14:05 at UTC+1


def test_partial_map_and_assumed_scale_are_flagged(tmp_path):
    tmap = known_map(complete=False, mpp_source=ASSUMED)
    tmap.warnings = [{"kind": "stain", "message": "The slide does not look like H&E."}]
    _, (first, second) = read_report(tmp_path, tmap)
    # 80 classified, 10 pending (the last row and (0, 0)), the last column background.
    assert "Partial map: 80 of 90 tissue patches classified" in first
    assert "Not mapped (pending)" in first
    assert "Assumed scale" in first
    assert "0.8 µm/px, ASSUMED" in second
    assert "Warning: The slide does not look like H&E." in first
    assert "The slide does not look like H&E." in second
    assert "no slide thumbnail" in first
    assert "no (partial map)" in second


def test_a_map_made_before_settings_were_recorded_says_so(tmp_path):
    tmap = known_map()
    tmap.settings = {}
    tmap.model["test_accuracy"] = None
    _, (_, second) = read_report(tmp_path, tmap)
    lines = second.splitlines()
    for key in ("Test accuracy", "Background skipping", "Test-time augmentation", "Precision"):
        assert lines[lines.index(key) + 1] == "not recorded", key
    assert "150 model px = 150 level-0 px" in second  # the grid still knows its stride
    assert "before HistoViewer recorded its settings" in second


def test_regions_are_reported_with_their_quantities(tmp_path):
    tmap = known_map()
    top = np.zeros((10, 10), dtype=bool)
    top[:4] = True  # tumour 25 patches, stroma 10, 5 background
    everything = np.ones((10, 10), dtype=bool)
    _, (first, second) = read_report(
        tmp_path, tmap, regions=[("Top rows", top), ("Whole slide", everything)]
    )
    assert "2 regions measured as well: see page 2." in first
    lines = second.splitlines()
    i = lines.index("Top rows")
    assert lines[i + 1 : i + 5] == ["35 of 40", "0.50 mm²", "28.6 % stroma-low", "0.0 %"]
    i = lines.index("Whole slide")
    assert lines[i + 1 : i + 5] == ["75 of 100", "1.08 mm²", "54.5 % stroma-high", "26.7 %"]


def test_a_region_of_another_shape_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        report.write_report(
            known_map(), tmp_path / "r.pdf", regions=[("bad", np.ones((3, 3), bool))]
        )
    assert not (tmp_path / "r.pdf").exists()


@pytest.mark.parametrize("fails", ["drawing", "saving"])
def test_a_failure_while_rendering_leaves_the_old_report(tmp_path, monkeypatch, fails):
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "report.pdf"
    path.write_bytes(b"the report of yesterday")

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    if fails == "drawing":
        monkeypatch.setattr(report, "_record_page", broken)
    else:  # page 1 is saved, page 2 fails
        save = PdfPages.savefig
        saved = []

        def save_once(self, *args, **kwargs):
            if saved:
                broken()
            saved.append(save(self, *args, **kwargs))

        monkeypatch.setattr(PdfPages, "savefig", save_once)
    with pytest.raises(RuntimeError, match="drawing failed"):
        report.write_report(known_map(), path, created=CREATED)
    assert path.read_bytes() == b"the report of yesterday"
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]


def test_the_overlay_paints_each_pixel_with_the_cell_under_it():
    # Overlapping patches: the first cells are 125 px, the inner ones 100 px and the
    # last ones what is left of the slide.
    grid = PatchGrid(rows=6, cols=7, patch_size=150, stride=100, extent=(745, 590))
    tmap = TissueMap.empty(grid, class_names(), class_colors(), mpp=0.5)
    rng = np.random.default_rng(0)
    tmap.probs[...] = rng.random(tmap.probs.shape)
    tmap.state[...] = rng.choice([0, 1, 1, 1, 2], size=tmap.state.shape)
    overlay = report._overlay(tmap, None, alpha=0.5)
    h, w = overlay.shape[:2]
    assert w / h == pytest.approx(745 / 590, rel=0.01)
    colors = map_image(tmap)
    for y, x in zip(rng.integers(0, h, 3000), rng.integers(0, w, 3000), strict=True):
        row, col = tmap.patch_at((x + 0.5) * 745 / w, (y + 0.5) * 590 / h)
        assert tuple(overlay[y, x, :3]) == tuple(colors[row, col])
        assert overlay[y, x, 3] == (128 if tmap.state[row, col] == CLASSIFIED else 0)


def test_map_legend_image_keeps_the_map_and_names_every_colour():
    tmap = known_map(complete=False)
    image = report.map_legend_image(tmap)
    k = png_scale(tmap.rows, tmap.cols)
    picture = np.repeat(np.repeat(map_image(tmap), k, axis=0), k, axis=1)
    mh, mw = picture.shape[:2]
    assert image.dtype == np.uint8 and image.shape[2] == 3
    np.testing.assert_array_equal(image[:mh, :mw], picture)
    assert image.shape[1] > mw and image.shape[0] >= mh  # the panel is on the right
    panel = image[:, mw:]
    for color in [*tmap.class_colors, BACKGROUND_COLOR]:
        assert np.all(panel == color, axis=-1).sum() >= 100, color  # a swatch
    assert (panel.max(axis=-1) < 80).sum() > 500  # dark text


def test_map_legend_image_goes_below_a_wide_map():
    tmap = known_map()
    wide = PatchGrid(rows=2, cols=10, patch_size=150, stride=150, extent=(1500, 300))
    flat = TissueMap.empty(wide, tmap.class_names, tmap.class_colors, mpp=1.0)
    flat.probs[0] = tmap.probs[0]
    flat.probs[1] = tmap.probs[1]
    flat.state[:] = tmap.state[:2]
    image = report.map_legend_image(flat)
    k = png_scale(2, 10)
    picture = np.repeat(np.repeat(map_image(flat), k, axis=0), k, axis=1)
    np.testing.assert_array_equal(image[: 2 * k, : 10 * k], picture)
    assert image.shape[0] > 2 * k  # the legend lies below, nothing on the right
    assert image.shape[1] == 10 * k or np.all(image[: 2 * k, 10 * k :] == 255)
    below = image[2 * k :]
    assert np.all(below == tmap.class_colors[0], axis=-1).sum() >= 100
