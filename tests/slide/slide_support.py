"""Helpers shared by the slide tests."""

import numpy as np


def box_reduce(image: np.ndarray, ds: int) -> np.ndarray:
    """Reference downsampling (mean of ds x ds blocks, edges repeated)."""
    h, w = image.shape[:2]
    ph, pw = -(-h // ds) * ds, -(-w // ds) * ds
    padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge").astype(float)
    return padded.reshape(ph // ds, ds, pw // ds, ds, 3).mean(axis=(1, 3))


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def set_tag(path, name: str, *values: int, page: int = 0) -> None:
    """Overwrite the values of an existing SHORT / LONG / LONG8 tag in place.

    Makes the damaged and unusual files the tests need out of files tifffile
    wrote: the tag keeps its type and count, so only values that fit may be given.
    """
    import struct

    import tifffile

    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[page].tags[name]
        fmt = {3: "H", 4: "I", 16: "Q"}[int(tag.dtype)]
        prefix = "<" if tif.byteorder == "<" else ">"
        offset, count = tag.valueoffset, tag.count
    if len(values) != count:
        raise ValueError(f"{name} holds {count} values, got {len(values)}")
    data = bytearray(path.read_bytes())
    struct.pack_into(prefix + fmt * count, data, offset, *values)
    path.write_bytes(bytes(data))
