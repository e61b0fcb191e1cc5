"""Turning decoded pixels of any supported layout into RGB uint8.

Every backend describes its stored pixels once, when the slide is opened, as a
:class:`PixelLayout`; :func:`check_layout` refuses what a brightfield viewer
cannot show (with the reason as a sentence fragment), and
:meth:`PixelLayout.to_rgb` converts each decoded tile or region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Photometric interpretations (names as in the TIFF specification).
MINISWHITE = "miniswhite"
MINISBLACK = "minisblack"
RGB = "rgb"
PALETTE = "palette"
YCBCR = "ycbcr"  # only where the decoder leaves YCbCr (Aperio JPEG 2000, 33003)


@dataclass(frozen=True)
class PixelLayout:
    """How one level's decoded pixels are stored.

    ``colours`` is 1 (grey, palette) or 3 (RGB, YCbCr) channels; ``alpha``
    says whether the channel after them is alpha and ``premultiplied``
    whether colour is already multiplied by it (further channels are
    ignored); ``maxvalue`` is the value that means full intensity (255 for
    8-bit, 65535 or less for 16-bit);
    ``colormap`` is an (N, 3) uint8 lookup table for palette images.
    """

    dtype: np.dtype
    colours: int
    photometric: str = RGB
    alpha: bool = False
    premultiplied: bool = False
    maxvalue: int = 255
    colormap: np.ndarray | None = None

    def to_rgb(self, data: np.ndarray) -> np.ndarray:
        """Convert decoded pixels (h, w) or (h, w, samples) to (h, w, 3) uint8 RGB."""
        if data.ndim == 2:
            data = data[:, :, None]
        if self.photometric == PALETTE:
            assert self.colormap is not None
            index = np.minimum(data[:, :, 0], len(self.colormap) - 1)
            return np.ascontiguousarray(self.colormap[index])
        if data.dtype == np.bool_:
            data = data.astype(np.uint8) * np.uint8(255)
            maxvalue = 255
        else:
            maxvalue = self.maxvalue
        colour_count = self.colours
        if maxvalue == 255 and data.dtype == np.uint8:
            values = data
        else:
            # Scale wider types to 8 bits; rounding keeps 65535 -> 255 exact.
            scaled = data.astype(np.float32) * (255.0 / maxvalue)
            values = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
        colour = values[:, :, :colour_count]
        if self.photometric == MINISWHITE:
            colour = 255 - colour
        if self.photometric == YCBCR:
            colour = ycbcr_to_rgb(colour)
        if colour_count == 1:
            colour = np.repeat(colour, 3, axis=2)
        if self.alpha:
            colour = _over_white(colour, values[:, :, colour_count], self.premultiplied)
        return np.ascontiguousarray(colour, dtype=np.uint8)


def check_layout(
    *,
    dtype: np.dtype,
    samples: int,
    photometric: str,
    extra_samples: int = 0,
) -> str | None:
    """Why pixels stored like this cannot be shown as RGB, or ``None`` if they can.

    ``extra_samples`` counts samples beyond the colour ones (alpha or others).
    The answer completes the sentence "<file> cannot be opened: it ...".
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return f"holds floating-point data ({dtype.name}), not a brightfield picture"
    if dtype.kind == "i":
        return f"holds signed {dtype.name} data, not a brightfield picture"
    if dtype.kind == "u" and dtype.itemsize > 2:
        return f"holds {dtype.name} data; only 8- and 16-bit images are supported"
    if dtype.kind not in "bu":
        return f"holds data of type {dtype.name}, which is not an image type"
    colour = samples - extra_samples
    if photometric in (MINISBLACK, MINISWHITE, PALETTE):
        if colour != 1 or extra_samples > 1:
            return (
                f"has {samples} channels (e.g. multiplexed fluorescence); only RGB, RGBA, "
                "greyscale and palette images are supported"
            )
    elif photometric in (RGB, YCBCR):
        if colour != 3 or extra_samples > 1:
            return (
                f"has {samples} channels (e.g. multiplexed fluorescence); only RGB, RGBA, "
                "greyscale and palette images are supported"
            )
    else:
        return f"uses the {photometric} colour model, which is not supported"
    return None


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Full-range (JPEG/JFIF) YCbCr to RGB, uint8 in and out."""
    y = ycc[:, :, 0].astype(np.float32)
    cb = ycc[:, :, 1].astype(np.float32) - 128.0
    cr = ycc[:, :, 2].astype(np.float32) - 128.0
    rgb = np.empty((*ycc.shape[:2], 3), np.float32)
    rgb[:, :, 0] = y + 1.402 * cr
    rgb[:, :, 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[:, :, 2] = y + 1.772 * cb
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Full-range RGB to YCbCr, uint8 in and out (the inverse of :func:`ycbcr_to_rgb`)."""
    r, g, b = (rgb[:, :, i].astype(np.float32) for i in range(3))
    out = np.empty((*rgb.shape[:2], 3), np.float32)
    out[:, :, 0] = 0.299 * r + 0.587 * g + 0.114 * b
    out[:, :, 1] = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    out[:, :, 2] = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _over_white(colour: np.ndarray, alpha: np.ndarray, premultiplied: bool) -> np.ndarray:
    """Composite colour with alpha over a white page (transparent = no tissue)."""
    a = alpha.astype(np.float32)[:, :, None] * (1.0 / 255.0)
    c = colour.astype(np.float32)
    out = c + 255.0 * (1.0 - a) if premultiplied else c * a + 255.0 * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
