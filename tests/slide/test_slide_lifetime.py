"""Closing a slide while other threads read it: each read returns the right pixels
or raises the "was closed" SlideError, whatever the backend."""

import random
import sys
import threading

import numpy as np
import pytest
import tifffile
from PIL import Image

from histoviewer.errors import SlideError
from histoviewer.slide import ArraySlide, SlideReader, open_slide
from histoviewer.slide import synthetic as syn

CLOSES = 60  # per backend: 300 in all
READERS = 3


def _tiny_cache(slide):
    slide.cache.max_bytes = 64 * 64 * 3 * 2  # reads keep going to the file, not the cache
    return slide


def _opener(backend: str, tmp_path, image):
    """A function opening ``image`` with ``backend`` (one per backend and TIFF layout)."""
    if backend == "tiff tiles":
        tiles = syn.write_pyramid_tiff(tmp_path / "tiles.tif", image, tile=64, compression="zlib")
        return lambda: _tiny_cache(open_slide(tiles))
    if backend == "tiff uncompressed strips":
        strips = syn.write_strip_tiff(tmp_path / "strips.tif", image)
        return lambda: open_slide(strips)
    if backend == "png":
        png = tmp_path / "picture.png"
        Image.fromarray(image).save(png)
        return lambda: open_slide(png)
    if backend == "array":
        return lambda: ArraySlide(image)
    assert backend == "openslide"
    pytest.importorskip("openslide", reason="optional extra: pip install histoviewer[openslide]")
    from histoviewer.slide.openslide_backend import OpenSlideSlide

    generic = tmp_path / "generic.tif"  # a tiled TIFF OpenSlide reads as generic-tiff
    tifffile.imwrite(generic, image, photometric="rgb", tile=(64, 64), compression="zlib")
    return lambda: OpenSlideSlide(generic)


@pytest.fixture
def frequent_switches():
    """Threads take turns more often: more interleavings, and each close comes sooner."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(before)


def _race(slide: SlideReader, padded: np.ndarray, rng: random.Random) -> tuple[int, list]:
    """Readers read random regions until ``slide`` is closed under them."""
    width, height = slide.dimensions
    start = threading.Barrier(READERS + 1)
    problems: list = []
    reads = [0]
    target, reached = rng.randrange(0, 8), threading.Event()
    if not target:
        reached.set()

    def read(seed: int) -> None:
        own = random.Random(seed)
        start.wait()
        while True:
            x, y = own.randrange(-20, width), own.randrange(-20, height)
            w, h = own.randrange(1, 90), own.randrange(1, 90)
            try:
                region = slide.read_region(0, x, y, w, h)
            except SlideError as exc:
                if "was closed" not in str(exc):
                    problems.append(exc)
                return
            except BaseException as exc:  # anything else is the bug under test
                problems.append(exc)
                return
            if not np.array_equal(region, padded[y + 20 : y + 20 + h, x + 20 : x + 20 + w]):
                problems.append(f"wrong pixels at {x}, {y}, {w} x {h}")
            reads[0] += 1
            if reads[0] >= target:
                reached.set()

    threads = [threading.Thread(target=read, args=(rng.random(),)) for _ in range(READERS)]
    for thread in threads:
        thread.start()
    start.wait()
    reached.wait(10)  # close at a random moment among the reads
    slide.close()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a reader hangs after close"
    return reads[0], problems


@pytest.mark.parametrize(
    "backend", ["tiff tiles", "tiff uncompressed strips", "png", "array", "openslide"]
)
def test_close_while_threads_read(tmp_path, he_image, backend, frequent_switches):
    open_reader = _opener(backend, tmp_path, he_image)
    padded = np.full((220 + 130, 300 + 130, 3), 255, np.uint8)
    padded[20:240, 20:320] = he_image
    rng = random.Random(backend)
    total_reads, problems = 0, []
    for _ in range(CLOSES):
        slide = open_reader()
        reads, found = _race(slide, padded, rng)
        total_reads += reads
        problems += found
        with pytest.raises(SlideError, match="was closed"):
            slide.read_region(0, 0, 0, 4, 4)
    assert not problems, problems[:5]
    assert total_reads > 2 * CLOSES  # the closes did land among reads


def test_close_waits_for_a_read_in_progress():
    entered, release = threading.Event(), threading.Event()
    freed = []

    class SlowSlide(ArraySlide):
        def _read(self, level, x0, y0, x1, y1):
            entered.set()
            release.wait(10)
            assert not freed, "the slide was freed during a read"
            return super()._read(level, x0, y0, x1, y1)

        def _close(self):
            freed.append(True)

    slide = SlowSlide(np.zeros((8, 8, 3), np.uint8))
    result = []
    reader = threading.Thread(target=lambda: result.append(slide.read_region(0, 0, 0, 4, 4)))
    reader.start()
    assert entered.wait(10)
    closer = threading.Thread(target=slide.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and not freed  # close waits for the read
    with pytest.raises(SlideError, match="was closed"):  # while no new read starts
        slide.read_region(0, 0, 0, 4, 4)
    release.set()
    reader.join(10)
    closer.join(10)
    assert freed == [True] and result[0].shape == (4, 4, 3)
    slide.close()  # idempotent: nothing freed twice
    assert freed == [True]
