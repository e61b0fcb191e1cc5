"""The optional OpenSlide backend (the ``openslide`` extra) reads what tifffile cannot."""

import numpy as np
import pytest
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
