"""Quantities: tissue area, shares of tissue, tumour-stroma ratio, lymphocyte share,
in the summary, the CSV's header and the exports' names."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

from histoviewer.classes import class_colors, class_names
from histoviewer.mapping.export import (
    FORMATS,
    export_all,
    export_csv,
    export_geojson,
    export_name,
    geojson_dict,
    header_lines,
    slide_stem,
    summarize,
)
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.quantities import quantities, quantity_lines
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

#: Patches per class in the known map (row-major, after 10 background, 5 pending).
COUNTS = {"tumor": 30, "stroma": 20, "complex": 10, "lympho": 15, "debris": 0, "mucosa": 5}
COUNTS |= {"adipose": 0, "empty": 10}
MPP = 0.5
STRIDE = 200  # level-0 px: a cell is 100 x 100 µm = 0.01 mm²
CELL_MM2 = 0.01


def known_map() -> TissueMap:
    """A 10 x 10 map of whole cells: 90 classified as COUNTS says, 5 background, 5 pending."""
    grid = PatchGrid(rows=10, cols=10, patch_size=STRIDE, stride=STRIDE, extent=(2000, 2000))
    tmap = TissueMap.empty(
        grid,
        class_names(),
        class_colors(),
        mpp=MPP,
        slide={"path": "/slides/case 7.svs", "mpp_source": "read from the file"},
        model={"name": "kather-r18", "fingerprint": "cd" * 32, "test_accuracy": 0.884},
    )
    tmap.settings = {"stride_model_px": 150, "skip_background": True, "min_tissue": 0.05}
    tmap.settings |= {"device": "cpu", "ran_with": "onnxruntime fp32"}
    names = class_names()
    order = [names.index(n) for n, k in COUNTS.items() for _ in range(k)]
    flat_probs = tmap.probs.reshape(-1, len(names))
    flat_state = tmap.state.reshape(-1)
    for i, label in enumerate(order):
        p = np.full(len(names), 0.02, dtype=np.float32)
        p[label] = 1 - 0.02 * (len(names) - 1)
        flat_probs[i] = p
        flat_state[i] = CLASSIFIED
    flat_state[90:95] = BACKGROUND
    tmap.complete = False
    return tmap


def test_quantities_of_a_map_with_known_counts():
    q = quantities(known_map())
    assert q.patches == 100 and q.classified == 90
    assert q.tissue_patches == 80  # the 10 "empty" patches are glass, not tissue
    assert q.glass_patches == 10 and q.background_patches == 5 and q.pending_patches == 5
    assert q.tissue_area_mm2 == pytest.approx(80 * CELL_MM2)
    shares = {c.name: c.share for c in q.classes}
    assert shares["tumor"] == pytest.approx(30 / 80)
    assert shares["lympho"] == pytest.approx(15 / 80)
    assert shares["empty"] is None
    assert q.share("stroma").patches == 20
    assert q.share("stroma").area_mm2 == pytest.approx(20 * CELL_MM2)
    # (20 simple + 10 complex stroma) / (30 tumour + 30 stroma)
    assert q.tumour_stroma_ratio.value == pytest.approx(0.5)
    assert q.tumour_stroma_ratio.patches == 60
    assert q.stroma_category == "stroma-low"  # high only above 50 %
    assert q.lymphocyte_share.value == pytest.approx(15 / 80)
    assert q.lymphocyte_share.patches == 80
    assert not q.complete


def test_shares_are_of_area_so_edge_cells_count_what_lies_on_the_slide():
    # Two columns: the second cell is cut by the slide's edge to a quarter of the first.
    grid = PatchGrid(rows=1, cols=2, patch_size=100, stride=100, extent=(125, 100))
    tmap = TissueMap.empty(grid, class_names(), class_colors(), mpp=1.0)
    tmap.state[:] = CLASSIFIED
    tmap.probs[0, 0] = np.eye(8)[0]  # tumour
    tmap.probs[0, 1] = np.eye(8)[1]  # stroma
    q = quantities(tmap)
    areas = tmap.cell_areas_mm2()[0]
    assert areas[0] > areas[1]
    assert q.tumour_stroma_ratio.value == pytest.approx(areas[1] / areas.sum())


def test_a_region_counts_only_its_cells():
    tmap = known_map()
    mask = np.zeros(tmap.state.shape, dtype=bool)
    mask[0, :] = True  # the first 10 patches: all tumour
    mask[3, :5] = True  # patches 30-34: stroma
    q = quantities(tmap, mask)
    assert q.patches == 15 and q.tissue_patches == 15
    assert q.tumour_stroma_ratio.value == pytest.approx(5 / 15)
    assert q.lymphocyte_share.value == pytest.approx(0.0)
    with pytest.raises(ValueError, match="does not fit"):
        quantities(tmap, mask[:5])


def test_ratios_say_why_they_cannot_be_measured():
    tmap = known_map()
    tmap.state[:] = BACKGROUND
    q = quantities(tmap)
    assert (
        q.tumour_stroma_ratio.value is None and "no tumour or stroma" in q.tumour_stroma_ratio.note
    )
    assert q.lymphocyte_share.value is None
    assert q.stroma_category is None
    assert any("not measurable" in line for line in quantity_lines(q))
    other = TissueMap.empty(
        PatchGrid(rows=1, cols=1, patch_size=10, stride=10), ["a", "b"], [(0, 0, 0)] * 2, mpp=1.0
    )
    assert "no tumor" in quantities(other).tumour_stroma_ratio.note


def test_summary_records_quantities_regions_settings_and_version():
    tmap = known_map()
    mask = np.zeros(tmap.state.shape, dtype=bool)
    mask[0, :] = True
    data = json.loads(json.dumps(summarize(tmap, [("front", mask)])))
    q = data["quantities"]
    assert q["tissue_area_mm2"] == pytest.approx(0.8)
    assert q["tumour_stroma_ratio"]["value"] == pytest.approx(0.5)
    assert q["tumour_stroma_ratio"]["patches"] == 60
    assert "stroma / (tumour + stroma)" in q["tumour_stroma_ratio"]["definition"]
    assert q["lymphocyte_share"]["value"] == pytest.approx(0.1875)
    shares = {c["name"]: c["share_of_tissue"] for c in q["classes"]}
    assert shares["tumor"] == pytest.approx(0.375) and shares["empty"] is None
    assert data["regions"][0]["name"] == "front"
    assert data["regions"][0]["quantities"]["tissue_patches"] == 10
    assert data["settings"]["skip_background"] is True
    assert data["model"]["fingerprint"] == "cd" * 32
    from histoviewer import __version__

    assert data["software"] == {"name": "HistoViewer", "version": __version__}


def test_csv_header_gives_the_quantities_and_settings(tmp_path):
    tmap = known_map()
    lines = header_lines(tmap)
    assert (
        "settings: stride 150 model px, background skipped (tissue >= 5 %), "
        "ran with onnxruntime fp32 on cpu"
    ) in lines
    assert "tissue: 0.80 mm² (80 patches)" in lines
    assert "tumour-stroma ratio: 50.0 % stroma, stroma-low (60 tumour and stroma patches)" in lines
    # 15 / 80 = 18.75 %: either rounding of the summed cell areas will do.
    assert any(
        line.startswith("lymphocytes: 18.") and line.endswith(" % of tissue (of 80 tissue patches)")
        for line in lines
    )
    path = tmp_path / "m.csv"
    export_csv(tmap, path)
    text = path.read_text(encoding="utf-8").splitlines()
    assert "# tumour-stroma ratio: 50.0 % stroma, stroma-low (60 tumour and stroma patches)" in text
    rows = list(csv.reader(line for line in text if not line.startswith("#")))
    assert len(rows) == 101  # the table still reads with comment="#"


def test_old_maps_say_their_settings_were_not_recorded():
    tmap = known_map()
    tmap.settings = {}
    assert any(line.startswith("settings: not recorded") for line in header_lines(tmap))


def test_compressed_geojson_holds_the_same_collection(tmp_path):
    tmap = known_map()
    plain, packed = tmp_path / "m.geojson", tmp_path / "m.geojson.gz"
    export_geojson(tmap, plain)
    export_geojson(tmap, packed)
    raw = gzip.decompress(packed.read_bytes())
    assert raw == plain.read_bytes()
    assert json.loads(raw) == json.loads(json.dumps(geojson_dict(tmap)))
    assert len(json.loads(raw)["features"]) == 90
    assert packed.stat().st_size < plain.stat().st_size / 4


def test_exports_are_named_alike_everywhere(tmp_path):
    tmap = known_map()
    assert slide_stem(tmap) == "case 7"
    written = export_all(tmap, tmp_path, slide_stem(tmap), ["geojson.gz", "csv", "summary"])
    assert {p.name for p in written.values()} == {
        "case 7.geojson.gz",
        "case 7.csv",
        "case 7.summary.json",
    }
    assert export_name("a", "report") == "a.report.pdf"
    assert export_name("a", "classes-tiff") == "a.classes.ome.tif"
    assert len(set(FORMATS.values())) == len(FORMATS)


def test_a_map_records_how_it_was_made_and_keeps_it(classifier, tissue_slide, tmp_path):
    from histoviewer.mapping.engine import map_slide

    tmap = map_slide(tissue_slide, classifier, stride=100, skip_background=False, precision="fp32")
    expected = {
        "stride_model_px": 100,
        "skip_background": False,
        "min_tissue": pytest.approx(tmap.settings["min_tissue"]),
        "tta": False,
        "precision": "fp32",
        "backend": "auto",
        "device": "cpu",
        "ran_with": tmap.settings["ran_with"],  # torch or onnxruntime, as this CPU chooses
    }
    assert tmap.settings == expected
    assert tmap.settings["ran_with"] in ("torch fp32", "onnxruntime fp32")
    tmap.save(tmp_path / "m.npz")
    assert TissueMap.load(tmp_path / "m.npz").settings == expected
    assert summarize(tmap)["settings"]["stride_model_px"] == 100


def test_regions_drawn_in_qupath_become_masks_over_the_cells():
    from histoviewer.labels.geojson import regions_from_geojson

    tmap = known_map()  # 10 x 10 cells of 200 px
    square = [[0, 0], [400, 0], [400, 400], [0, 400], [0, 0]]  # 2 x 2 cells
    hole = [[150, 150], [250, 150], [250, 250], [150, 250], [150, 150]]  # no centre
    ring = [[1000, 1000], [2000, 1000], [2000, 2000], [1000, 2000], [1000, 1000]]
    inner = [[1200, 1200], [1800, 1200], [1800, 1800], [1200, 1800], [1200, 1200]]
    data = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [square, hole]},
                "properties": {"name": "front"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring, inner]},
                "properties": {"classification": {"name": "Tumor"}},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [5, 5]},
                "properties": {"name": "a point"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [square]},
                "properties": {"name": "front"},
            },
        ],
    }
    regions = regions_from_geojson(data, tmap)
    assert [name for name, _ in regions] == ["front", "Tumor", "front (2)"]
    front = regions[0][1]
    assert front.sum() == 4 and front[:2, :2].all()
    # A 5 x 5 block of cells minus its inner 3 x 3.
    assert regions[1][1].sum() == 25 - 9 and not regions[1][1][7, 7]


def test_map_with_regions_gives_their_quantities_in_the_summary(tiny_model, tmp_path):
    from mapping_support import he_texture
    from PIL import Image

    from histoviewer import cli

    slide = tmp_path / "s.png"
    Image.fromarray(he_texture(450, 600)).save(slide)
    regions = tmp_path / "r.geojson"
    box = [[0, 0], [300, 0], [300, 150], [0, 150], [0, 0]]
    regions.write_text(
        json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [box]},
                "properties": {"name": "invasive front"},
            }
        )
    )
    out = tmp_path / "out"
    args = ["map", str(slide), "--model", str(tiny_model), "--out", str(out), "--device", "cpu"]
    assert cli.main([*args, "--formats", "summary", "--regions", str(regions)]) == 0
    data = json.loads((out / "s.summary.json").read_text())
    (region,) = data["regions"]
    assert region["name"] == "invasive front"
    assert region["quantities"]["patches"] == 2  # two 150 px patches in 300 x 150


def test_bad_regions_are_refused_before_mapping(tiny_model, tmp_path, capsys):
    from mapping_support import he_texture
    from PIL import Image

    from histoviewer import cli

    slide = tmp_path / "s.png"
    Image.fromarray(he_texture(150, 150)).save(slide)
    empty = tmp_path / "r.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    out = tmp_path / "out"
    args = ["map", str(slide), "--model", str(tiny_model), "--out", str(out), "--device", "cpu"]
    assert cli.main([*args, "--regions", str(tmp_path / "missing.geojson")]) == 1
    assert "missing.geojson does not exist" in capsys.readouterr().err
    assert cli.main([*args, "--regions", str(empty)]) == 1
    assert "--regions holds no annotations" in capsys.readouterr().err
    assert not list(out.glob("s.*"))  # refused before anything was mapped or written
    folder = ["map", str(tmp_path), *args[2:]]  # a folder of slides: a batch
    assert cli.main([*folder, "--regions", str(empty)]) == 1
    assert "--regions is for one slide" in capsys.readouterr().err


def test_map_report_writes_a_pdf_of_the_slide_with_its_numbers(tiny_model, tmp_path):
    from mapping_support import he_texture
    from pdf_text import page_count, page_texts
    from PIL import Image

    from histoviewer import cli

    slide = tmp_path / "case-12.png"
    Image.fromarray(he_texture(450, 600)).save(slide)
    out = tmp_path / "out"
    args = ["map", str(slide), "--model", str(tiny_model), "--out", str(out), "--device", "cpu"]
    assert cli.main([*args, "--formats", "summary", "--report", "--mpp", "0.5"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".map.json")) == [
        "case-12.report.pdf",
        "case-12.summary.json",
    ]
    data = (out / "case-12.report.pdf").read_bytes()
    assert page_count(data) == 2
    text = "\n".join(line for page in page_texts(data) for line in page)
    summary = json.loads((out / "case-12.summary.json").read_text())
    tissue = summary["quantities"]["tissue_area_mm2"]
    assert "case-12.png" in text
    assert "research use only" in text.lower()
    assert f"{tissue:.2f} mm²" in text  # the same figure as the summary's
    assert "0.5 µm/px" in text and "given" in text  # --mpp: the scale and its source
    assert "tiny" in text  # the model's name
