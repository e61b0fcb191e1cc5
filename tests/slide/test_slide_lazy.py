"""Big slides are read piecewise: only the tiles a region touches, never the whole image."""

import time
import tracemalloc

import imagecodecs
import numpy as np

from histoviewer.slide import open_slide
from histoviewer.slide import synthetic as syn

COLOURS = np.array([[240, 170, 200], [90, 50, 150], [250, 250, 250], [200, 120, 170]], np.uint8)


def _colour_of_tile(col, row):
    return COLOURS[(col + 3 * row) % len(COLOURS)]


def _write_repeating_tiff(path, size, tile, encoded):
    """A classic tiled TIFF whose many tiles all point at a few stored JPEG tiles.

    This makes a 100,000 x 100,000 slide in a few hundred kilobytes: tile
    (col, row) shows ``encoded[(col + 3 * row) % len(encoded)]``.
    """
    across = -(-size // tile)
    count = across * across
    chunks_at = 8
    offsets, data = [], b""
    for chunk in encoded:
        offsets.append(chunks_at + len(data))
        data += chunk + b"\x00" * (len(chunk) % 2)
    index = (np.arange(across)[None, :] + 3 * np.arange(across)[:, None]).ravel() % len(encoded)
    tile_offsets = np.array(offsets, np.uint32)[index]
    tile_counts = np.array([len(c) for c in encoded], np.uint32)[index]
    arrays_at = chunks_at + len(data)
    bits_at = arrays_at + 8 * count
    ifd_at = bits_at + 6
    entries = [  # (tag, type, count, value): types 3 SHORT, 4 LONG
        (256, 4, 1, size),
        (257, 4, 1, size),
        (258, 3, 3, bits_at),
        (259, 3, 1, 7),
        (262, 3, 1, 2),
        (277, 3, 1, 3),
        (284, 3, 1, 1),
        (322, 3, 1, tile),
        (323, 3, 1, tile),
        (324, 4, count, arrays_at),
        (325, 4, count, arrays_at + 4 * count),
    ]
    ifd = len(entries).to_bytes(2, "little")
    for tag, kind, n, value in entries:
        packed = (
            value.to_bytes(4, "little")
            if kind == 4 or n > 1
            else value.to_bytes(2, "little") + b"\0\0"
        )
        ifd += (
            tag.to_bytes(2, "little")
            + kind.to_bytes(2, "little")
            + n.to_bytes(4, "little")
            + packed
        )
    ifd += b"\0\0\0\0"
    header = b"II*\x00" + ifd_at.to_bytes(4, "little")
    body = tile_offsets.tobytes() + tile_counts.tobytes() + np.array([8, 8, 8], "<u2").tobytes()
    path.write_bytes(header + data + body + ifd)


def test_gigapixel_tiled_slide_reads_only_touched_tiles(tmp_path):
    """A 100,000 x 100,000 slide (30 GB as RGB) answers a patch in milliseconds."""
    size, tile = 100_000, 512
    encoded = [
        imagecodecs.jpeg8_encode(
            np.full((tile, tile, 3), c, np.uint8), level=90, colorspace="RGB", outcolorspace="RGB"
        )
        for c in COLOURS
    ]
    path = tmp_path / "giga.tif"
    _write_repeating_tiff(path, size, tile, encoded)
    tracemalloc.start()
    start = time.perf_counter()
    with open_slide(path) as slide:
        assert slide.dimensions == (size, size)
        # A 150 px patch straddling four tiles.
        region = slide.read_region(0, 120 * tile - 75, 130 * tile - 75, 150, 150)
        elapsed = time.perf_counter() - start
        assert slide.cache.misses == 4 and len(slide.cache) == 4
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # Each quarter of the patch has the colour of its tile.
        quarters = {
            (0, 0): (119, 129),
            (0, 100): (120, 129),
            (100, 0): (119, 130),
            (100, 100): (120, 130),
        }
        for (dy, dx), (col, row) in quarters.items():
            np.testing.assert_allclose(region[dy + 25, dx + 25], _colour_of_tile(col, row), atol=3)
        # The neighbouring patch reuses the cached tiles: no new decode.
        slide.read_region(0, 120 * tile - 60, 130 * tile - 60, 40, 40)
        assert slide.cache.misses == 4
    assert peak < 32e6, f"peak {peak / 1e6:.0f} MB"
    assert elapsed < 2.0


def test_kather_sized_strip_tiff_is_read_in_pieces(tmp_path):
    """A 5000 x 5000 uncompressed strip TIFF like CRC-Prim-HE: patches and row bands
    are read straight from the file, never the 75 MB image at once."""
    block = syn.synthetic_he(500, 500, seed=2)
    image = np.tile(block, (10, 10, 1))
    path = syn.write_strip_tiff(tmp_path / "CRC-Prim-HE-02-APPLICATION.tif", image)
    tracemalloc.start()
    with open_slide(path) as slide:
        assert slide.format_name == "TIFF (strips)" and slide.contiguous_uncompressed
        assert slide.dimensions == (5000, 5000) and slide.mpp == 0.495
        patches = [
            slide.read_region(0, x, y, 150, 150) for x in range(0, 4850, 600) for y in (0, 4850)
        ]
        band = slide.read_region(0, 0, 2000, 5000, 150)  # a mapping row band
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        np.testing.assert_array_equal(patches[-1], image[4850:, 4800:4950])
        np.testing.assert_array_equal(band, image[2000:2150])
        np.testing.assert_array_equal(
            slide.read_region(0, 4990, 4990, 20, 20)[:10, :10], image[4990:, 4990:]
        )
    assert peak < 16e6, f"peak {peak / 1e6:.0f} MB: the 75 MB image was loaded"


def test_generated_pyramid_is_written_tile_by_tile(tmp_path):
    tracemalloc.start()
    path = syn.write_pyramid_tiff(tmp_path / "gen.tif", width=2048, height=1536, tile=256, seed=5)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 6e6, f"peak {peak / 1e6:.1f} MB while the image is 9.4 MB"
    with open_slide(path) as slide:
        assert slide.level_dimensions == ((2048, 1536), (1024, 768), (512, 384), (256, 192))
        expected = syn.he_region(700, 900, 300, 200, seed=5)
        got = slide.read_region(0, 700, 900, 300, 200)
        assert np.abs(got.astype(float) - expected).mean() < 3
        # Lower levels are the generator sampled coarsely: same tissue layout.
        small = slide.read_region(3, 0, 0, 256, 192).astype(float)
        # (JPEG blurs the aliased nuclei; another seed differs by ~47 levels.)
        assert np.abs(small - syn.he_region(0, 0, 256, 192, downsample=8, seed=5)).mean() < 8
