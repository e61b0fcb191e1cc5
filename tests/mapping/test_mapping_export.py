"""Exports: GeoJSON for QuPath, CSV, PNG, NPZ and the summary."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from mapping_support import COLORS, NAMES, sample_map
from PIL import Image

from histoviewer.mapping.export import (
    BACKGROUND_COLOR,
    PENDING_COLOR,
    export_all,
    export_csv,
    export_geojson,
    export_npz,
    export_png,
    parse_formats,
    png_scale,
    summarize,
    summary_line,
)
from histoviewer.mapping.grid import PatchGrid
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap


def test_geojson_has_one_qupath_tile_per_classified_patch(tmp_path):
    tmap = sample_map()
    path = tmp_path / "m.geojson"
    export_geojson(tmap, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection"
    features = data["features"]
    assert len(features) == tmap.classified_count == 8  # background and pending left out
    seen = set()
    for feature in features:
        assert feature["type"] == "Feature"
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        ring = geometry["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed square
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        x, y = min(xs), min(ys)
        assert max(xs) - x == 150 and max(ys) - y == 150
        row, col = tmap.patch_at(x + 75, y + 75)
        assert tmap.patch_box(row, col) == (x, y, 150, 150)
        assert tmap.state[row, col] == CLASSIFIED
        seen.add((row, col))
        props = feature["properties"]
        assert props["objectType"] == "tile"
        label = int(tmap.labels[row, col])
        assert props["classification"] == {"name": NAMES[label], "color": list(COLORS[label])}
        measured = [props["measurements"][f"{n} probability"] for n in NAMES]
        np.testing.assert_allclose(measured, tmap.probs[row, col], atol=1e-6)
    assert len(seen) == 8


def test_csv_has_a_row_per_patch_and_a_column_per_class(tmp_path):
    tmap = sample_map()
    path = tmp_path / "m.csv"
    export_csv(tmap, path)
    with open(path, newline="", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert header[0] == "# HistoViewer tissue map of /x/slide.tif"
    assert header[1] == "# scale: 0.5 µm/px (given)"
    assert header[2].startswith("# model: m (fingerprint abababababab)")
    rows = list(csv.reader(lines[len(header) :]))
    assert rows[0] == ["row", "col", "x", "y", "width", "height", "class", *NAMES, "uncertainty"]
    body = rows[1:]
    assert len(body) == tmap.rows * tmap.cols
    by_cell = {(int(r[0]), int(r[1])): r for r in body}
    assert by_cell[(0, 2)][2:7] == ["300", "0", "150", "150", "tumor"]
    assert [float(v) for v in by_cell[(0, 2)][7:10]] == pytest.approx([0.7, 0.2, 0.1])
    # Entropy of (0.7, 0.2, 0.1) over log 3.
    assert float(by_cell[(0, 2)][10]) == pytest.approx(0.72985, abs=1e-5)
    assert by_cell[(1, 3)][6:] == ["background", "", "", "", ""]
    assert by_cell[(2, 3)][6:] == ["pending", "", "", "", ""]
    assert by_cell[(2, 0)][6] == "empty"


def test_png_shows_each_patch_in_its_class_colour(tmp_path):
    tmap = sample_map()
    path = tmp_path / "m.png"
    export_png(tmap, path)
    image = np.asarray(Image.open(path).convert("RGB"))
    k = png_scale(3, 4)
    assert k == 32  # 1024 // 4 would be 256: capped
    # The map from the top-left corner, its legend beside it.
    assert image.shape[0] >= 3 * k and image.shape[1] > 4 * k
    centre = lambda r, c: tuple(image[r * k + k // 2, c * k + k // 2])  # noqa: E731
    assert centre(0, 0) == COLORS[0]
    assert centre(1, 1) == COLORS[1]
    assert centre(1, 3) == BACKGROUND_COLOR
    assert centre(2, 0) == COLORS[2]
    assert centre(2, 2) == PENDING_COLOR
    # Nearest neighbour: a cell is one flat colour, no blending at its edges.
    assert len({tuple(p) for p in image[:k, :k].reshape(-1, 3)}) == 1


def test_png_scale_targets_about_1024_px():
    assert png_scale(33, 33) == 31
    assert png_scale(2000, 500) == 1


def test_npz_holds_probabilities_labels_and_coordinates(tmp_path):
    tmap = sample_map()
    path = tmp_path / "m.npz"
    export_npz(tmap, path)
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["probs"], tmap.probs)
        np.testing.assert_array_equal(data["state"], tmap.state)
        np.testing.assert_array_equal(data["labels"], tmap.labels)
        assert data["class_names"].tolist() == NAMES
        assert data["x"].tolist() == [0, 150, 300, 450]
        assert data["y"].tolist() == [0, 150, 300]
    # The export is also a tissue map HistoViewer can open again.
    again = TissueMap.load(path)
    np.testing.assert_array_equal(again.probs, tmap.probs)


def test_summary_counts_fractions_and_areas():
    summary = summarize(sample_map())
    classes = {c["name"]: c for c in summary["classes"]}
    assert classes["tumor"]["count"] == 4 and classes["tumor"]["fraction"] == 0.5
    assert classes["stroma"]["area_mm2"] == pytest.approx(3 * 0.075**2)
    assert (summary["classified"], summary["background"], summary["pending"]) == (8, 1, 3)
    assert summary["patches"] == 12 and summary["complete"] is False
    assert summary["tissue_area_mm2"] == pytest.approx(8 * 0.075**2)
    assert summary_line(sample_map()) == "tumor 50.0 %, stroma 37.5 %, empty 12.5 %"


def test_export_all_writes_every_format_atomically(tmp_path):
    out = tmp_path / "out"
    written = export_all(sample_map(), out, "slide-1", ["png", "csv", "geojson", "npz", "summary"])
    assert set(written) == {"png", "csv", "geojson", "npz", "summary"}
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["slide-1.png", "slide-1.csv", "slide-1.geojson", "slide-1.npz", "slide-1.summary.json"]
    )
    assert json.loads((out / "slide-1.summary.json").read_text())["classified"] == 8


def test_parse_formats():
    assert parse_formats("geojson, CSV,png,csv") == ["geojson", "csv", "png"]
    with pytest.raises(ValueError, match="tiff"):
        parse_formats("png,tiff")
    with pytest.raises(ValueError, match="no export format"):
        parse_formats(" , ")


def _edge_map() -> TissueMap:
    """A 2 x 3 map of a 400 x 260 slide: the last column and row are shifted inward."""
    from histoviewer.mapping.grid import PatchGrid

    grid = PatchGrid(rows=2, cols=3, patch_size=150, stride=150, extent=(400, 260))
    tmap = TissueMap.empty(
        grid, NAMES, COLORS, mpp=0.5, slide={"path": "/x/s.tif", "mpp_source": "Aperio MPP"}
    )
    tmap.probs[:] = [0.6, 0.3, 0.1]
    tmap.state[:] = CLASSIFIED
    return tmap


def test_edge_patches_are_read_inside_the_slide_and_their_cells_end_at_its_edge(tmp_path):
    tmap = _edge_map()
    assert tmap.patch_box(1, 2) == (250, 110, 150, 150)  # what the model saw
    assert tmap.cell_box(1, 2) == (300, 150, 400, 260)  # what the patch stands for
    rings = {}
    export_geojson(tmap, tmp_path / "m.geojson")
    for feature in json.loads((tmp_path / "m.geojson").read_text())["features"]:
        ring = feature["geometry"]["coordinates"][0]
        rings[feature["properties"]["name"]] = (ring[0], ring[2])
    assert rings["patch r1 c2"] == ([300, 150], [400, 260])
    assert rings["patch r0 c0"] == ([0, 0], [150, 150])
    export_csv(tmap, tmp_path / "m.csv")
    lines = (tmp_path / "m.csv").read_text().splitlines()
    rows = list(csv.reader(x for x in lines if not x.startswith("#")))
    assert rows[-1][:6] == ["1", "2", "250", "110", "150", "150"]
    export_npz(tmap, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        assert data["x"].tolist() == [0, 150, 250] and data["y"].tolist() == [0, 110]
    # Areas: the slide's 400 x 260 px at 0.5 um/px, nothing counted twice.
    summary = summarize(tmap)
    assert summary["tissue_area_mm2"] == pytest.approx(0.2 * 0.13)
    assert summary["scale"] == {"mpp": 0.5, "source": "Aperio MPP", "assumed": False}
    again = TissueMap.load(tmp_path / "m.npz")
    assert again.extent == (400, 260) and again.cell_box(1, 2) == (300, 150, 400, 260)


def test_maps_saved_before_edges_were_mapped_keep_their_geometry():
    # Version-1 maps carry no extent: the grid ends with its last whole patch.
    tmap = sample_map()
    assert tmap.extent == (0, 0) and tmap.covered == (600, 450)
    assert tmap.patch_box(2, 3) == (450, 300, 150, 150)
    assert tmap.cell_areas().sum() == 600 * 450


def test_the_space_estimate_covers_what_the_exports_take(tmp_path):
    from histoviewer.mapping.export import estimate_bytes

    names = [f"class{i}" for i in range(8)]
    colors = [(30 * i, 255 - 30 * i, 100) for i in range(8)]
    grid = PatchGrid(rows=40, cols=60, patch_size=300, stride=300, stride_model=150)
    tmap = TissueMap.empty(
        grid,
        names,
        colors,
        mpp=0.25,
        slide={"path": "/x/big.svs", "dimensions": [18000, 12000], "mpp_source": "file"},
        model={"name": "m", "arch": "resnet50", "fingerprint": "cd" * 32, "input_size": 224},
    )
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), size=(40, 60)).astype(np.float32)
    tmap.probs[:] = probs
    tmap.state[:] = CLASSIFIED
    written = export_all(tmap, tmp_path, "big")
    for fmt, path in written.items():
        size = path.stat().st_size
        alone = estimate_bytes(tmap.rows * tmap.cols, 8, [fmt])
        assert size <= alone, (fmt, size, alone)
        if fmt in ("geojson", "csv"):  # the big ones: covered, not by a wide margin
            assert alone < 2.5 * size, (fmt, size, alone)
