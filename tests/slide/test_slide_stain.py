"""The stain check: H&E passes silently; fluorescence, greyscale, IHC and non-stains warn."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histoviewer.slide import ArraySlide, open_slide
from histoviewer.slide.stain import (
    FLUORESCENCE,
    GREYSCALE,
    HE,
    IHC_DAB,
    KINDS,
    NO_TISSUE,
    UNRECOGNISED,
    StainCheck,
    check_slide_stain,
    check_stain,
    check_stains,
    is_dark_background,
)
from histoviewer.slide.synthetic_he import synthetic_he

SLIDES = Path(__file__).resolve().parents[3] / "shared" / "data" / "slides"
SHARES = ("eosin", "dab", "haematoxylin", "off_stain")


def real_thumbnail(name: str, size: int = 1024) -> np.ndarray:
    path = SLIDES / name
    if not path.is_file():
        pytest.skip(f"real slide {name} not found in {SLIDES} (present in CI and dev checkouts)")
    with open_slide(path) as slide:
        return slide.thumbnail(size)


def assert_warns(check: StainCheck, kind: str, *words: str) -> None:
    assert check.kind == kind, check.summary()
    assert not check.ok
    assert check.warning and check.warning.endswith(".")
    # Every warning says why it matters.
    assert "trained on brightfield H&E" in check.warning and "meaningless" in check.warning
    for word in words:
        assert word in check.warning, check.warning


def assert_he(check: StainCheck) -> None:
    assert check.kind == HE, check.summary()
    assert check.ok and check.warning is None


def stained(h: np.ndarray, e: np.ndarray, d: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Beer-Lambert: RGB of stain amounts (H, W) times OD vectors (3 stains x RGB)."""
    od = h[..., None] * vectors[0] + e[..., None] * vectors[1] + d[..., None] * vectors[2]
    return np.clip(255 * 10 ** -(od + 0.02), 0, 255).round().astype(np.uint8)


def blobs(shape: tuple[int, int], count: int, radius: float, seed: int) -> np.ndarray:
    """float (H, W) in [0, 1]: ``count`` soft round blobs (nuclei) on zero."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    out = np.zeros(shape, np.float32)
    for y, x in rng.random((count, 2)) * shape:
        out = np.maximum(out, np.clip(1.5 - np.hypot(yy - y, xx - x) / radius, 0, 1))
    return out


# Stain colours as an IHC scan shows them (blued haematoxylin absorbs red most; DAB
# absorbs blue most), measured on the Ki67 demo slide.
IHC_VECTORS = np.array([[0.80, 0.52, 0.30], [0.0, 0.0, 0.0], [0.35, 0.55, 0.76]])


# -- real files ---------------------------------------------------------------------


def test_dapi_fluorescence_ndpi_warns_fluorescence():
    check = check_stain(real_thumbnail("slideio_test3-DAPI-2.ndpi"))
    assert_warns(check, FLUORESCENCE, "fluorescence", "black")
    assert check.details["black"] >= 0.7  # 0.75 measured; the threshold is 0.5


def test_ki67_ihc_warns_dab():
    check = check_stain(real_thumbnail("qupathdemo_OS-2-ndpi.ome.tif"))
    assert_warns(check, IHC_DAB, "immunohistochemistry", "DAB", "eosin", "haematoxylin")
    assert check.details["dab"] > 0.2 and check.details["eosin"] < 0.05


def test_real_he_slide_passes_silently():
    check = check_stain(real_thumbnail("CMU-1-Small-Region.svs"))
    assert_he(check)
    assert check.details["eosin"] > 0.8 and check.details["off_stain"] < 0.05


def test_coloured_boxes_picture_is_unrecognised():
    """OpenSlide's test pyramid: saturated red, green and blue squares on white."""
    check = check_stain(real_thumbnail("openslide-python_boxes.tiff"))
    assert_warns(check, UNRECOGNISED, "green")


