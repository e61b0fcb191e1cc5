"""The optional OpenSlide backend (the ``openslide`` extra) reads what tifffile cannot."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from slide_support import mean_abs_error

from histoviewer.slide import SUPPORTED_EXTENSIONS, open_slide
from histoviewer.slide import synthetic as syn
from histoviewer.slide.openslide_backend import OpenSlideSlide

pytest.importorskip("openslide", reason="optional extra: pip install histoviewer[openslide]")


def _write_vms(folder, image):
    """A Hamamatsu VMS slide: an INI-style index plus JPEGs with restart markers."""
    Image.fromarray(image).save(
        folder / "slide.jpg", quality=95, restart_marker_rows=1, subsampling=0
    )
    small = np.ascontiguousarray(image[::4, ::4])
    Image.fromarray(small).save(
        folder / "map.jpg", quality=90, restart_marker_rows=1, subsampling=0
    )
    h, w = image.shape[:2]
    path = folder / "slide.vms"
    path.write_text(
        "[Virtual Microscope Specimen]\n"
        "NoLayers=1\nNoJpegColumns=1\nNoJpegRows=1\n"
        "ImageFile=slide.jpg\nMapFile=map.jpg\nSourceLens=20\n"
        f"PhysicalWidth={round(w * 460)}\nPhysicalHeight={round(h * 460)}\n"  # nm: 0.46 um/px
    )
    return path


def test_vms_opens_through_openslide(tmp_path):
    image = syn.synthetic_he(512, 384, seed=4)
    path = _write_vms(tmp_path, image)
    assert ".vms" in SUPPORTED_EXTENSIONS
    with open_slide(path) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.format_name == "hamamatsu (OpenSlide)"
        assert slide.dimensions == (512, 384)
        assert slide.level_count > 1
        assert slide.mpp == pytest.approx(0.46)
        assert slide.mpp_source == "OpenSlide MPP"
        assert mean_abs_error(slide.read_region(0, 0, 0, 512, 384), image) < 3
        # Level coordinates are the level's own pixels; outside is white.
        level1 = slide.read_region(1, 128, 96, 200, 150)
        assert mean_abs_error(level1[:96, :128], image[192::2, 256::2][:96, :128]) < 8
        assert (level1[96:] == 255).all() and (level1[:, 128:] == 255).all()


def test_openslide_and_tifffile_agree_on_svs(tmp_path, he_image):
    big = np.ascontiguousarray(np.tile(he_image, (3, 3, 1)))
    path = syn.write_svs(tmp_path / "slide.svs", big, tile=128, mpp=0.2527)
    with open_slide(path) as ours, OpenSlideSlide(path) as theirs:
        assert theirs.format_name == "aperio (OpenSlide)"
        assert theirs.level_dimensions == ours.level_dimensions
        assert theirs.mpp == pytest.approx(ours.mpp)
        for level in range(ours.level_count):
            w, h = ours.level_dimensions[level]
            a = ours.read_region(level, -5, 7, w, h)
            b = theirs.read_region(level, -5, 7, w, h)
            np.testing.assert_array_equal(a, b)


SLIDES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "slides"
BOXES = SLIDES / "openslide-python_boxes.tiff"


def _stored_levels(path):
    """Each level's pixels exactly as stored, read by tifffile page by page."""
    with tifffile.TiffFile(path) as tif:
        return [level.asarray()[..., :3] for level in tif.series[0].levels]


def _check_exact(slide, stored, level, boxes):
    height, width = stored.shape[:2]
    padded = np.full((height + 600, width + 600, 3), 255, np.uint8)  # outside is white
    padded[300:-300, 300:-300] = stored
    for x, y, w, h in boxes:
        np.testing.assert_array_equal(
            slide.read_region(level, x, y, w, h),
            padded[y + 300 : y + 300 + h, x + 300 : x + 300 + w],
            err_msg=f"level {level} (downsample {slide.level_downsamples[level]}) at {x}, {y}",
        )


def test_levels_with_fractional_downsamples_read_the_stored_pixels():
    """OpenSlide places level k at level-0 x / downsample; where that is a fraction it
    resamples. Every position of every level must still give the stored pixels."""
    if not BOXES.is_file():
        pytest.skip(f"real test slide not found at {BOXES} (present in dev checkouts)")
    stored = _stored_levels(BOXES)
    with OpenSlideSlide(BOXES) as slide:
        assert slide.level_downsamples[2:] == pytest.approx((4.0161, 8.0863), abs=1e-4)
        for level, pixels in enumerate(stored):
            height, width = pixels.shape[:2]
            assert slide.level_dimensions[level] == (width, height)
            step = 1 if level >= 2 else 23  # every position of the fractional levels
            boxes = [(-3, -2, width + 6, height + 4)]
            boxes += [(x, y, 9, 7) for x in range(0, width, step) for y in range(0, height, 3)]
            _check_exact(slide, pixels, level, boxes)


def test_fractional_downsamples_on_noise_and_reads_wider_than_4096(tmp_path):
    """Random pixels show any resampling; OpenSlide splits reads wider than 4096 px
    at level-0 positions it rounds, so long reads must be split here first."""
    rng = np.random.default_rng(5)
    levels = [
        np.zeros((64, 12900, 3), np.uint8),
        rng.integers(0, 256, (21, 4300, 3), dtype=np.uint8),  # downsample 3.0238...
        rng.integers(0, 256, (9, 1843, 3), dtype=np.uint8),  # 7.0553...
    ]
    path = tmp_path / "noise.tif"
    with tifffile.TiffWriter(path) as tw:
        for index, level in enumerate(levels):
            tw.write(
                level,
                tile=(16, 256),
                photometric="rgb",
                compression="zlib",
                subfiletype=1 if index else 0,
            )
    with OpenSlideSlide(path) as slide:
        assert [round(d, 4) for d in slide.level_downsamples] == [1.0, 3.0238, 7.0553]
        for level in (1, 2):
            height, width = levels[level].shape[:2]
            boxes = [(0, 0, width, height)]
            if width > 4096:  # regions across OpenSlide's 4096 px split
                boxes += [(3000, 2, 1290, 15), (4090, 0, 30, 21)]
            boxes += [
                (int(x), int(y), int(w), int(h))
                for x, y, w, h in zip(
                    rng.integers(-10, width, 150),
                    rng.integers(-3, height, 150),
                    rng.integers(1, 300, 150),
                    rng.integers(1, 12, 150),
                    strict=True,
                )
            ]
            _check_exact(slide, levels[level], level, boxes)
