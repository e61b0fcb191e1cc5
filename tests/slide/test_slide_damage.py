"""Damaged files never crash the process: a file cut short while open, a header that
claims more pixels than the file holds. Each is a SlideError naming the file."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
from slide_support import set_tag

from histoviewer.errors import SlideError
from histoviewer.slide import open_slide, tiff_level
from histoviewer.slide import synthetic as syn

# Runs in a child process: reading a memory-mapped file that shrank kills the
# reader with SIGBUS, which would take the whole test run with it.
_READ_AFTER_CUT = textwrap.dedent(
    """
    import shutil, sys
    from histoviewer.errors import SlideError
    from histoviewer.slide import open_slide

    filler = sys.argv[1]
    for spec in sys.argv[2:]:
        name, path, *box = spec.split(",")
        x, y, w, h = map(int, box)
        with open_slide(path) as slide:
            width, height = slide.dimensions
            slide.read_region(0, 0, 0, width, 1)  # the file reads (no tile cached below row 1)
            shutil.copyfile(filler, path)  # truncates in place, as `cp filler path` does
            try:
                slide.read_region(0, x, y, w, h)
            except SlideError as exc:
                print(name, "|", exc, flush=True)
            else:
                print(name, "| read without error", flush=True)
    """
)


def test_file_cut_short_while_open_is_a_slide_error_not_a_crash(tmp_path, he_image):
    """Another file copied over an open slide (``cp other.tif slide.tif``) makes it shorter."""
    strips = syn.write_strip_tiff(tmp_path / "strips.tif", he_image, rows_per_strip=220)
    strips_again = syn.write_strip_tiff(tmp_path / "strips2.tif", he_image)
    # Rows longer than the block limit are read row by row.
    wide = tmp_path / "wide.tif"
    width = tiff_level._MAX_BLOCK_ROW_BYTES // 3 + 64
    tifffile.imwrite(wide, np.full((40, width, 3), 200, np.uint8), photometric="rgb")
    tiles = syn.write_pyramid_tiff(tmp_path / "tiles.tif", he_image, tile=64, compression="zlib")
    filler = tmp_path / "filler.tif"
    filler.write_bytes(b"II*\x00" + b"\x00" * 400)
    specs = {
        "band": f"{strips},0,100,300,50",  # whole rows: one read
        "blocks": f"{strips_again},10,100,20,20",  # narrow: a cached block of rows
        "rows": f"{wide},100,20,30,10",  # narrow in long rows: row by row
        "tiles": f"{tiles},200,150,30,30",
    }
    result = subprocess.run(
        [sys.executable, "-c", _READ_AFTER_CUT, str(filler)]
        + [f"{name},{spec}" for name, spec in specs.items()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"reader died ({result.returncode}): {result.stderr[-2000:]}"
    lines = dict(line.split(" | ", 1) for line in result.stdout.splitlines())
    assert sorted(lines) == sorted(specs)
    for name, spec in specs.items():
        message = lines[name]
        assert spec.split(",")[0] in message and "truncated" in message, (name, message)


def _single_strip_tiff(path, image, compression):
    """One strip with RowsPerStrip 2**32 - 1 ("the whole image"), as many writers store it."""
    tifffile.imwrite(path, image, photometric="rgb", compression=compression, rowsperstrip=220)
    set_tag(path, "RowsPerStrip", 2**32 - 1)
    return path


def _read_all(path):
    with open_slide(path) as slide:
        width, height = slide.dimensions
        return slide.read_region(0, 0, 0, width, height)


@pytest.mark.parametrize("tag", ["ImageLength", "ImageWidth"])
def test_uncompressed_header_claiming_more_pixels_is_refused_at_open(tmp_path, he_image, tag):
    path = _single_strip_tiff(tmp_path / "claims.tif", he_image, None)
    set_tag(path, tag, 400 if tag == "ImageLength" else 3000)
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert str(path) in message and "is damaged" in message, message
    assert "198000 bytes" in message, message  # what the strip really holds


def test_uncompressed_strip_shorter_than_its_image_is_refused(tmp_path, he_image):
    """Reading on past the strip's end would show the bytes after it as pixels."""
    path = _single_strip_tiff(tmp_path / "short.tif", he_image, None)
    set_tag(path, "StripByteCounts", 198000 // 2)
    with pytest.raises(SlideError, match=r"is damaged: .*hold only 99000 bytes"):
        open_slide(path)


@pytest.mark.parametrize("tag", ["ImageLength", "ImageWidth"])
def test_compressed_strip_claiming_more_pixels_fails_on_read(tmp_path, he_image, tag):
    path = _single_strip_tiff(tmp_path / "claims.tif", he_image, "zlib")
    set_tag(path, tag, 400 if tag == "ImageLength" else 3000)
    with pytest.raises(SlideError, match=r"is damaged: strip 0 of level 0 cannot be read"):
        _read_all(path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiles_holding_fewer_bytes_than_claimed_fail_on_read(tmp_path, he_image, compression):
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, he_image, photometric="rgb", tile=(64, 64), compression=compression)
    with tifffile.TiffFile(path) as tif:
        counts = tif.pages.first.databytecounts
    set_tag(path, "TileByteCounts", *(c // 2 for c in counts))
    with pytest.raises(SlideError, match=r"is damaged: tile 0 of level 0 cannot be read"):
        _read_all(path)


def test_more_rows_than_strips_is_refused_at_open(tmp_path, he_image):
    path = syn.write_strip_tiff(tmp_path / "rows.tif", he_image)  # 16-row strips
    set_tag(path, "ImageLength", 400)
    with pytest.raises(SlideError, match=r"is damaged: level 0 lists 14 tiles or strips"):
        open_slide(path)


def test_uncompressed_single_strip_cut_short_is_truncated(tmp_path, he_image):
    path = _single_strip_tiff(tmp_path / "cut.tif", he_image, None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    with pytest.raises(SlideError, match=r"is damaged: it is truncated"):
        open_slide(path)
