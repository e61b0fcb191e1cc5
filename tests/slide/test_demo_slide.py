"""The demo slide: its layout, the generator, the shipped files and their true classes."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histoviewer.classes import class_names, default_classes
from histoviewer.errors import SlideError
from histoviewer.mapping.grid import make_grid
from histoviewer.model.info import ModelInfo
from histoviewer.slide import open_slide
from histoviewer.slide.demo_slide import (
    CELL,
    LAYOUT,
    compose,
    demo_slide_path,
    layout_classes,
    read_truth,
    truth_for_slide,
    truth_path,
    write_demo_slide,
)

FOLDERS = {c.name: c.folder for c in default_classes()}


def fake_kather(root: Path, test_per_class: int, train_per_class: int = 2) -> Path:
    """A Kather-like data folder: 150 px tiles whose pixels say which tile they are
    (class number in red, tile number in green; blue 0 for train tiles)."""
    rows = ["class,file,split"]
    for k, folder in enumerate(FOLDERS.values()):
        (root / "tiles" / folder).mkdir(parents=True)
        for i in range(test_per_class + train_per_class):
            split = "test" if i < test_per_class else "train"
            name = f"{folder}_{i:03d}"
            pixels = np.zeros((CELL, CELL, 3), np.uint8)
            pixels[..., 0] = 20 + 25 * k
            pixels[..., 1] = 10 + 20 * i
            pixels[..., 2] = 200 if split == "test" else 0
            Image.fromarray(pixels).save(root / "tiles" / folder / f"{name}.webp", lossless=True)
            rows.append(f"{folder},{name},{split}")
    (root / "split.csv").write_text("\n".join(rows) + "\n")
    return root


SMALL_LAYOUT = ("..M..", ".MTT.", "STDCL", ".LAA.")


def test_the_layout_uses_each_test_tile_at_most_once_and_every_class():
    cells = layout_classes()
    counts = Counter(name for row in cells for name in row)
    assert set(counts) == set(class_names())
    assert max(counts.values()) <= 100  # the test split holds 100 tiles per class
    assert sum(counts.values()) <= 800
    rows, cols = len(cells), len(cells[0])
    assert 20 <= rows <= 28 and 20 <= cols <= 28
    # Glass at the top and bottom and in the corners, as around a real section.
    assert set(cells[0]) == set(cells[-1]) == {"empty"}
    assert cells[0][0] == cells[0][-1] == cells[-1][0] == cells[-1][-1] == "empty"


def test_an_uneven_layout_or_an_unknown_letter_is_refused():
    with pytest.raises(ValueError, match="differ in length"):
        layout_classes(("..", "..."))
    with pytest.raises(ValueError, match=r"letters \['X'\] name no class"):
        layout_classes(("T.", "X."))


def test_the_generator_lays_test_tiles_on_the_mapping_grid(tmp_path):
    data = fake_kather(tmp_path / "data", test_per_class=8)
    slide_path, truth_file = write_demo_slide(
        tmp_path / "out", data, name="small.tif", layout=SMALL_LAYOUT, quality=95
    )
    assert truth_file == tmp_path / "out" / "small.truth.json"
    truth = read_truth(truth_file)
    assert (truth.rows, truth.cols, truth.cell_size, truth.slide) == (4, 5, CELL, "small.tif")
    assert truth.class_names == tuple(class_names())
    assert truth.counts()["empty"] == 8 and truth.counts()["tumor"] == 3
    with open_slide(slide_path) as slide:
        assert slide.format_name == "TIFF (tiled pyramid)"
        assert slide.mpp == pytest.approx(0.495) and slide.mpp_source != "assumed"
        assert slide.dimensions == truth.size == (5 * CELL, 4 * CELL)
        assert slide.level_count >= 2
        # The app's patch grid at the recipe's scale and stride is the truth's cells.
        grid = make_grid(slide, ModelInfo.recipe())
        assert (grid.rows, grid.cols, grid.patch_size, grid.stride) == (4, 5, CELL, CELL)
        used = set()
        for r in range(truth.rows):
            for c in range(truth.cols):
                assert grid.patch_box(r, c) == (c * CELL, r * CELL, CELL, CELL)
                assert grid.cell_box(r, c) == (c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
                folder, name = truth.tiles[r][c].split("/")
                assert folder == FOLDERS[truth.class_names[truth.grid[r, c]]]
                assert name not in used  # each tile once
                used.add(name)
                tile = np.asarray(Image.open(data / "tiles" / folder / f"{name}.webp"))
                pixels = slide.read_region(0, *grid.patch_box(r, c))
                assert np.abs(pixels.astype(int) - tile).mean() < 3  # JPEG, nothing else
                assert pixels[..., 2].mean() > 150  # a test tile, never a train tile


def test_the_generator_is_reproducible_and_the_seed_chooses_the_tiles(tmp_path):
    data = fake_kather(tmp_path / "data", test_per_class=9)
    _, first = compose(data, seed=1, layout=SMALL_LAYOUT)
    _, again = compose(data, seed=1, layout=SMALL_LAYOUT)
    _, other = compose(data, seed=2, layout=SMALL_LAYOUT)
    assert first.tiles == again.tiles
    assert first.tiles != other.tiles
    assert np.array_equal(first.grid, other.grid)  # the seed moves tiles, not classes


def test_a_layout_needing_more_tiles_than_the_test_split_holds_is_refused(tmp_path):
    data = fake_kather(tmp_path / "data", test_per_class=2)
    with pytest.raises(
        ValueError, match=r"needs more test tiles than there are: tumor 3 of 2, empty 8 of 2$"
    ):
        compose(data, layout=SMALL_LAYOUT)


def test_missing_data_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split\.csv"):
        compose(tmp_path)


# --- the truth file -----------------------------------------------------------------------


def write_truth(path: Path, **changes) -> Path:
    data = {
        "format": "histoviewer.demo-truth",
        "version": 1,
        "rows": 2,
        "cols": 3,
        "cell_size": 150,
        "mpp": 0.495,
        "classes": ["tumor", "empty"],
        "grid": [[0, 1, 1], [1, 1, 0]],
    }
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def test_a_truth_file_is_found_beside_its_slide(tmp_path):
    slide = tmp_path / "case 7.tif"
    assert truth_path(slide) == tmp_path / "case 7.truth.json"
    assert truth_for_slide(slide) is None
    assert truth_for_slide(None) is None
    write_truth(truth_path(slide))
    truth = truth_for_slide(slide)
    assert truth.size == (450, 300)
    assert truth.counts() == {"tumor": 2, "empty": 4}
    assert truth.tiles == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "something"}, "not a HistoViewer truth file"),
        ({"version": 9}, "version 9"),
        ({"grid": [[0, 1, 1]]}, r"grid is \(1, 3\), not 2 x 3"),
        ({"grid": [[0, 1, 1], [1, 2, 0]]}, "outside 0-1"),
        ({"cell_size": 0}, "not positive"),
        ({"rows": "two"}, "malformed"),
        ({"tiles": [["a", "b"], ["c", "d"]]}, "tile names do not form the grid"),
    ],
)
def test_a_damaged_truth_file_is_a_clear_error(tmp_path, changes, message):
    path = write_truth(tmp_path / "slide.truth.json", **changes)
    with pytest.raises(SlideError, match=message) as info:
        read_truth(path)
    assert "slide.truth.json" in str(info.value)


def test_a_truth_file_that_is_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "slide.truth.json"
    path.write_bytes(b"\x89PNG...")
    with pytest.raises(SlideError, match=r"slide\.truth\.json is damaged: it is not a JSON file"):
        read_truth(path)


# --- the shipped demo slide ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    path = demo_slide_path()
    assert path is not None, "resources/demo holds no demo slide: python tools/make_demo_slide.py"
    return path


def test_the_shipped_demo_slide_opens_at_the_models_scale_with_its_truth(shipped):
    assert shipped.stat().st_size < 8 * 2**20  # a few MB
    truth = truth_for_slide(shipped)
    assert truth.slide == shipped.name
    assert "10.5281/zenodo.53169" in truth.source and "CC BY 4.0" in truth.source
    assert truth.class_names == tuple(class_names())
    names = [truth.class_names[i] for i in truth.grid.ravel()]
    assert names == [n for row in layout_classes() for n in row]
    with open_slide(shipped) as slide:
        assert slide.format_name == "TIFF (tiled pyramid)"
        assert slide.mpp == pytest.approx(0.495, abs=1e-6)
        assert slide.dimensions == truth.size
        assert slide.level_count >= 3
        grid = make_grid(slide, ModelInfo.recipe())
    assert (grid.rows, grid.cols) == (truth.rows, truth.cols) == (len(LAYOUT), len(LAYOUT[0]))
    assert (grid.patch_size, grid.stride) == (CELL, CELL)


def test_the_shipped_demo_slide_is_made_of_kather_test_tiles(shipped, kather_dir):
    truth = truth_for_slide(shipped)
    split = {}
    with open(os.path.join(kather_dir, "split.csv")) as fh:
        for line in fh.read().splitlines()[1:]:
            folder, name, part = line.split(",")
            split[f"{folder}/{name}"] = part
    tiles = [t for row in truth.tiles for t in row]
    assert len(set(tiles)) == len(tiles) == truth.grid.size
    assert {split[t] for t in tiles} == {"test"}
    with open_slide(shipped) as slide:
        for (r, c), tile in zip(np.ndindex(truth.grid.shape), tiles, strict=True):
            folder = tile.split("/")[0]
            assert FOLDERS[truth.class_names[truth.grid[r, c]]] == folder
            source = np.asarray(Image.open(os.path.join(kather_dir, "tiles", f"{tile}.webp")))
            pixels = slide.read_region(0, c * CELL, r * CELL, CELL, CELL)
            assert np.abs(pixels.astype(int) - source).mean() < 8, tile
