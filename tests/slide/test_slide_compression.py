"""A compression nothing here can decode is named when the file is opened, not
reported as damage on every read."""

import imagecodecs
import numpy as np
import pytest
import tifffile
from slide_support import mean_abs_error, set_tag

from histoviewer.errors import SlideError
from histoviewer.slide import open_slide
from histoviewer.slide import synthetic as syn


def _refused(path, *words):
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert str(path) in message and "cannot be opened" in message, message
    for word in words:
        assert word in message, message
    assert "damaged" not in message, message
    return message


@pytest.fixture
def picture():
    return syn.synthetic_he(64, 48, seed=1)


def test_old_style_jpeg_is_unsupported_compression(tmp_path, picture):
    """Old-style JPEG (compression 6) as libtiff writes it: strips of bare entropy-coded
    data, the tables in tags. tifffile and imagecodecs cannot decode it."""
    stream = imagecodecs.jpeg8_encode(picture, level=90)
    sos = stream.index(b"\xff\xda")  # start of scan: what follows is the coded data
    scan = stream[sos + 2 + int.from_bytes(stream[sos + 2 : sos + 4], "big") : -2]
    path = tmp_path / "ojpeg.tif"
    tifffile.imwrite(
        path,
        iter([scan]),
        shape=picture.shape,
        dtype=np.uint8,
        photometric="rgb",
        compression="jpeg",
        rowsperstrip=picture.shape[0],
        extratags=[(512, 3, 1, 1, True)],  # JPEGProc: baseline
    )
    set_tag(path, "Compression", 6)
    _refused(path, "unsupported compression OJPEG")


def test_old_style_jpeg_made_of_whole_jpeg_streams_opens(tmp_path, picture):
    """Some writers label complete JPEG streams as compression 6: those decode."""
    path = tmp_path / "ojpeg_streams.tif"
    tifffile.imwrite(path, picture, photometric="rgb", compression="jpeg", tile=(32, 32))
    set_tag(path, "Compression", 6)
    with open_slide(path) as slide:
        assert mean_abs_error(slide.read_region(0, 0, 0, 64, 48), picture) < 3


@pytest.mark.parametrize(("compression", "name"), [(None, "NONE"), ("lzw", "LZW")])
@pytest.mark.parametrize("tile", [None, (16, 16)])
def test_chroma_subsampled_ycbcr_without_jpeg_is_unsupported(
    tmp_path, picture, compression, name, tile
):
    path = tmp_path / "ycbcr.tif"
    tifffile.imwrite(path, picture, photometric="ycbcr", compression=compression, tile=tile)
    set_tag(path, "YCbCrSubSampling", 2, 2)
    _refused(path, f"unsupported compression {name} with 2 x 2 YCbCr chroma subsampling")


@pytest.mark.parametrize(("code", "name"), [(34676, "SGILOG"), (40000, "40000")])
def test_unknown_codec_is_unsupported_compression(tmp_path, picture, code, name):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, picture, photometric="rgb", compression="zlib")
    set_tag(path, "Compression", code)
    _refused(path, f"unsupported compression {name}")
