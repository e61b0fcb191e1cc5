"""Synthetic labelled tiles for the training tests (generated in tmp folders)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# Three classes whose tiles differ clearly in colour, so a tiny network learns them
# in a couple of epochs.
CLASS_FOLDERS = ("01_TUMOR", "02_STROMA", "07_ADIPOSE")
CLASS_COLORS = ((150, 40, 110), (235, 150, 190), (245, 240, 245))
FORMATS = ("png", "jpg", "tif", "webp")


def make_tiles(
    root: Path,
    per_class: int = 6,
    size: int = 40,
    *,
    wrapper: str | None = None,
    folders: tuple[str, ...] = CLASS_FOLDERS,
    seed: int = 0,
) -> Path:
    """Write ``per_class`` noisy tiles of each class colour, cycling through formats."""
    rng = np.random.default_rng(seed)
    base = root / wrapper if wrapper else root
    for c, folder in enumerate(folders):
        target = base / folder
        target.mkdir(parents=True, exist_ok=True)
        colour = np.array(CLASS_COLORS[c % len(CLASS_COLORS)], dtype=np.float32)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
            ext = FORMATS[i % len(FORMATS)]
            image = Image.fromarray(pixels)
            if ext == "jpg":
                image.save(target / f"tile_{i:03d}.{ext}", quality=95)
            elif ext == "webp":
                image.save(target / f"tile_{i:03d}.{ext}", lossless=True)
            else:
                image.save(target / f"tile_{i:03d}.{ext}")
    return root


def zip_folder(folder: Path, target: Path, *, junk: bool = True) -> Path:
    """Zip ``folder`` the way the Kather download is zipped (plus macOS junk)."""
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
        if junk:
            zf.writestr("__MACOSX/._junk", b"\x00\x05")
            zf.writestr(".DS_Store", b"junk")
    return target


def tiny_config(data: Path, out: Path, **changes):
    """A run that takes a second or two on a CPU: resnet18 at 32 px, batch 20, 2 epochs."""
    from histoviewer.training import preset

    values = dict(
        data=str(data),
        out=str(out),
        arch="resnet18",
        image_size=32,
        batch_size=20,
        epochs=2,
        device="cpu",
        workers=2,
    )
    values.update(changes)
    return preset("recipe", **values)


def make_specimen_tiles(
    root: Path,
    specimens: int = 6,
    per_class: int = 5,
    size: int = 32,
    *,
    absent: tuple[tuple[int, int], ...] = (),
    name: str = "CRC-Prim-HE-{:02d}",
    seed: int = 0,
) -> Path:
    """Tiles of ``specimens`` specimens named the Kather 2016 way
    ("{i}_CRC-Prim-HE-03_001.tif_Row_1_Col_1.png"): ``per_class`` of every class from
    every specimen except the (class index, specimen number) pairs in ``absent``. Each
    specimen shifts the class colours a little, as a stain batch would."""
    rng = np.random.default_rng(seed)
    for c, folder in enumerate(CLASS_FOLDERS):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for s in range(1, specimens + 1):
            if (c, s) in absent:
                continue
            shift = np.random.default_rng(100 + s).normal(0, 8, 3)
            colour = np.array(CLASS_COLORS[c], dtype=np.float32) + shift
            for i in range(per_class):
                noise = rng.normal(0, 12, (size, size, 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                stem = f"{c}{s:02d}{i:03d}_{name.format(s)}_001.tif_Row_{i}_Col_1"
                Image.fromarray(pixels).save(root / folder / f"{stem}.png")
    return root
