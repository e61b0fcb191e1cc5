"""Does a slide look like brightfield H&E? A quick check before an H&E model maps it.

The tissue model was trained on H&E brightfield tiles; on anything else it still
answers with confidence (a DAPI fluorescence scan maps as 100 % lymphocytes, a Ki67
immunostain as 100 % empty), so the viewer and the command line warn first.
:func:`check_stain` looks at a thumbnail of the whole slide and names what it sees,
testing in this order:

1. ``"fluorescence"``: at least half of the pixels are black (brightest channel
   below 32) and bright colourless glass does not outnumber dim glow (not black,
   below 128). A brightfield slide is lit from behind: its glass is the brightest
   thing in it, also when the scanner leaves an unscanned margin black.
2. ``"greyscale"``: under 10 % of the tissue pixels (see 3) have any colour
   (chroma >= 12), or at least 75 % of the shaded pixels (darker than glass: every
   channel at most 216) are neutral (channels within 3 levels of each other), with
   tissue or shaded pixels at least 2 % of the image. The second test finds pale
   tissue in a grey image, which has neither the colour nor the density of tissue;
   real colour scans keep colour noise even in their grey-looking parts.
3. ``"no-tissue"`` (no warning): under 2 % of the pixels are tissue (some channel
   at or below 160, i.e. optical density >= 0.2, or chroma >= 24), too little to
   judge; the mapper finds nothing to map anyway.
4. The coloured tissue pixels are unmixed into haematoxylin, eosin and DAB amounts
   by colour deconvolution with Ruifrok & Johnston's stain vectors (Anal Quant Cytol
   Histol 23:291, 2001), and each goes to one of four classes, weighted by its
   optical density so that faint pixels, whose hue is mostly noise, count little:

   - *off-stain*: green (green the brightest channel, which no mix of H, E and DAB
     gives: they all absorb green at least as much as red), or vivid, glowing colour
     (chroma >= 0.85 of a brightest channel >= 128) other than eosin-red;
   - *eosin*: a positive eosin amount (pink, and the purple of H&E nuclei);
   - *DAB*: no eosin, at least as much DAB as haematoxylin (brown);
   - *haematoxylin*: the rest (blue, as a counterstain is).

   Then ``"unrecognised"`` when off-stain is 20 % or more; ``"ihc-dab"`` when DAB is
   3 % or more and eosin under 15 % (the missing eosin is what tells an immunostain
   from brown pigment on an H&E slide); ``"he"`` when eosin is 25 % or more;
   ``"unrecognised"`` otherwise (no eosin and no DAB: haematoxylin alone, a special
   stain, an immunostain with hardly any positive cells).

Ruifrok's vectors give real H&E a large DAB amount (real eosin absorbs more blue
than theirs), so the rule never weighs DAB amounts against eosin amounts; it uses the
sign of the eosin amount and the order of DAB and haematoxylin, which hold on the
5000 Kather 2016 tiles. Optical densities are taken against 255: brightfield
scanners calibrate glass to near white.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from histoviewer.slide.base import SlideReader

log = logging.getLogger(__name__)

HE = "he"
FLUORESCENCE = "fluorescence"
GREYSCALE = "greyscale"
IHC_DAB = "ihc-dab"
UNRECOGNISED = "unrecognised"
NO_TISSUE = "no-tissue"
#: Every kind :func:`check_stain` returns; only HE and NO_TISSUE are ``ok``.
KINDS = (HE, FLUORESCENCE, GREYSCALE, IHC_DAB, UNRECOGNISED, NO_TISSUE)

#: Longest thumbnail side :func:`check_slide_stain` reads by default.
DEFAULT_THUMBNAIL_SIZE = 1024

#: A pixel whose brightest channel is below this is black (fluorescence background).
BLACK_LEVEL = 32
# Dark background: at least this share of the image black, and no more glass than
# dim glow (not black, brightest channel below _DIM_LEVEL).
_DARK_MIN_BLACK = 0.5
_DIM_LEVEL = 128
# Glass: every channel at least this bright and less chroma than _GLASS_CHROMA.
_GLASS_LEVEL = 200
_GLASS_CHROMA = 24
# Tissue: some channel at most this level (optical density 0.2 or more) or the pixel
# has _TISSUE_CHROMA of colour (pale eosin is light but clearly pink).
_TISSUE_LEVEL = 160
_TISSUE_CHROMA = 24
# A tissue pixel with less chroma (max - min channel) than this is grey.
_COLOUR_CHROMA = 12
_MIN_TISSUE = 0.02
_GREY_MAX_COLOURED = 0.10
# Shaded: darker than glass (brightest channel at most this, optical density >= 0.07).
# Pale tissue in a grey image is shaded but no tissue: it has neither density nor
# colour. Greyscale when most shaded pixels are neutral (channels within _NEUTRAL_CHROMA).
_SHADE_LEVEL = 216
_NEUTRAL_CHROMA = 3
_GREY_MIN_NEUTRAL = 0.75
_OFF_STAIN_MAX = 0.20
_IHC_MIN_DAB = 0.03
_IHC_MAX_EOSIN = 0.15
_HE_MIN_EOSIN = 0.25
# Vivid: chroma at least 0.85 of the brightest channel, which is at least 128; as a
# table of the least chroma for each brightest level (256: never).
_LEVELS = np.arange(256)
_VIVID_MIN_CHROMA = np.where(_LEVELS >= 128, np.ceil(0.85 * _LEVELS), 256).astype(np.uint16)
# Images are subsampled to about this many pixels: the shares are stable long before.
_MAX_PIXELS = 1 << 20
# Images measured at once by check_stains: bounds the float temporaries (~40 B/pixel).
_BATCH_PIXELS = 1 << 16

# Ruifrok & Johnston's H-E-DAB optical density vectors (R, G, B), one stain a row.
STAIN_VECTORS = np.array(
    [
        [0.650, 0.704, 0.286],  # haematoxylin
        [0.072, 0.990, 0.105],  # eosin
        [0.268, 0.570, 0.776],  # DAB
    ]
)
STAIN_VECTORS = STAIN_VECTORS / np.linalg.norm(STAIN_VECTORS, axis=1, keepdims=True)
# od (..., 3) @ _UNMIX gives the (haematoxylin, eosin, DAB) amounts.
_UNMIX = np.linalg.inv(STAIN_VECTORS).astype(np.float32)
# Optical density of each 8-bit level against white; level 0 as 1 to stay finite.
_OD = (-np.log10(np.maximum(np.arange(256), 1) / 255.0)).astype(np.float32)

# The figures in StainCheck.details, all fractions in [0, 1].
_FIGURES = (
    "black",  # of all pixels
    "dim",  # of all pixels
    "glass",  # of all pixels
    "tissue",  # of all pixels
    "coloured",  # of tissue pixels
    "shaded",  # of all pixels
    "neutral",  # of shaded pixels
    "eosin",  # the four shares of the coloured tissue's optical density; they sum to 1
    "dab",
    "haematoxylin",
    "off_stain",
)

_WHY = (
    "The tissue model was trained on brightfield H&E slides, so its map of this slide "
    "would be meaningless."
)


@dataclass(frozen=True)
class StainCheck:
    """What a slide looks like, and the warning to show when it is not H&E.

    Attributes:
        kind: one of :data:`KINDS`.
        warning: ``None`` when ``ok``; else a complete message for the user: what the
            slide looks like, why that matters and what to do.
        details: the measured figures (fractions in [0, 1], rounded to 4 places):
            ``black``, ``dim``, ``glass``, ``tissue``, ``shaded`` (of all pixels),
            ``coloured`` (of tissue pixels), ``neutral`` (of shaded pixels), and
            ``eosin``, ``dab``, ``haematoxylin``, ``off_stain``: the shares of the
            coloured tissue's optical density (they sum to 1; all 0 when no pixel is
            coloured).
    """

    kind: str
    warning: str | None
    details: dict[str, float] = field(default_factory=dict, compare=False, hash=False)

    @property
    def ok(self) -> bool:
        """True when mapping with an H&E model makes sense (or cannot be judged)."""
        return self.kind in (HE, NO_TISSUE)

    def summary(self) -> str:
        """One line for a log: the kind and the figures."""
        figures = " ".join(f"{k}={v:.3f}" for k, v in self.details.items())
        return f"stain check: {self.kind} ({figures})"


def check_stain(image: np.ndarray) -> StainCheck:
    """Check that an RGB uint8 image (H, W, 3) of a whole slide looks like H&E.

    Give a thumbnail of the whole slide (512-1024 px): a region may be all glass or
    all of one tissue. Larger images are subsampled; RGBA and (H, W) grey are
    accepted. Raises ``ValueError`` for anything but uint8 pixels.
    """
    pixels = _pixels(image)
    return _decide(_row(_measure(pixels[None]), 0))


def check_stains(images: np.ndarray | Sequence[np.ndarray]) -> list[StainCheck]:
    """:func:`check_stain` of each image, measured together when they share a size.

    ``images``: an (N, H, W, 3) uint8 array or a sequence of images. Each image is
    judged on its own, exactly as :func:`check_stain` would; a stack of small tiles
    is only faster.
    """
    if not (isinstance(images, np.ndarray) and images.ndim == 4):
        return [check_stain(image) for image in images]
    flat = _pixels_stack(images)
    per_batch = max(1, _BATCH_PIXELS // max(flat.shape[1], 1))
    checks: list[StainCheck] = []
    for start in range(0, len(flat), per_batch):
        figures = _measure(flat[start : start + per_batch])
        checks.extend(_decide(_row(figures, i)) for i in range(len(figures["black"])))
    return checks


def check_slide_stain(slide: SlideReader, max_size: int = DEFAULT_THUMBNAIL_SIZE) -> StainCheck:
    """:func:`check_stain` of the slide's thumbnail (``max_size`` px on its longest side).

    Reading a 1024 px thumbnail takes 10-200 ms on a pyramid; the check itself about
    20 ms. Logs the kind and figures at INFO. Reader errors (``SlideError``) pass
    through.
    """
    check = check_stain(slide.thumbnail(max_size))
    log.info("%s", check.summary())
    return check


def is_dark_background(image: np.ndarray) -> bool:
    """True when an RGB uint8 image has a black background, as a fluorescence scan has.

    At least half of the pixels are black (brightest channel below
    :data:`BLACK_LEVEL`) and bright colourless glass does not outnumber dim glow. A
    brightfield scan with a black unscanned margin is not dark: what is not black
    there is mostly glass.
    """
    r, g, b = _planes(_pixels(image)[None])
    vmax, vmin = _max3(r, g, b), _min3(r, g, b)
    black, dim, glass = _light(vmax, vmin)
    return _is_dark(_share(black)[0], _share(dim)[0], _share(glass)[0])


def _is_dark(black: float, dim: float, glass: float) -> bool:
    return black >= _DARK_MIN_BLACK and glass <= dim


def _pixels(image: np.ndarray) -> np.ndarray:
    """(P, 3) uint8 RGB pixels of an image, subsampled to about _MAX_PIXELS."""
    rgb = np.asarray(image)
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.ndim != 3 or rgb.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / _MAX_PIXELS))))
    rgb = rgb[::step, ::step]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return rgb[..., :3].reshape(-1, 3)


def _pixels_stack(images: np.ndarray) -> np.ndarray:
    """(N, P, 3) uint8 pixels of an (N, H, W, C) stack, as _pixels does each image."""
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {images.dtype}")
    if images.shape[-1] not in (3, 4):
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
    step = max(1, int(np.ceil(np.sqrt(images.shape[1] * images.shape[2] / _MAX_PIXELS))))
    return images[:, ::step, ::step, :3].reshape(len(images), -1, 3)


def _planes(pixels: np.ndarray) -> np.ndarray:
    # Contiguous (N, P) channel planes: numpy reduces over a last axis of 3 about ten
    # times slower than it combines three planes.
    return np.ascontiguousarray(np.moveaxis(pixels, -1, 0))


def _max3(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(r, g), b)


def _min3(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(r, g), b)


def _light(vmax: np.ndarray, vmin: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per pixel: black, dim (not black, below half brightness), colourless glass."""
    black = vmax < BLACK_LEVEL
    dim = ~black & (vmax < _DIM_LEVEL)
    glass = (vmin >= _GLASS_LEVEL) & (vmax - vmin < _GLASS_CHROMA)
    return black, dim, glass


