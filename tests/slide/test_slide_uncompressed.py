"""Uncompressed contiguous images are read straight from the file, exactly, whichever
way a region is read: whole rows at once, cached blocks of rows, or row by row."""

import numpy as np
import pytest
import tifffile

from histoviewer.slide import open_slide, tiff_level

# (x, y, w, h) in a 260 x 90 image: what each is read by (see tiff_level).
REGIONS = {
    "whole rows": (0, 10, 260, 30),
    "band": (40, 5, 200, 60),  # at least a quarter of the width: one read
    "narrow": (17, 3, 40, 70),  # blocks of whole rows, or row by row
    "one pixel": (259, 89, 1, 1),
    "edge": (250, 80, 30, 30),  # partly outside: white there
}


def _image(kind: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(stored array, expected RGB, tifffile options) for a 260 x 90 picture."""
    rng = np.random.default_rng(3)
    if kind == "rgb8":
        stored = rng.integers(0, 256, (90, 260, 3), dtype=np.uint8)
        return stored, stored, {"photometric": "rgb"}
    if kind == "grey16":
        stored = rng.integers(0, 65536, (90, 260), dtype=np.uint16)
        expected = np.repeat(np.round(stored / 257.0).astype(np.uint8)[:, :, None], 3, axis=2)
        return stored, expected, {"photometric": "minisblack"}
    if kind == "rgb16-big-endian":
        stored = rng.integers(0, 65536, (90, 260, 3), dtype=np.uint16)
        expected = np.round(stored / 257.0).astype(np.uint8)
        return stored, expected, {"photometric": "rgb", "byteorder": ">"}
    assert kind == "rgba8"
    stored = rng.integers(0, 256, (90, 260, 4), dtype=np.uint8)
    stored[..., 3] = 255  # opaque: the colour is the pixel
    return stored, stored[..., :3], {"photometric": "rgb", "extrasamples": "unassalpha"}


@pytest.mark.parametrize("row_by_row", [False, True], ids=["blocks", "row-by-row"])
@pytest.mark.parametrize("kind", ["rgb8", "grey16", "rgb16-big-endian", "rgba8"])
def test_every_read_path_gives_the_stored_pixels(tmp_path, monkeypatch, kind, row_by_row):
    if row_by_row:  # as for rows longer than the limit, e.g. a 20,000 px wide strip TIFF
        monkeypatch.setattr(tiff_level, "_MAX_BLOCK_ROW_BYTES", 0)
    stored, expected, options = _image(kind)
    path = tmp_path / f"{kind}.tif"
    tifffile.imwrite(path, stored, rowsperstrip=7, **options)
    padded = np.full((90 + 60, 260 + 60, 3), 255, np.uint8)
    padded[:90, :260] = expected
    with open_slide(path) as slide:
        assert slide.contiguous_uncompressed
        for name, (x, y, w, h) in REGIONS.items():
            got = slide.read_region(0, x, y, w, h)
            np.testing.assert_array_equal(got, padded[y : y + h, x : x + w], err_msg=name)
            assert got.flags.c_contiguous and got.flags.writeable
        # Blocks of rows are cached; rows read one by one are not.
        assert (len(slide.cache) > 0) != row_by_row


def test_cached_blocks_are_shared_by_neighbouring_patches(tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (300, 2000, 3), dtype=np.uint8)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=16)
    with open_slide(path) as slide:
        assert slide.contiguous_uncompressed
        for x in range(0, 1850, 150):  # one grid row of 150 px patches
            got = slide.read_region(0, x, 75, 150, 150)
            np.testing.assert_array_equal(got, image[75:225, x : x + 150])
        # Every block under the row was read once, then found in the cache.
        assert slide.cache.misses == len(slide.cache) and slide.cache.hits > slide.cache.misses


@pytest.mark.parametrize("options", [{}, {"tile": (32, 32), "compression": "zlib"}])
def test_without_positional_reads_the_same_pixels(tmp_path, monkeypatch, options):
    """Where the platform has no os.pread (Windows), reads seek and read under a lock."""
    monkeypatch.setattr(tiff_level, "_POSITIONAL_READS", False)
    stored, expected, tiff_options = _image("rgb8")
    path = tmp_path / "seek.tif"
    tifffile.imwrite(path, stored, **tiff_options, **options)
    with open_slide(path) as slide:
        assert slide.contiguous_uncompressed == (not options)
        for name, (x, y, w, h) in REGIONS.items():
            got = slide.read_region(0, x, y, w, h)
            inside = got[: max(0, min(h, 90 - y)), : max(0, min(w, 260 - x))]
            np.testing.assert_array_equal(inside, expected[y : y + h, x : x + w], err_msg=name)
