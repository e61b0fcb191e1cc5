"""Cut labelled patches out of slides into a dataset that ``histoviewer train`` reads.

Each label becomes one PNG (lossless) of the model's patch: ``info.patch_size``
pixels at ``info.mpp`` µm/px, centred on the label, read from the pyramid level a map
would read it from and brought to the model's scale by the same resampling
(:func:`histoviewer.model.preprocessing.to_patch_scale`). A label put on a map of
another model is therefore cut at this model's scale around the same spot.

Layout (a class-folder dataset)::

    OUT/01_TUMOR/<slide>__x<X>_y<Y>.png     X, Y: the patch's level-0 top-left corner
    OUT/labels.csv                          file, class, slide path, x, y, size

Folders are named after the model's classes in its output order, so the dataset's
classes read back as the model's. The file name carries the slide and position:
training holds out a part of every slide's labels (see
:func:`histoviewer.training.split.make_slide_split`). ``add_tiles`` mixes in tiles of
a class-folder dataset (e.g. the Kather tiles, so that the classes the labels do not
cover are not forgotten).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from histoviewer.classes import default_classes
from histoviewer.errors import HistoViewerError
from histoviewer.fileio import atomic_write_bytes, atomic_write_text, storage_error
from histoviewer.labels.store import LabelError, LabelSet, match_class
from histoviewer.mapping.grid import slide_patch
from histoviewer.tasks import Cancelled, CancelToken

if TYPE_CHECKING:
    from histoviewer.model import ModelInfo
    from histoviewer.slide import SlideReader

log = logging.getLogger(__name__)

MANIFEST_FILE = "labels.csv"
#: A file stem written here: ``<slide>__x<X>_y<Y>``; group 1 is the slide.
SLIDE_POSITION = re.compile(r"^(.+)__x\d+_y\d+$")
#: The group every mixed-in tile (any other name) counts under.
TILES_GROUP = "tiles"

ExtractProgress = Callable[[int, int], None]


@dataclass
class ExtractResult:
    """What :func:`extract_tiles` wrote: tiles per class and per slide, and the folder."""

    out: Path
    per_class: dict[str, int] = field(default_factory=dict)
    per_slide: dict[str, int] = field(default_factory=dict)
    mixed: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.per_class.values())

    def summary(self) -> str:
        classes = ", ".join(f"{n} {c}" for c, n in self.per_class.items())
        text = f"{self.count} labelled patches from {len(self.per_slide)} slide(s) ({classes})"
        if self.mixed:
            text += f", plus {sum(self.mixed.values())} tiles mixed in"
        return text


def class_folder(index: int, name: str) -> str:
    """The dataset folder of the model's class ``index``: Kather names for Kather
    classes ("01_TUMOR"), else "NN_NAME"; both read back as ``name``."""
    for c in default_classes():
        if c.name == name and c.folder.startswith(f"{index + 1:02d}_"):
            return c.folder
    return f"{index + 1:02d}_{name.upper()}"


def slide_stem(path: str | os.PathLike) -> str:
    """A file-name-safe short name of a slide, as it appears in the tiles' names."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = Path(name).stem
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "slide"


def check_classes(labels: LabelSet, class_names: Sequence[str], where: str = "") -> None:
    """Raise LabelError naming every label class the model does not know."""
    unknown = sorted({lab.name for lab in labels if match_class(lab.name, class_names) is None})
    if unknown:
        source = f" of {where}" if where else ""
        raise LabelError(
            f"the labels{source} name classes the model does not know: "
            f"{', '.join(unknown)}; the model's classes are {', '.join(class_names)}"
        )


def extract_tiles(
    jobs: Sequence[tuple[SlideReader, LabelSet]],
    info: ModelInfo,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: ExtractProgress | None = None,
    cancel: CancelToken | None = None,
) -> ExtractResult:
    """Write every label of every (slide, labels) pair as a tile of ``info``'s patch.

    ``out`` must be empty or new; with ``overwrite`` the tiles and manifest an earlier
    extraction wrote there are replaced. Raises LabelError for a class the model does
    not know (nothing is written) or when there are no labels, StorageError when the
    disk refuses; ``cancel`` raises Cancelled between slides' patches.
    """
    out = Path(out).expanduser()
    names = list(info.class_names)
    total = sum(len(labels) for _, labels in jobs)
    if total == 0:
        raise LabelError("there are no labelled patches to extract: label some patches first")
    for slide, labels in jobs:
        check_classes(labels, names, _name(slide))
    _prepare_folder(out, overwrite)
    result = ExtractResult(out)
    rows: list[list[object]] = []
    done = 0
    stems: dict[str, str] = {}
    for slide, labels in jobs:
        stem = _unique_stem(slide_stem(_name(slide)), str(_name(slide)), stems)
        for lab in labels:
            if cancel is not None and cancel.cancelled:
                raise Cancelled()
            cid = match_class(lab.name, names)
            assert cid is not None  # checked above
            x, y, size, pixels = cut_patch(slide, info, lab.centre)
            folder = class_folder(cid, names[cid])
            rel = f"{folder}/{stem}__x{x}_y{y}.png"
            _write_png(out / rel, pixels)
            rows.append([rel, names[cid], _name(slide), x, y, size])
            result.per_class[names[cid]] = result.per_class.get(names[cid], 0) + 1
            result.per_slide[stem] = result.per_slide.get(stem, 0) + 1
            done += 1
            if progress is not None:
                progress(done, total)
    _write_manifest(out, rows)
    log.info("extracted %s into %s", result.summary(), out)
    return result