def _share(mask: np.ndarray) -> np.ndarray:
    return np.count_nonzero(mask, axis=-1) / max(mask.shape[-1], 1)


def _measure(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The figures of _FIGURES for each image of (N, P, 3) uint8 pixels, as (N,) arrays."""
    r, g, b = _planes(pixels)
    vmax, vmin = _max3(r, g, b), _min3(r, g, b)
    chroma = vmax - vmin  # uint8: vmax >= vmin, so no wrap-around
    black, dim, glass = _light(vmax, vmin)
    tissue = ~black & ((vmin <= _TISSUE_LEVEL) | (chroma >= _TISSUE_CHROMA))
    coloured = tissue & (chroma >= _COLOUR_CHROMA)
    shaded = ~black & (vmax <= _SHADE_LEVEL)
    n_shaded = np.count_nonzero(shaded, axis=-1)

    odr, odg, odb = _OD[r], _OD[g], _OD[b]
    u = _UNMIX
    eosin = u[0, 1] * odr + u[1, 1] * odg + u[2, 1] * odb
    dab_over_haem = (u[0, 2] - u[0, 0]) * odr + (u[1, 2] - u[1, 0]) * odg
    dab_over_haem += (u[2, 2] - u[2, 0]) * odb
    green = (g > r) & (g > b)
    # Eosin-red may glow (blood is that vivid); haematoxylin, DAB and violet never do.
    vivid = chroma >= _VIVID_MIN_CHROMA[vmax]
    is_eosin = ~green & (eosin > 0)
    off_stain = green | (vivid & ~(is_eosin & (r >= b)))
    is_eosin &= ~off_stain
    is_dab = ~off_stain & ~is_eosin & (dab_over_haem >= 0)
    is_haem = ~off_stain & ~is_eosin & ~is_dab

    weight = odr + odg + odb
    weight *= coloured
    total = np.maximum(weight.sum(axis=-1), np.float32(1e-6))
    n_tissue = np.count_nonzero(tissue, axis=-1)
    return {
        "black": _share(black),
        "dim": _share(dim),
        "glass": _share(glass),
        "tissue": n_tissue / max(tissue.shape[-1], 1),
        "coloured": np.count_nonzero(coloured, axis=-1) / np.maximum(n_tissue, 1),
        "shaded": _share(shaded),
        "neutral": np.count_nonzero(shaded & (chroma <= _NEUTRAL_CHROMA), axis=-1)
        / np.maximum(n_shaded, 1),
        "eosin": (weight * is_eosin).sum(axis=-1) / total,
        "dab": (weight * is_dab).sum(axis=-1) / total,
        "haematoxylin": (weight * is_haem).sum(axis=-1) / total,
        "off_stain": (weight * off_stain).sum(axis=-1) / total,
    }


def _row(figures: dict[str, np.ndarray], index: int) -> dict[str, float]:
    return {name: round(float(figures[name][index]), 4) for name in _FIGURES}


def _percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def _decide(f: dict[str, float]) -> StainCheck:
    """The kind and warning for one image's figures (the rule in the module docstring)."""
    if _is_dark(f["black"], f["dim"], f["glass"]):
        return StainCheck(
            FLUORESCENCE,
            f"This slide looks like a fluorescence scan, not a brightfield H&E slide: "
            f"{_percent(f['black'])} of it is black background, where a brightfield slide "
            f"shows bright glass. {_WHY} Open the brightfield H&E scan of this tissue "
            f"instead.",
            f,
        )
    grey_shades = f["shaded"] >= _MIN_TISSUE and f["neutral"] >= _GREY_MIN_NEUTRAL
    grey_tissue = f["tissue"] >= _MIN_TISSUE and f["coloured"] < _GREY_MAX_COLOURED
    if grey_shades or grey_tissue:
        return StainCheck(
            GREYSCALE,
            f"This slide has no colour: it looks like a greyscale image, in which the "
            f"pink eosin and purple haematoxylin of H&E cannot be told apart. {_WHY} "
            f"Open the original colour scan of the H&E slide instead.",
            f,
        )
    if f["tissue"] < _MIN_TISSUE:
        return StainCheck(NO_TISSUE, None, f)
    if f["off_stain"] >= _OFF_STAIN_MAX:
        return StainCheck(
            UNRECOGNISED,
            f"This slide does not look like a stained tissue section: "
            f"{_percent(f['off_stain'])} of its colour is green or glowing, vivid colour "
            f"that neither H&E nor any other common brightfield stain gives. {_WHY} "
            f"Check that you opened the right file: a brightfield scan of an H&E-stained "
            f"section.",
            f,
        )
    if f["dab"] >= _IHC_MIN_DAB and f["eosin"] < _IHC_MAX_EOSIN:
        counterstain = (
            f" with a blue haematoxylin counterstain ({_percent(f['haematoxylin'])})"
            if f["haematoxylin"] >= 0.05
            else ""
        )
        return StainCheck(
            IHC_DAB,
            f"This slide looks like an immunohistochemistry stain, not H&E: it shows brown "
            f"DAB ({_percent(f['dab'])} of the stain){counterstain} and almost no pink "
            f"eosin ({_percent(f['eosin'])}). {_WHY} Map the H&E-stained section of this "
            f"tissue instead.",
            f,
        )
    if f["eosin"] >= _HE_MIN_EOSIN:
        return StainCheck(HE, None, f)
    return StainCheck(
        UNRECOGNISED,
        f"This slide's stain is not recognised as H&E: it shows almost no pink eosin "
        f"({_percent(f['eosin'])} of the stain; haematoxylin {_percent(f['haematoxylin'])},"
        f" brown DAB {_percent(f['dab'])}). It may be stained with haematoxylin alone, "
        f"with a special stain, or be an immunostain with hardly any positive cells. "
        f"{_WHY} Map the H&E-stained section of this tissue instead.",
        f,
    )
