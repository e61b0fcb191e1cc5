"""The synthetic H&E generator and the scale (mpp) helpers."""

import numpy as np
import pytest

from histoviewer.slide import mpp as mpp_
from histoviewer.slide import synthetic as syn


def test_generator_is_deterministic_and_seamless():
    whole = syn.synthetic_he(640, 520, seed=3)
    assert whole.shape == (520, 640, 3) and whole.dtype == np.uint8
    np.testing.assert_array_equal(whole, syn.synthetic_he(640, 520, seed=3))
    assert np.abs(whole.astype(int) - syn.synthetic_he(640, 520, seed=4)).mean() > 20
    # Any region, made on its own, equals the same part of the whole (tiles join seamlessly).
    for x, y, w, h in [
        (0, 0, 256, 256),
        (256, 256, 256, 256),
        (333, 101, 300, 419),
        (639, 519, 1, 1),
    ]:
        np.testing.assert_array_equal(
            syn.he_region(x, y, w, h, seed=3), whole[y : y + h, x : x + w]
        )


def test_generator_looks_like_h_and_e():
    image = syn.synthetic_he(1500, 1500, seed=0).reshape(-1, 3).astype(int)
    r, g, b = image.T
    background = (r > 235) & (g > 235) & (b > 235)
    pink = (r > 190) & (g < r - 40) & (b > g + 15)  # eosin: red and blue above green
    purple = (r < 150) & (b > r + 20) & (g < r)  # haematoxylin nuclei
    assert 0.1 < background.mean() < 0.7
    assert pink.mean() > 0.15
    assert 0.01 < purple.mean() < 0.3


def test_lower_levels_sample_the_same_slide():
    full = syn.he_region(0, 0, 512, 512, seed=1).astype(float)
    reduced = full.reshape(128, 4, 128, 4, 3).mean(axis=(1, 3))
    level = syn.he_region(0, 0, 128, 128, downsample=4, seed=1).astype(float)
    # Point samples vs block means differ only where nuclei are cut.
    assert np.abs(level - reduced).mean() < 12


def test_writers_validate_their_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        syn.write_strip_tiff(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="layout"):
        syn.write_pyramid_tiff(tmp_path / "a.tif", width=64, height=64, layout="tiles")
    with pytest.raises(ValueError, match="compression"):
        syn.write_svs(tmp_path / "a.svs", width=64, height=64, compression="lzw")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Aperio Image Library v12\r\n46000x32914 (256x256) JPEG/RGB Q=70|AppMag = 20"
            "|MPP = 0.4990",
            0.499,
        ),
        ("Aperio Image Library|MPP=0.2527|Left = 25.7", 0.2527),
        ("Aperio Image Library|AppMag = 40", None),
    ],
)
def test_aperio_mpp(text, expected):
    assert mpp_.aperio_mpp(text) == expected


def test_resolution_units():
    assert mpp_.resolution_mpp(20202.02, 3) == pytest.approx(0.495, rel=1e-5)  # per cm
    assert mpp_.resolution_mpp(50800, 2) == pytest.approx(0.5)  # per inch
    assert mpp_.resolution_mpp(72, 1) is None  # unit "none": just an aspect ratio
    assert mpp_.unit_to_um(495, "nm") == pytest.approx(0.495)
    assert mpp_.unit_to_um(0.5, None) == 0.5  # OME's default unit is the micrometre
    assert mpp_.unit_to_um(1, "parsec") is None


def test_implausible_scales_fall_back_to_assumed():
    candidates = [(352.8, "NDPI/TIFF resolution")]
    assert mpp_.choose_mpp(None, candidates) == (0.495, "assumed")
    assert "352.8 µm/px" in mpp_.assumed_because(candidates)
    assert mpp_.assumed_because([]) == "its file records no scale"
    assert mpp_.assumed_because([(0.25, "OME PhysicalSizeX")]) == ""
    assert mpp_.choose_mpp(None, [(None, "Aperio MPP"), (0.25, "OME PhysicalSizeX")]) == (
        0.25,
        "OME PhysicalSizeX",
    )
