"""Pixel types are converted to RGB, or refused with the reason."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from histoviewer.errors import SlideError
from histoviewer.slide import open_slide


def _read_all(path):
    with open_slide(path) as slide:
        w, h = slide.dimensions
        return slide.read_region(0, 0, 0, w, h)


@pytest.fixture
def rgba():
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 20, 100
    rgba[:, :16, 3] = 255  # opaque
    rgba[:, 16:32, 3] = 128  # half transparent
    rgba[:, 32:, 3] = 0  # transparent: no tissue
    return rgba


def _check_over_white(rgb):
    np.testing.assert_array_equal(rgb[:, :16], np.broadcast_to([200, 20, 100], (32, 16, 3)))
    np.testing.assert_allclose(rgb[:, 16:32], np.broadcast_to([227, 137, 177], (32, 16, 3)), atol=1)
    assert (rgb[:, 32:] == 255).all()


@pytest.mark.parametrize("tile", [None, (16, 16)])
def test_rgba_tiff_composited_over_white(tmp_path, rgba, tile):
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples="unassalpha", tile=tile)
    _check_over_white(_read_all(path))


def test_rgba_png_composited_over_white(tmp_path, rgba):
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    _check_over_white(_read_all(tmp_path / "rgba.png"))


def test_greyscale_is_replicated(tmp_path):
    grey = np.arange(32 * 48, dtype=np.uint8).reshape(32, 48)
    tifffile.imwrite(tmp_path / "grey.tif", grey, photometric="minisblack", compression="lzw")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    for name in ("grey.tif", "grey.png"):
        rgb = _read_all(tmp_path / name)
        np.testing.assert_array_equal(rgb, np.repeat(grey[:, :, None], 3, axis=2))


def test_miniswhite_is_inverted(tmp_path):
    grey = np.arange(32 * 48, dtype=np.uint8).reshape(32, 48)
    tifffile.imwrite(tmp_path / "mw.tif", grey, photometric="miniswhite")
    np.testing.assert_array_equal(_read_all(tmp_path / "mw.tif")[:, :, 0], 255 - grey)


def test_sixteen_bit_is_scaled(tmp_path):
    rgb16 = np.zeros((16, 16, 3), np.uint16)
    rgb16[:8] = 65535
    rgb16[8:, :, 0] = 32896  # 128.5 * 256 + ...: rounds to 128
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    rgb = _read_all(tmp_path / "rgb16.tif")
    assert (rgb[:8] == 255).all()
    assert (rgb[8:, :, 0] == 128).all() and (rgb[8:, :, 1:] == 0).all()
    grey16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    np.testing.assert_array_equal(
        _read_all(tmp_path / "grey16.png")[:, :, 2], np.arange(256).reshape(16, 16)
    )


def test_palette(tmp_path):
    index = (np.arange(32 * 32) % 4).astype(np.uint8).reshape(32, 32)
    colours = np.array([[255, 255, 255], [240, 170, 200], [90, 50, 150], [20, 20, 20]], np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :4] = colours.T.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "pal.tif", index, photometric="palette", colormap=cmap)
    np.testing.assert_array_equal(_read_all(tmp_path / "pal.tif"), colours[index])
    image = Image.fromarray(index, "P")
    image.putpalette(colours.ravel().tolist())
    image.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(_read_all(tmp_path / "pal.png"), colours[index])


def test_planar_rgb(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "planar.tif",
        np.moveaxis(rgb, 2, 0),
        photometric="rgb",
        planarconfig="separate",
        tile=(16, 16),
    )
    np.testing.assert_array_equal(_read_all(tmp_path / "planar.tif"), rgb)


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"),
    [
        (np.zeros((5, 32, 32), np.uint8), {"photometric": "minisblack"}, "multi-channel"),
        (
            np.zeros((32, 32, 5), np.uint8),
            {"photometric": "minisblack", "planarconfig": "contig"},
            "5 channels",
        ),
        (np.zeros((32, 32), np.float32), {}, "floating-point"),
        (np.zeros((32, 32, 3), np.float32), {"photometric": "rgb"}, "floating-point"),
        (np.zeros((4, 32, 32, 3), np.uint8), {"photometric": "rgb"}, "z-stack"),
        (np.zeros((32, 32, 3), np.uint32), {"photometric": "rgb"}, "uint32"),
        (np.zeros((32, 32, 4), np.uint8), {"photometric": "separated"}, "separated"),
    ],
)
def test_unsupported_pixels_are_refused(tmp_path, data, kwargs, reason):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, data, **kwargs)
    with pytest.raises(SlideError, match=reason) as info:
        open_slide(path)
    assert str(path) in str(info.value)


def test_float_png_like_modes_are_refused(tmp_path):
    path = tmp_path / "float.tiff"
    Image.fromarray(np.zeros((8, 8), np.float32), "F").save(path)
    with pytest.raises(SlideError, match="floating-point"):
        open_slide(path)
