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
