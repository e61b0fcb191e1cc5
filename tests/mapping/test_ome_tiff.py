"""Pyramidal OME-TIFF exports: the class image and the probability image."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest
import tifffile
from mapping_support import COLORS, NAMES

from histoviewer.errors import HistoViewerError
from histoviewer.mapping import ome_tiff
from histoviewer.mapping.grid import PatchGrid, patches_across
from histoviewer.mapping.ome_tiff import (
    export_class_tiff,
    export_probability_tiff,
    tiff_levels,
)
from histoviewer.mapping.tissue_map import BACKGROUND, CLASSIFIED, TissueMap

OME_NS = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}


def make_map(
    width: int, height: int, patch: int, stride: int, origin=(0, 0), mpp: float = 0.5
) -> TissueMap:
    """A map of a ``width`` x ``height`` slide (extent measured from ``origin``), all
    classified with random probabilities."""
    grid = PatchGrid(
        rows=patches_across(height, patch, stride),
        cols=patches_across(width, patch, stride),
        patch_size=patch,
        stride=stride,
        origin=origin,
        extent=(width, height),
    )
    tmap = TissueMap.empty(
        grid, NAMES, COLORS, mpp=mpp, slide={"path": "/x/slide.svs", "mpp_source": "file"}
    )
    rng = np.random.default_rng(7)
    tmap.probs[:] = rng.dirichlet([1.0] * len(NAMES), size=(grid.rows, grid.cols))
    tmap.state[:] = CLASSIFIED
    return tmap


def unclassify(tmap: TissueMap, cells, state: int) -> None:
    for row, col in cells:
        tmap.state[row, col] = state
        tmap.probs[row, col] = np.nan


def small_map() -> TissueMap:
    """1000 x 700 px at 0.5 µm/px: 5 x 7 cells of 150 px whose inner edges fall on half
    pixels (patch 151, stride 150: edges at 150.5, 300.5, ...), the last ones 99.5 px
    (x) and 99.5 px (y); two background and two pending cells."""
    tmap = make_map(1000, 700, patch=151, stride=150)
    assert (tmap.rows, tmap.cols) == (5, 7)
    unclassify(tmap, [(0, 3), (4, 6)], BACKGROUND)
    unclassify(tmap, [(2, 1), (3, 5)], 0)  # pending
    return tmap


def sparse_map() -> TissueMap:
    """2600 x 1500 px with the grid from (100, 50): mostly glass, so that whole tiles
    are one value (zero, and class 1 over cells (1..3, 1..3)), at full and edge size."""
    tmap = make_map(2500, 1450, patch=300, stride=300, origin=(100, 50))
    unclassify(tmap, [(r, c) for r in range(tmap.rows) for c in range(tmap.cols)], BACKGROUND)
    for row, col in [(r, c) for r in range(1, 4) for c in range(1, 4)] + [(4, 8), (0, 0)]:
        tmap.state[row, col] = CLASSIFIED
        tmap.probs[row, col] = [0.1, 0.8, 0.1] if row < 4 else [0.6, 0.3, 0.1]
    return tmap


def fine_map() -> TissueMap:
    """600 x 400 px in cells of 10 px: tiles of thousands of cells (the zlib path)."""
    tmap = make_map(600, 400, patch=10, stride=10)
    unclassify(tmap, [(r, c) for r in range(5, 30) for c in range(20, 25)], BACKGROUND)
    return tmap


def class_cells(tmap: TissueMap) -> np.ndarray:
    return np.where(tmap.state == CLASSIFIED, tmap.labels + 1, 0).astype(np.uint8)


def probability_cells(tmap: TissueMap, k: int) -> np.ndarray:
    done = tmap.state == CLASSIFIED
    p = np.nan_to_num(tmap.probs[..., k].astype(np.float64))  # the stored float32, exactly
    return np.where(done, np.rint(p * 255), 0).astype(np.uint8)


def reference(tmap: TissueMap, cells: np.ndarray, scale: int) -> np.ndarray:
    """The image a level of downsample ``scale`` should hold, found with the map's own
    lookup (:meth:`TissueMap.patch_at`): each pixel takes the cell at the centre of the
    slide area it covers (the part inside the slide), 0 outside the grid."""
    width = tmap.origin[0] + tmap.covered[0]
    height = tmap.origin[1] + tmap.covered[1]
    ex, ey = tmap.cell_edges()

    def cell_of(length: int, inside: float, axis: int) -> np.ndarray:
        out = []
        for start in range(0, length, scale):
            centre = (start + min(start + scale, length)) / 2
            hit = tmap.patch_at(centre, inside) if axis == 1 else tmap.patch_at(inside, centre)
            outside = tmap.cols if axis == 1 else tmap.rows  # the zero row / column
            out.append(outside if hit is None else hit[axis])
        return np.asarray(out)

    cols = cell_of(width, (ey[0] + ey[-1]) / 2, 1)
    rows = cell_of(height, (ex[0] + ex[-1]) / 2, 0)
    padded = np.zeros((tmap.rows + 1, tmap.cols + 1), dtype=np.uint8)
    padded[:-1, :-1] = cells
    return padded[np.ix_(rows, cols)]


def levels_of(path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels]


def test_class_tiff_is_a_pyramidal_ome_tiff_at_the_slides_size_and_scale(tmp_path):
    tmap = small_map()
    path = tmp_path / "s.classes.ome.tif"
    export_class_tiff(tmap, path)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and tif.is_bigtiff
        series = tif.series[0]
        assert series.shape == (700, 1000) and series.dtype == np.uint8
        assert [level.shape for level in series.levels] == [(700, 1000), (350, 500)]
        for scale, level in ((1, series.levels[0]), (2, series.levels[1])):
            page = level.pages[0]
            assert page.is_tiled and (page.tilewidth, page.tilelength) == (512, 512)
            assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
            assert page.resolution == pytest.approx((1e4 / (0.5 * scale),) * 2)
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["PhysicalSizeX"] == pixels["PhysicalSizeY"] == 0.5
    assert pixels["PhysicalSizeXUnit"] == pixels["PhysicalSizeYUnit"] == "µm"
    assert pixels["Channel"]["Name"] == "class"


def test_tiff_levels_halve_until_one_tile():
    levels = tiff_levels(100_000, 60_000)
    assert levels[0] == (100_000, 60_000)
    assert levels[1] == (50_000, 30_000) and levels[-2] == (782, 469)
    assert levels[-1] == (391, 235) and len(levels) == 9
    assert tiff_levels(300, 512) == [(300, 512)]


@pytest.mark.parametrize("make", [small_map, sparse_map, fine_map])
def test_class_pixels_hold_the_class_of_the_cell_at_their_centre(tmp_path, make):
    tmap = make()
    path = tmp_path / "m.classes.ome.tif"
    export_class_tiff(tmap, path)
    levels = levels_of(path)
    assert len(levels) == len(tiff_levels(*ome_tiff.image_size(tmap)))
    for index, level in enumerate(levels):
        np.testing.assert_array_equal(level, reference(tmap, class_cells(tmap), 2**index))


def test_class_pixels_at_cell_centres_edges_and_boundaries(tmp_path):
    tmap = small_map()
    path = tmp_path / "s.classes.ome.tif"
    export_class_tiff(tmap, path)
    image = levels_of(path)[0]
    labels = tmap.labels
    ex, ey = tmap.cell_edges()
    for row in range(tmap.rows):
        for col in range(tmap.cols):
            x, y = int((ex[col] + ex[col + 1]) / 2), int((ey[row] + ey[row + 1]) / 2)
            want = labels[row, col] + 1 if tmap.state[row, col] == CLASSIFIED else 0
            assert image[y, x] == want, (row, col)
    assert image[75, 500] == 0  # background cell (0, 3)
    assert image[350, 200] == 0  # pending cell (2, 1)
    # Pixel 150's centre lies exactly on the edge at 150.5: it is the right cell's.
    assert ex[1] == 150.5 and ey[1] == 150.5
    assert image[10, 150] == labels[0, 1] + 1 and image[10, 149] == labels[0, 0] + 1
    assert image[150, 10] == labels[1, 0] + 1 and image[149, 10] == labels[0, 0] + 1
    # The edge cells reach the slide's edges.
    assert image[699, 0] == labels[4, 0] + 1 and image[0, 999] == labels[0, 6] + 1
    assert image[699, 899] == labels[4, 5] + 1
    assert image[699, 900] == image[699, 999] == 0  # (4, 6) is background


def test_lower_levels_sample_level_0_at_their_pixels_centres(tmp_path):
    tmap = sparse_map()  # cells of 300 px, integer edges: far larger than 2**3 px
    path = tmp_path / "m.classes.ome.tif"
    export_class_tiff(tmap, path)
    levels = levels_of(path)
    assert [level.shape for level in levels] == [(1500, 2600), (750, 1300), (375, 650), (188, 325)]
    assert len(np.unique(levels[0])) == 3  # glass, class 0 and class 1
    for index, level in enumerate(levels[1:], start=1):
        s = 2**index
        sampled = levels[0][s // 2 :: s, s // 2 :: s]
        h, w = sampled.shape
        np.testing.assert_array_equal(level[:h, :w], sampled)


def test_probability_tiff_has_a_named_channel_per_class(tmp_path):
    tmap = small_map()
    path = tmp_path / "s.probabilities.ome.tif"
    export_probability_tiff(tmap, path)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.shape == (3, 700, 1000) and series.dtype == np.uint8
        assert [level.shape for level in series.levels] == [(3, 700, 1000), (3, 350, 500)]
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        levels = [level.asarray() for level in series.levels]
    assert pixels["PhysicalSizeX"] == 0.5
    assert [c["Name"] for c in pixels["Channel"]] == NAMES
    # OME colours are signed RGBA: tumour (200, 0, 0) is 0xC80000FF.
    assert pixels["Channel"][0]["Color"] == 0xC80000FF - 2**32
    for k in range(3):
        cells = probability_cells(tmap, k)
        for index, level in enumerate(levels):
            np.testing.assert_array_equal(level[k], reference(tmap, cells, 2**index))
    ex, ey = tmap.cell_edges()
    x, y = int((ex[2] + ex[3]) / 2), int((ey[1] + ey[2]) / 2)
    want = [round(float(p) * 255) for p in tmap.probs[1, 2]]
    assert levels[0][:, y, x].tolist() == want
    assert levels[0][:, 75, 500].tolist() == [0, 0, 0]  # background


def test_probabilities_are_zero_wherever_the_patch_is_not_classified(tmp_path):
    tmap = small_map()
    tmap.state[1, 2] = BACKGROUND  # probabilities left in place: still not classified
    path = tmp_path / "s.probabilities.ome.tif"
    export_probability_tiff(tmap, path)
    ex, ey = tmap.cell_edges()
    x, y = int((ex[2] + ex[3]) / 2), int((ey[1] + ey[2]) / 2)
    assert levels_of(path)[0][:, y, x].tolist() == [0, 0, 0]


def test_probability_tiff_of_a_mostly_glass_map(tmp_path):
    tmap = sparse_map()
    path = tmp_path / "m.probabilities.ome.tif"
    export_probability_tiff(tmap, path)
    levels = levels_of(path)
    assert len(levels) == 4
    for k in range(3):
        for index, level in enumerate(levels):
            np.testing.assert_array_equal(
                level[k], reference(tmap, probability_cells(tmap, k), 2**index)
            )


def test_class_tiff_shows_and_names_the_classes(tmp_path):
    tmap = small_map()
    path = tmp_path / "s.classes.ome.tif"
    export_class_tiff(tmap, path)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE
        colormap = tif.pages[0].colormap
        lower = tif.series[0].levels[1].pages[0]
        assert lower.photometric == tifffile.PHOTOMETRIC.PALETTE
        np.testing.assert_array_equal(lower.colormap, colormap)
        root = ET.fromstring(tif.ome_metadata)
    assert colormap.shape == (3, 256)
    assert colormap[:, 0].tolist() == [65535] * 3  # not classified: white
    for k, color in enumerate(COLORS):
        assert colormap[:, k + 1].tolist() == [v * 257 for v in color]
    image = root.find("ome:Image", OME_NS)
    assert image.find("ome:Description", OME_NS).text.endswith(
        "0=not classified,1=tumor,2=stroma,3=empty"
    )
    maps = {
        a.get("Namespace"): {m.get("K"): m.text for m in a.iter(f"{{{OME_NS['ome']}}}M")}
        for a in root.iter(f"{{{OME_NS['ome']}}}MapAnnotation")
    }
    assert maps["histoviewer.classes"] == {
        "0": "not classified",
        "1": "tumor",
        "2": "stroma",
        "3": "empty",
    }
    assert maps["histoviewer.class-colors"] == {"1": "#c80000", "2": "#00c800", "3": "#fafafa"}
    assert maps["histoviewer.provenance"]["slide"] == "/x/slide.svs"
    assert maps["histoviewer.provenance"]["mpp"] == "0.5"


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    tmap = small_map()
    path = tmp_path / "s.probabilities.ome.tif"
    export_probability_tiff(tmap, path)
    before = path.read_bytes()

    real = ome_tiff._level_tiles

    def failing(*args):
        tiles = real(*args)
        for _ in range(3):
            yield next(tiles)
        raise RuntimeError("tile generation failed")

    monkeypatch.setattr(ome_tiff, "_level_tiles", failing)
    tmap.probs[:] = 0.5
    with pytest.raises(RuntimeError, match="tile generation failed"):
        export_probability_tiff(tmap, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_unwritable_destinations_raise_a_histoviewer_error(tmp_path):
    tmap = small_map()
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    target = blocker / "s.classes.ome.tif"
    with pytest.raises(HistoViewerError, match=r"cannot write .*a file/s\.classes\.ome\.tif"):
        export_class_tiff(tmap, target)

    locked = tmp_path / "locked.classes.ome.tif"
    locked.write_bytes(b"old")
    locked.chmod(0o444)
    with pytest.raises(HistoViewerError, match=r"locked\.classes\.ome\.tif.*read-only"):
        export_class_tiff(tmap, locked)
    assert locked.read_bytes() == b"old"


def test_a_missing_folder_is_created_as_for_every_export(tmp_path):
    path = tmp_path / "new" / "folder" / "s.classes.ome.tif"
    export_class_tiff(small_map(), path)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == (700, 1000)


def test_a_map_without_cells_is_refused(tmp_path):
    grid = PatchGrid(rows=0, cols=0, patch_size=150, stride=150)
    tmap = TissueMap.empty(grid, NAMES, COLORS, mpp=0.5)
    path = tmp_path / "empty.classes.ome.tif"
    with pytest.raises(ValueError, match="no cells"):
        export_class_tiff(tmap, path)
    with pytest.raises(ValueError, match="no cells"):
        export_probability_tiff(tmap, path)
    assert not path.exists()


def test_one_value_tiles_are_reused_only_at_their_own_size():
    """A tile of one value is compressed once, but an edge tile (zero past the image's
    edge) is not the whole tile of the same value."""
    full = np.array([512]), np.array([512])
    edge = np.array([100]), np.array([40])
    five = np.array([[5]], dtype=np.uint8)
    mixed = np.array([[5, 6]], dtype=np.uint8), np.array([512]), np.array([12, 500])
    blocks = [(five, *edge), (five, *full), (five, *edge), mixed]
    streams = list(ome_tiff._encoded(iter(blocks)))
    for (values, rows, cols), stream in zip(blocks, streams, strict=True):
        assert zlib.decompress(stream) == ome_tiff._pixels(values, rows, cols, 512).tobytes()
    assert streams[0] is streams[2]
