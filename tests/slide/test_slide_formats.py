"""Every supported layout opens with the right structure, scale and pixels."""

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image
from slide_support import box_reduce, mean_abs_error

from histoviewer.slide import open_slide
from histoviewer.slide import synthetic as syn


def test_strip_tiff_like_crc_prim_he(tmp_path, he_image):
    path = syn.write_strip_tiff(tmp_path / "CRC-Prim-HE-01_APPLICATION.tif", he_image)
    with open_slide(path) as slide:
        assert slide.format_name == "TIFF (strips)"
        assert slide.level_dimensions == ((300, 220),)
        assert slide.level_downsamples == (1.0,)
        assert slide.mpp == pytest.approx(0.495, abs=1e-4)
        assert slide.mpp_source == "NDPI/TIFF resolution"
        assert slide.contiguous_uncompressed
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 300, 220), he_image)
        np.testing.assert_array_equal(
            slide.read_region(0, 17, 31, 150, 150), he_image[31:181, 17:167]
        )


@pytest.mark.parametrize("layout", ["subifds", "pages"])
def test_lossless_tiled_pyramid(tmp_path, he_image, layout):
    path = syn.write_pyramid_tiff(
        tmp_path / "pyr.tif", he_image, tile=64, compression="zlib", layout=layout
    )
    with open_slide(path) as slide:
        assert slide.format_name == "TIFF (tiled pyramid)"
        # Halved until a level fits in one 64 px tile; sizes round up.
        assert slide.level_dimensions == ((300, 220), (150, 110), (75, 55), (38, 28))
        assert slide.level_downsamples[:3] == pytest.approx((1.0, 2.0, 4.0))
        assert not slide.contiguous_uncompressed
        # A region spanning several tiles, at an odd offset, must be exact.
        np.testing.assert_array_equal(
            slide.read_region(0, 50, 40, 150, 150), he_image[40:190, 50:200]
        )
        # Level coordinates are in the level's own pixels.
        level1 = box_reduce(he_image, 2)
        np.testing.assert_allclose(
            slide.read_region(1, 10, 20, 100, 60), level1[20:80, 10:110], atol=1
        )


def test_jpeg_pyramid_within_tolerance(tmp_path, he_image):
    path = syn.write_pyramid_tiff(tmp_path / "pyr.tiff", he_image, tile=128, quality=95)
    with open_slide(path) as slide:
        assert slide.level_count == 3  # halved until a level fits in one tile
        assert mean_abs_error(slide.read_region(0, 0, 0, 300, 220), he_image) < 3.0


def test_untagged_pages_of_decreasing_size_are_levels(tmp_path, he_image):
    """Pyramids saved as plain pages (no reduced-image flag) still become levels."""
    path = tmp_path / "plain_pages.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.ascontiguousarray(he_image), tile=(64, 64), photometric="rgb")
        small = np.ascontiguousarray(box_reduce(he_image, 2).round().astype(np.uint8))
        tw.write(small, tile=(64, 64), photometric="rgb")
    with open_slide(path) as slide:
        assert slide.level_dimensions == ((300, 220), (150, 110))
        np.testing.assert_array_equal(slide.read_region(1, 0, 0, 150, 110), small)


def test_svs_jpeg_is_rgb_not_ycbcr(tmp_path, colour_blocks):
    path = syn.write_svs(tmp_path / "slide.svs", colour_blocks, tile=64, quality=90)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.photometric == 2  # RGB JPEG streams, as Aperio writes
        tif.filehandle.seek(page.dataoffsets[0])
        stream = tif.filehandle.read(page.databytecounts[0])
    # The trap is real: a decoder that ignores Photometric sees YCbCr and shifts colours.
    naive = imagecodecs.jpeg8_decode(stream)
    assert np.abs(naive[32, 32].astype(int) - colour_blocks[32, 32]).max() > 50
    with open_slide(path) as slide:
        assert slide.format_name == "Aperio SVS"
        region = slide.read_region(0, 0, 0, 320, 128)
    for i in range(5):
        for top in (0, 64):
            block = region[top + 8 : top + 56, i * 64 + 8 : i * 64 + 56].reshape(-1, 3)
            expected = colour_blocks[top + 8, i * 64 + 8]
            # A YCbCr<->RGB mix-up moves these saturated colours by 50-150 levels.
            np.testing.assert_allclose(block.mean(axis=0), expected, atol=6)


def test_svs_levels_exclude_thumbnail_label_and_macro(tmp_path, he_image):
    big = np.ascontiguousarray(np.tile(he_image, (3, 3, 1)))  # 900 x 660
    path = syn.write_svs(tmp_path / "slide.svs", big, tile=128, mpp=0.2527)
    with tifffile.TiffFile(path) as tif:
        names = [s.name for s in tif.series]
    assert names == ["Baseline", "Thumbnail", "Label", "Macro"]
    with open_slide(path) as slide:
        assert slide.level_dimensions == ((900, 660), (225, 165))
        assert slide.level_downsamples == pytest.approx((1.0, 4.0))
        assert slide.mpp == pytest.approx(0.2527)
        assert slide.mpp_source == "Aperio MPP"
        assert mean_abs_error(slide.read_region(0, 300, 220, 300, 220), he_image) < 4.0
        assert mean_abs_error(slide.read_region(1, 0, 0, 225, 165), box_reduce(big, 4)) < 4.0


