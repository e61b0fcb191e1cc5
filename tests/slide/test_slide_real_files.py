"""Real scanner files (../shared/data/slides, see its README): structure, scale, and
pixels equal to OpenSlide's wherever OpenSlide reads the file."""

from pathlib import Path

import numpy as np
import pytest

from histoviewer.errors import SlideError
from histoviewer.slide import open_slide

SLIDES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "slides"

# name: (format, level sizes, um/px, where the um/px comes from); values from the README
# and from the files' metadata.
EXPECTED = {
    "CMU-1-Small-Region.svs": ("Aperio SVS", ((2220, 2967),), 0.499, "Aperio MPP"),
    "openslide-python_small.svs": ("Aperio SVS", ((16, 16),), 0.499, "Aperio MPP"),
    "openslide-python_boxes.tiff": (
        "TIFF (tiled pyramid)",
        ((300, 250), (150, 125), (75, 62), (37, 31)),
        0.495,
        "assumed",  # its resolution tags say 352.8 um/px: not a microscope scale
    ),
    "slideio_test3-DAPI-2.ndpi": (
        "Hamamatsu NDPI",
        ((3968, 4864), (1984, 2432), (992, 1216), (496, 608)),
        0.2282,
        "NDPI/TIFF resolution",
    ),
    "qupathdemo_OS-2-ndpi.ome.tif": ("OME-TIFF", ((2202, 2202),), 0.2271, "OME PhysicalSizeX"),
}
# Files OpenSlide reads too (it does not read OME-TIFF).
OPENSLIDE_READS = [name for name in EXPECTED if not name.endswith(".ome.tif")]


def _slide_file(name: str) -> Path:
    path = SLIDES / name
    if not path.is_file():
        pytest.skip(f"real test slide {name} not found in {SLIDES} (present in dev checkouts)")
    return path


@pytest.mark.parametrize("name", EXPECTED)
def test_levels_and_scale(name):
    form, levels, mpp, source = EXPECTED[name]
    with open_slide(_slide_file(name)) as slide:
        assert slide.format_name == form
        assert slide.level_dimensions == levels
        w0, h0 = levels[0]
        expected_ds = [(w0 / w + h0 / h) / 2 for w, h in levels]
        assert slide.level_downsamples == pytest.approx(expected_ds)
        assert slide.mpp == pytest.approx(mpp, rel=2e-3)
        assert slide.mpp_source == source
        # Every level reads, corner to corner.
        for level, (w, h) in enumerate(levels):
            corner = slide.read_region(level, w - 5, h - 5, 10, 10)
            assert corner.shape == (10, 10, 3) and (corner[5:] == 255).all()
        assert bool(slide.mpp_note) == (source == "assumed")


def test_slide_smaller_than_a_patch_opens_but_is_not_mapped():
    from histoviewer.mapping.grid import make_grid
    from histoviewer.model.info import ModelInfo

    path = _slide_file("openslide-python_small.svs")
    with open_slide(path) as slide:
        assert slide.dimensions == (16, 16)
        pixels = slide.read_region(0, 0, 0, 16, 16)
        assert pixels.std() > 0  # a real picture, not blank
        assert slide.thumbnail(64).shape == (16, 16, 3)
        with pytest.raises(SlideError, match="small") as info:
            make_grid(slide, ModelInfo.recipe())
    assert path.name in str(info.value)


def _regions(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """A whole small level, or a few regions of a large one (corner, middle, far edge)."""
    if width * height <= 1_300_000:
        return [
            (0, 0, width, height),
            (-7, -3, width // 2, height // 2),
            (width // 3 + 1, height // 4 + 1, width // 2, height // 2),
        ]
    return [
        (0, 0, 256, 256),
        (width // 2 + 7, height // 3 + 5, 301, 203),
        (width - 100, height - 80, 200, 160),
    ]


@pytest.mark.parametrize("name", OPENSLIDE_READS)
def test_pixels_equal_openslides_on_every_level(name):
    pytest.importorskip("openslide", reason="optional extra: pip install histoviewer[openslide]")
    from histoviewer.slide.openslide_backend import OpenSlideSlide

    path = _slide_file(name)
    with open_slide(path) as ours, OpenSlideSlide(path) as theirs:
        # OpenSlide may add levels it computes itself (NDPI): compare the stored ones.
        levels = ours.level_count
        assert theirs.level_dimensions[:levels] == ours.level_dimensions
        assert theirs.level_downsamples[:levels] == pytest.approx(ours.level_downsamples)
        for level in range(levels):
            for x, y, w, h in _regions(*ours.level_dimensions[level]):
                np.testing.assert_array_equal(
                    ours.read_region(level, x, y, w, h),
                    theirs.read_region(level, x, y, w, h),
                    err_msg=f"{name} level {level} region {x}, {y}, {w} x {h}",
                )