def test_check_slide_stain_reads_a_thumbnail_of_the_slide():
    path = SLIDES / "CMU-1-Small-Region.svs"
    if not path.is_file():
        pytest.skip(f"real slide not found in {SLIDES} (present in CI and dev checkouts)")
    with open_slide(path) as slide:
        assert_he(check_slide_stain(slide))
        assert_he(check_slide_stain(slide, max_size=512))


def test_kather_tiles_each_pass_as_he(kather_dir):
    """All 5000 tiles, each judged on its own: H&E or too little tissue, never a warning."""
    root = Path(kather_dir) / "tiles"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths = [p for name in classes for p in sorted((root / name).iterdir())]

    def load(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        tiles = np.stack(list(pool.map(load, paths)))
    assert tiles.shape == (5000, 150, 150, 3)
    checks = check_stains(tiles)
    pairs = list(zip(paths, checks, strict=True))
    warned = [(p.parent.name, p.name, c.summary()) for p, c in pairs if not c.ok]
    assert not warned, warned[:5]
    kinds = {name: [c.kind for p, c in pairs if p.parent.name == name] for name in classes}
    for name in ("01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "06_MUCOSA"):
        assert set(kinds[name]) == {HE}, name
    # Tissue classes are judged, not waved through as empty; glass mostly is empty.
    assert kinds["05_DEBRIS"].count(HE) >= 620
    assert kinds["07_ADIPOSE"].count(HE) >= 500
    assert kinds["08_EMPTY"].count(NO_TISSUE) >= 600
    # The batch is only faster: every tile gets what check_stain gives it alone.
    for i in np.random.default_rng(0).choice(len(tiles), 40, replace=False):
        single = check_stain(tiles[i])
        assert single == checks[i] and single.details == checks[i].details


# -- generated images ----------------------------------------------------------------


@pytest.fixture(scope="module")
def he_slide() -> ArraySlide:
    return ArraySlide(synthetic_he(2000, 1500, seed=3))


def test_synthetic_he_slide_passes(he_slide):
    check = check_slide_stain(he_slide, max_size=512)
    assert_he(check)
    assert set(check.details) >= {"black", "glass", "tissue", "coloured", *SHARES}
    assert sum(check.details[k] for k in SHARES) == pytest.approx(1.0, abs=1e-3)


def test_greyscale_image_warns(he_slide):
    rgb = he_slide.thumbnail(512)
    grey = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    assert_warns(check_stain(np.repeat(grey[..., None], 3, axis=-1)), GREYSCALE, "greyscale")
    assert check_stain(grey).kind == GREYSCALE  # a 2-D grey array is accepted as such
    # A faint colour cast (a toned print, JPEG noise) is still no stain.
    tinted = np.clip(np.stack([grey + 3, grey, grey + 2], axis=-1).astype(int), 0, 255)
    assert check_stain(tinted.astype(np.uint8)).kind == GREYSCALE
    # Full resolution, where most tissue is pale stroma: in grey it is neither dark nor
    # coloured, i.e. no tissue at all by density and colour, but it is shaded.
    pale = synthetic_he(600, 450, seed=5).mean(axis=2).astype(np.uint8)
    check = check_stain(pale)
    assert check.details["tissue"] < 0.02 and check.details["shaded"] > 0.3
    assert_warns(check, GREYSCALE, "greyscale")


@pytest.mark.parametrize("picture", ["noise", "green", "rainbow", "blue"])
def test_pictures_of_no_stain_warn(picture):
    rng = np.random.default_rng(5)
    if picture == "noise":
        image = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    elif picture == "green":  # a saturated green picture, e.g. foliage
        image = np.zeros((400, 400, 3), np.uint8)
        image[..., 1] = rng.integers(120, 230, (400, 400))
        image[..., 0] = image[..., 1] // 4
    elif picture == "rainbow":  # a photo-like smooth spread of every hue
        hue = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (400, 1))
        sat = np.tile(np.linspace(80, 255, 400, dtype=np.uint8)[:, None], (1, 400))
        hsv = np.stack([hue, sat, np.full_like(hue, 220)], axis=-1)
        image = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    else:  # vivid blue shapes on white
        image = np.full((400, 400, 3), 255, np.uint8)
        image[50:350, 80:300] = (20, 40, 235)
    assert_warns(check_stain(image), UNRECOGNISED, "right file")


def test_synthetic_ihc_warns_dab_and_haematoxylin_alone_is_unrecognised():
    shape = (300, 300)
    nuclei = blobs(shape, 120, 7, seed=1)
    positive = blobs(shape, 25, 7, seed=2)
    ihc = stained(0.5 * nuclei, 0 * nuclei, 1.2 * positive, IHC_VECTORS)
    assert_warns(check_stain(ihc), IHC_DAB, "DAB")
    counterstain_only = stained(0.5 * nuclei, 0 * nuclei, 0 * nuclei, IHC_VECTORS)
    assert_warns(check_stain(counterstain_only), UNRECOGNISED, "eosin")


def test_brown_pigment_on_he_is_not_taken_for_dab(he_slide):
    """Haemosiderin on an H&E slide is brown, but the eosin around it rules out IHC."""
    image = he_slide.thumbnail(512).copy()
    pigment = blobs(image.shape[:2], 60, 6, seed=4) > 0.5
    image[pigment] = (150, 95, 40)
    check = check_stain(image)
    assert check.details["dab"] > 0.03  # enough brown for IHC, were there no eosin
    assert_he(check)


def test_haemorrhage_glowing_red_is_still_he(he_slide):
    """Blood in H&E is as vivid a red as a screen shows; vivid colour is only off-stain
    when it is not eosin-red (some Kather DEBRIS tiles are mostly blood)."""
    image = he_slide.thumbnail(512).copy()
    rng = np.random.default_rng(8)
    h, w = image.shape[0], image.shape[1] * 2 // 3
    green = rng.integers(10, 30, (h, w))
    image[:, :w] = np.stack([rng.integers(200, 240, (h, w)), green, green + 15], axis=-1)
    assert_he(check_stain(image))


def test_fluorescence_needs_a_black_background_not_just_black_parts(he_slide):
    thumb = he_slide.thumbnail(512)
    h, w = thumb.shape[:2]
    # Brightfield with a black unscanned margin over 60 % of the image: still H&E.
    margin = np.zeros((h, int(w * 2.5), 3), np.uint8)
    margin[:, :w] = thumb
    assert not is_dark_background(margin)
    assert_he(check_stain(margin))
    # Nuclei glowing on black, in blue (DAPI) or grey (a single-channel export).
    glow = blobs((400, 400), 150, 5, seed=6)
    dapi = np.zeros((400, 400, 3), np.uint8)
    dapi[..., 2] = (8 + 230 * glow).astype(np.uint8)
    grey = np.repeat(dapi[..., 2:], 3, axis=-1)
    for image in (dapi, grey):
        assert is_dark_background(image)
        assert_warns(check_stain(image), FLUORESCENCE, "fluorescence")


def test_blank_glass_is_no_tissue_without_a_warning():
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(238, 3, (300, 300, 3)), 0, 255).astype(np.uint8)
    check = check_stain(glass)
    assert check.kind == NO_TISSUE and check.ok and check.warning is None


def test_inputs_rgba_large_and_invalid(he_slide):
    thumb = he_slide.thumbnail(512)
    rgba = np.concatenate([thumb, np.full((*thumb.shape[:2], 1), 255, np.uint8)], axis=-1)
    assert check_stain(rgba) == check_stain(thumb)
    # A full-resolution image is subsampled, and judged the same as its thumbnail.
    assert check_stain(np.asarray(he_slide.read_region(0, 0, 0, 2000, 1500))).kind == HE
    with pytest.raises(ValueError, match="uint8"):
        check_stain(thumb.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        check_stain(np.zeros((4, 4, 2), np.uint8))
    assert {c.kind for c in check_stains([thumb, thumb[:100]])} == {HE}
    assert set(KINDS) == {HE, FLUORESCENCE, GREYSCALE, IHC_DAB, UNRECOGNISED, NO_TISSUE}