@pytest.mark.parametrize("ycbcr", [False, True])
def test_svs_jpeg2000(tmp_path, he_image, ycbcr):
    path = syn.write_svs(
        tmp_path / "j2k.svs", he_image, tile=128, compression="jpeg2000", j2k_ycbcr=ycbcr
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.compression == (33003 if ycbcr else 33005)
    with open_slide(path) as slide:
        region = slide.read_region(0, 0, 0, 300, 220)
    if ycbcr:
        # Y, Cb, Cr planes converted back to RGB: only rounding differences.
        assert np.abs(region.astype(int) - he_image).max() <= 2
    else:
        np.testing.assert_array_equal(region, he_image)


def test_ndpi_like(tmp_path, he_image):
    big = np.ascontiguousarray(np.tile(he_image, (2, 2, 1)))  # 600 x 440
    for name in ("slide.ndpi", "slide.tif"):
        path = syn.write_ndpi_like(tmp_path / name, big, tile=64, mpp=0.4416)
        with open_slide(path) as slide:
            assert slide.format_name == "Hamamatsu NDPI"
            assert slide.level_dimensions == ((600, 440), (150, 110), (38, 28))
            assert slide.mpp == pytest.approx(0.4416, rel=1e-4)
            assert slide.mpp_source == "NDPI/TIFF resolution"
            assert mean_abs_error(slide.read_region(0, 0, 0, 600, 440), big) < 3.0
    with tifffile.TiffFile(tmp_path / "slide.tif") as tif:
        assert tif.is_ndpi


@pytest.mark.parametrize(
    ("levels", "mpp", "unit", "expected"), [(1, 0.5, "µm", 0.5), (3, 250, "nm", 0.25)]
)
def test_ome_tiff(tmp_path, he_image, levels, mpp, unit, expected):
    path = syn.write_ome_tiff(
        tmp_path / "slide.ome.tif", he_image, tile=64, levels=levels, mpp=mpp, unit=unit
    )
    with open_slide(path) as slide:
        assert slide.format_name == "OME-TIFF"
        assert slide.level_count == levels
        assert slide.dimensions == (300, 220)
        assert slide.mpp == pytest.approx(expected)
        assert slide.mpp_source == "OME PhysicalSizeX"
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 300, 220), he_image)


def test_png_and_jpeg(tmp_path, he_image):
    Image.fromarray(he_image).save(tmp_path / "tile.png", dpi=(25400 / 0.5, 25400 / 0.5))
    Image.fromarray(he_image).save(tmp_path / "tile.jpg", quality=95)
    with open_slide(tmp_path / "tile.png") as slide:
        assert slide.format_name == "PNG"
        assert slide.level_dimensions == ((300, 220),)
        assert slide.mpp == pytest.approx(0.5, rel=1e-3)
        assert slide.mpp_source == "image resolution"
        np.testing.assert_array_equal(slide.read_region(0, 5, 6, 100, 90), he_image[6:96, 5:105])
    with open_slide(tmp_path / "tile.jpg") as slide:
        assert slide.format_name == "JPEG"
        assert mean_abs_error(slide.read_region(0, 0, 0, 300, 220), he_image) < 3.0


def test_unknown_scale_is_assumed_and_says_why(tmp_path, he_image):
    path = tmp_path / "no_scale.tif"
    tifffile.imwrite(path, he_image, photometric="rgb", resolution=(72, 72), resolutionunit=2)
    with open_slide(path) as slide:
        assert slide.mpp == 0.495
        assert slide.mpp_source == "assumed"
        # 72 dpi is a software default, not a scan: 352.8 um/px.
        assert slide.mpp_note == "its file's 352.778 µm/px (NDPI/TIFF resolution) is not plausible"
        slide.set_mpp(0.25, "given")
        assert (slide.mpp, slide.mpp_source, slide.mpp_note) == (0.25, "given", "")
        slide.set_mpp(0.3, "given")
        assert slide.file_scale[:2] == (0.495, "assumed")  # the file's, not the last one set
        slide.reset_mpp()
        assert (slide.mpp, slide.mpp_source) == (0.495, "assumed")
        assert slide.mpp_note.startswith("its file's 352.778")
    bare = tmp_path / "bare.png"
    Image.fromarray(he_image).save(bare)
    with open_slide(bare) as slide:
        assert (slide.mpp_source, slide.mpp_note) == ("assumed", "its file records no scale")


def test_resolution_in_inches(tmp_path, he_image):
    path = tmp_path / "inch.tif"
    dpi = 25400 / 0.25
    tifffile.imwrite(path, he_image, photometric="rgb", resolution=(dpi, dpi), resolutionunit=2)
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25, rel=1e-4)
        assert slide.mpp_source == "NDPI/TIFF resolution"
