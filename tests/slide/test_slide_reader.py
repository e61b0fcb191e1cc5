"""What every reader promises: bounds, levels, thumbnails, identity, threads, lifetime."""

import threading

import numpy as np
import pytest
from slide_support import box_reduce

from histoviewer.errors import SlideError
from histoviewer.slide import ArraySlide, open_slide
from histoviewer.slide import synthetic as syn


@pytest.fixture
def pyramid(tmp_path, he_image):
    path = syn.write_pyramid_tiff(tmp_path / "pyr.tif", he_image, tile=64, compression="zlib")
    with open_slide(path) as slide:
        yield slide


def test_region_outside_is_white(pyramid, he_image):
    region = pyramid.read_region(0, -20, -10, 60, 50)
    assert region.shape == (50, 60, 3)
    assert region.dtype == np.uint8 and region.flags.c_contiguous
    assert (region[:10] == 255).all() and (region[:, :20] == 255).all()
    np.testing.assert_array_equal(region[10:, 20:], he_image[:40, :40])
    # Straddling the bottom-right corner.
    corner = pyramid.read_region(0, 280, 200, 50, 40)
    np.testing.assert_array_equal(corner[:20, :20], he_image[200:, 280:])
    assert (corner[20:] == 255).all() and (corner[:, 20:] == 255).all()
    # Entirely outside.
    assert (pyramid.read_region(0, 1000, 1000, 8, 8) == 255).all()
    assert pyramid.read_region(1, 0, 0, 0, 0).shape == (0, 0, 3)


def test_region_is_a_fresh_writable_array(pyramid, he_image):
    first = pyramid.read_region(0, 0, 0, 30, 30)  # inside one tile: served from the cache
    first[:] = 0
    np.testing.assert_array_equal(pyramid.read_region(0, 0, 0, 30, 30), he_image[:30, :30])


def test_bad_arguments_are_programming_errors(pyramid):
    with pytest.raises(ValueError, match="level 9"):
        pyramid.read_region(9, 0, 0, 10, 10)
    with pytest.raises(ValueError, match="negative"):
        pyramid.read_region(0, 0, 0, -1, 10)


def test_best_level_for_downsample(pyramid):
    assert pyramid.level_downsamples[:3] == pytest.approx((1.0, 2.0, 4.0))
    assert pyramid.best_level_for_downsample(0.5) == 0
    assert pyramid.best_level_for_downsample(1.0) == 0
    assert pyramid.best_level_for_downsample(1.9) == 0
    assert pyramid.best_level_for_downsample(2.0) == 1
    assert pyramid.best_level_for_downsample(3.99) == 2  # within rounding slack
    assert pyramid.best_level_for_downsample(100) == pyramid.level_count - 1


def test_thumbnail_keeps_aspect_and_content(pyramid, he_image):
    thumb = pyramid.thumbnail(100)
    assert thumb.shape == (73, 100, 3)
    expected = box_reduce(he_image, 3)[:73, :100]
    assert np.abs(thumb.astype(float) - expected).mean() < 6
    # Never larger than the slide.
    assert pyramid.thumbnail(1000).shape == (220, 300, 3)


def test_thumbnail_of_single_level_slide_reads_in_bands(monkeypatch, he_image):
    import histoviewer.slide.base as base

    monkeypatch.setattr(base, "_THUMBNAIL_BAND_PIXELS", 300 * 16)  # 16-row bands
    slide = ArraySlide(he_image)
    calls = []
    original = slide.read_region
    monkeypatch.setattr(slide, "read_region", lambda *a: calls.append(a) or original(*a))
    thumb = slide.thumbnail(60)
    assert thumb.shape == (44, 60, 3)
    assert len(calls) > 5 and all(c[4] <= 16 for c in calls)
    assert np.abs(thumb.astype(float) - box_reduce(he_image, 5)).mean() < 6


def test_identity_keys_the_file(tmp_path, he_image):
    path = syn.write_strip_tiff(tmp_path / "a.tif", he_image)
    with open_slide(path) as slide:
        ident = slide.identity()
    assert ident["path"] == str(path.resolve())
    assert ident["size"] == path.stat().st_size
    assert ident["mtime"] == path.stat().st_mtime
    assert ident["dimensions"] == [300, 220]
    other = syn.write_strip_tiff(tmp_path / "b.tif", he_image[:, :200].copy())
    with open_slide(other) as slide:
        assert slide.identity() != ident


def test_concurrent_reads_return_correct_pixels(tmp_path, he_image):
    """A viewer thread and a mapping thread hammer the same reader."""
    big = np.ascontiguousarray(np.tile(he_image, (2, 2, 1)))  # 600 x 440
    path = syn.write_pyramid_tiff(tmp_path / "pyr.tif", big, tile=64, compression="zlib")
    rng = np.random.default_rng(0)
    boxes = [
        (int(x), int(y), int(w), int(h))
        for x, y, w, h in zip(
            rng.integers(-30, 580, 120),
            rng.integers(-30, 420, 120),
            rng.integers(1, 160, 120),
            rng.integers(1, 160, 120),
            strict=True,
        )
    ]
    padded = np.full((440 + 400, 600 + 400, 3), 255, np.uint8)
    padded[200:640, 200:800] = big
    errors = []
    with open_slide(path) as slide:
        slide.cache.max_bytes = 64 * 64 * 3 * 6  # tiny cache: constant eviction and re-decoding

        def worker(order):
            try:
                for x, y, w, h in order:
                    got = slide.read_region(0, x, y, w, h)
                    want = padded[y + 200 : y + 200 + h, x + 200 : x + 200 + w]
                    if not np.array_equal(got, want):
                        errors.append((x, y, w, h))
            except Exception as exc:  # reported below, not swallowed
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(boxes[i::-1] + boxes,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors


def test_closed_reader_refuses_to_read(tmp_path, he_image):
    path = syn.write_strip_tiff(tmp_path / "a.tif", he_image)
    with open_slide(path) as slide:
        pass
    with pytest.raises(SlideError, match="closed"):
        slide.read_region(0, 0, 0, 10, 10)
    slide.close()  # idempotent


def test_array_slide(he_image):
    grey = he_image[:, :, 1].copy()
    slide = ArraySlide(grey, mpp=0.25)
    assert slide.format_name == "in-memory"
    assert slide.path is None
    assert slide.dimensions == (300, 220)
    assert slide.level_count == 1
    assert (slide.mpp, slide.mpp_source) == (0.25, "given")
    region = slide.read_region(0, 290, 0, 20, 5)
    np.testing.assert_array_equal(region[:, :10], np.repeat(grey[:5, 290:, None], 3, axis=2))
    assert (region[:, 10:] == 255).all()
    assert slide.identity()["digest"] != ArraySlide(he_image).identity()["digest"]
    assert slide.identity() == ArraySlide(grey, mpp=0.25).identity()
    with pytest.raises(ValueError, match="floating-point"):
        ArraySlide(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 4, 5\)"):
        ArraySlide(np.zeros((4, 4, 5), np.uint8))