def cut_patch(
    slide: SlideReader, info: ModelInfo, centre: tuple[float, float]
) -> tuple[int, int, int, np.ndarray]:
    """(x, y, size, pixels): the model's patch centred on level-0 ``centre`` (kept on
    the slide), its level-0 box and uint8 (P, P, 3) pixels at the model's scale."""
    from histoviewer.model.preprocessing import to_patch_scale  # torch: only when cutting

    size, level, down = slide_patch(slide, info)  # where a map reads this patch from
    width, height = slide.dimensions
    if width < size or height < size:
        raise HistoViewerError(
            f"{_name(slide)} is smaller than one patch of the model ({size} px at its scale)"
        )
    x = int(min(max(0, round(centre[0] - size / 2)), width - size))
    y = int(min(max(0, round(centre[1] - size / 2)), height - size))
    side = max(1, round(size / down))
    pixels = slide.read_region(level, round(x / down), round(y / down), side, side)
    return x, y, size, to_patch_scale(pixels[None], info.patch_size)[0]


def add_tiles(
    out: str | os.PathLike,
    source: str | os.PathLike,
    info: ModelInfo,
    *,
    per_class: int | None = 100,
    seed: int = 2000,
    cancel: CancelToken | None = None,
) -> dict[str, int]:
    """Copy at most ``per_class`` tiles of each class of the dataset ``source`` (folder or
    zip) into ``out``'s class folders, at the model's patch size; returns tiles per
    class. Raises LabelError when ``source`` has a class the model does not know."""
    from histoviewer.training.dataset import list_tiles, load_tiles

    out = Path(out)
    index = list_tiles(source)
    names = list(info.class_names)
    unknown = [n for n in index.class_names if match_class(n, names) is None]
    if unknown:
        raise LabelError(
            f"the tiles in {source} hold classes the model does not know: "
            f"{', '.join(unknown)}; the model's classes are {', '.join(names)}"
        )
    data = load_tiles(
        index, size=info.patch_size, limit_per_class=per_class, limit_seed=seed, cancel=cancel
    )
    counts: dict[str, int] = {}
    rows = []
    for image, label, stem in zip(data.images, data.labels, data.stems, strict=True):
        cid = match_class(data.class_names[int(label)], names)
        assert cid is not None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
        if SLIDE_POSITION.match(safe):  # never mistaken for a labelled slide patch
            safe = f"{TILES_GROUP}-{safe}"
        rel = f"{class_folder(cid, names[cid])}/{safe}.png"
        _write_png(out / rel, image)
        rows.append([rel, names[cid], str(source), "", "", ""])
        counts[names[cid]] = counts.get(names[cid], 0) + 1
    _write_manifest(out, rows, append=True)
    log.info("mixed %d tiles of %s into %s", sum(counts.values()), source, out)
    return counts


def slide_groups(stems: Sequence[str]) -> np.ndarray:
    """The slide of every tile stem written here, :data:`TILES_GROUP` for other tiles."""
    groups = []
    for stem in stems:
        m = SLIDE_POSITION.match(stem)
        groups.append(m.group(1) if m else TILES_GROUP)
    return np.asarray(groups, dtype=object)


def _name(slide: SlideReader) -> str:
    path = getattr(slide, "path", None)
    return str(path) if path is not None else "in-memory slide"


def _unique_stem(stem: str, path: str, seen: dict[str, str]) -> str:
    # Two slides of one name in different folders must not share tile names.
    candidate, n = stem, 2
    while candidate in seen and seen[candidate] != path:
        candidate, n = f"{stem}-{n}", n + 1
    seen[candidate] = path
    return candidate


def _prepare_folder(out: Path, overwrite: bool) -> None:
    manifest = out / MANIFEST_FILE
    if out.is_dir() and any(out.iterdir()):
        if not (overwrite and manifest.is_file()):
            what = "an earlier extraction" if manifest.is_file() else "other files"
            hint = " (--overwrite replaces it)" if manifest.is_file() else ""
            raise LabelError(f"{out} already holds {what}; choose an empty folder{hint}")
        _remove_extraction(out, manifest)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(out, exc) from exc


def _remove_extraction(out: Path, manifest: Path) -> None:
    with manifest.open(newline="", encoding="utf-8") as fh:
        files = [row["file"] for row in csv.DictReader(fh) if row.get("file")]
    for rel in files:
        target = (out / rel).resolve()
        if out.resolve() in target.parents:
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the folder still holds other files
                target.parent.rmdir()
    manifest.unlink()


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(path.parent, exc) from exc
    atomic_write_bytes(path, buffer.getvalue())


def _write_manifest(out: Path, rows: list[list[object]], *, append: bool = False) -> None:
    path = out / MANIFEST_FILE
    text = ""
    if append and path.is_file():
        text = path.read_text(encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not text:
        writer.writerow(["file", "class", "slide", "x", "y", "size"])
    writer.writerows(rows)
    atomic_write_text(path, text + buffer.getvalue())
