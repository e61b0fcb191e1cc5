"""Labelled tiles from a folder or a zip with one sub-folder per class.

Layout (the Kather 2016 download and anything like it)::

    DATA/[wrapper/]<CLASS>/<name>.<tif|png|webp|jpg|...>

``DATA`` is a folder or a ``.zip``; one wrapper folder above the class folders is
accepted (``Kather_texture_2016_image_tiles_5000/``), ``__MACOSX``, dot-files and
``Thumbs.db`` are ignored. Class ids are the positions of the sorted folder names;
class names come from :func:`histoviewer.classes.name_from_folder`.

:func:`list_tiles` only lists files (fast: the split can be computed from names
alone); :func:`load_tiles` also decodes every image, in a thread pool, into one
uint8 array ``(N, S, S, 3)``. ``S`` is the tiles' own size: they must all be square
and of one size, because a pixel of every tile must cover the same microns (a
DatasetError names the odd files otherwise). An explicit ``size`` resizes every
tile to ``S = size`` instead (non-square ones centre-cropped first) and says so.
A file that cannot be decoded is logged, recorded in ``TileDataset.skipped`` and
left out; so is a file larger than :data:`MAX_TILE_BYTES`, which is never read (and
named in ``TileDataset.notes``). A layout that cannot be used raises
:class:`~histoviewer.errors.DatasetError` naming the folder or file.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from histoviewer.classes import color_for, name_from_folder
from histoviewer.errors import DatasetError
from histoviewer.fileio import format_bytes, missing_reason
from histoviewer.tasks import CancelToken

log = logging.getLogger(__name__)

_JUNK_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
# Deep enough for DATA/wrapper/CLASS/file plus one more wrapper; stops a walk of a
# whole home directory when the user picks the wrong folder.
_MAX_DEPTH = 5
# Files named in a message about tile sizes (the rest are counted).
_EXAMPLES = 3
# How to get past a size problem, for messages seen on the command line and in the app.
_SIZE_ADVICE = "choose a patch size (--patch-size N; in the app, Advanced > Tile size)"

#: The largest file read as a tile, in bytes (uncompressed, for a zip member). A tile is
#: a few hundred pixels square: a Kather 2016 TIFF is 68 KB, and even an uncompressed
#: 4096 x 4096 RGBA image is 64 MiB. A larger file is a whole slide or a zip bomb (a
#: 2.6 MB zip can hold a 2 GiB member), and reading it whole would take its size in
#: memory (twice: header probe, then decoding) for nothing a tile could use. Such files
#: are left out unread, and no read goes past this even when a zip header understates
#: the size of a member.
MAX_TILE_BYTES = 64 * 1024 * 1024


class _TooLarge(Exception):
    """A file larger than :data:`MAX_TILE_BYTES` (``size``: its size, where known)."""

    def __init__(self, size: int | None = None) -> None:
        super().__init__(size)
        self.size = size


def _image_extensions() -> frozenset[str]:
    return frozenset(ext.lower() for ext in Image.registered_extensions())


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the dataset and why (shown to the user and in the report)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class TileIndex:
    """The image files of a dataset, sorted by (class folder, file name without extension).

    ``entries[i] = (class_id, stem, member)`` where ``member`` is the path relative to
    the source (a zip member name or a path below the folder). Nothing is decoded.
    """

    path: str  # the folder or zip as given
    source: str  # where the class folders are, for messages
    class_folders: list[str]
    entries: list[tuple[int, str, str]]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([e[0] for e in self.entries], dtype=np.int64)

    @property
    def stems(self) -> list[str]:
        return [e[1] for e in self.entries]

    @property
    def class_names(self) -> list[str]:
        return [name_from_folder(f) for f in self.class_folders]

    def limit_per_class(self, limit: int | None, seed: int = 2000) -> TileIndex:
        """At most ``limit`` files per class, a seeded random choice kept in canonical order.

        A random choice (not the first ``limit`` names) because names often encode the
        slide or position, and the first ones would all come from one place.
        """
        if limit is None or limit <= 0:
            return self
        labels = self.labels
        rng = np.random.default_rng(seed)
        keep: list[int] = []
        for cid in range(len(self.class_folders)):
            members = np.flatnonzero(labels == cid)
            if len(members) > limit:
                members = np.sort(rng.choice(members, size=limit, replace=False))
            keep.extend(members.tolist())
        keep.sort()
        return TileIndex(
            self.path,
            self.source,
            self.class_folders,
            [self.entries[i] for i in keep],
            list(self.skipped),
        )


@dataclass
class TileDataset:
    """Decoded tiles: ``images`` uint8 (N, S, S, 3), ``labels`` int64 (N,), in canonical order.

    ``tile_size``: the (width, height) most files had before any resizing (the tiles'
    own scale: each of their pixels covers the microns the user states);
    ``size_counts``: files per size as read, ``"W x H"`` -> count; ``resized``: the files
    whose pixels were cropped or resized to S; ``notes``: what was done to them, in
    sentences for the user (empty when every tile was used as it is).
    """

    source: str
    class_folders: list[str]
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    images: np.ndarray
    labels: np.ndarray
    stems: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)
    tile_size: tuple[int, int] = (0, 0)
    size_counts: dict[str, int] = field(default_factory=dict)
    resized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tile_size == (0, 0):  # arrays from elsewhere: their size is their own
            side = int(self.images.shape[1])
            self.tile_size = (side, side)
            self.size_counts = self.size_counts or {_size_text(side, side): len(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def patch_size(self) -> int:
        """The side S of the stored tiles, in pixels."""
        return int(self.images.shape[1])

    @property
    def scale_factor(self) -> float:
        """How many of the tiles' own pixels one stored pixel spans (1.0 unless resized):
        the stored tiles' microns per pixel are the tiles' times this."""
        return min(self.tile_size) / self.patch_size

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.num_classes).tolist()


# --------------------------------------------------------------------------- sources


class _Source:
    """Read-only access to the files of a folder or a zip by relative POSIX path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def walk(self) -> tuple[list[PurePosixPath], set[PurePosixPath]]:
        """All files and all folders (relative), junk left out."""
        raise NotImplementedError

    def read(self, member: str) -> bytes:
        raise NotImplementedError

    def display(self, member: str) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FolderSource(_Source):
    def walk(self) -> tuple[list[PurePosixPath], set[PurePosixPath]]:
        files: list[PurePosixPath] = []
        dirs: set[PurePosixPath] = set()
        # Symlinked class folders are common (datasets shared between projects); the
        # depth limit stops a link loop.
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=True):
            rel = Path(dirpath).relative_to(self.path).as_posix()
            base = PurePosixPath() if rel == "." else PurePosixPath(rel)
            depth = len(base.parts)
            dirnames[:] = (
                sorted(d for d in dirnames if not _is_junk(d)) if depth < _MAX_DEPTH else []
            )
            dirs.update(base / d for d in dirnames)
            files.extend(base / name for name in filenames if not _is_junk(name))
        return files, dirs

    def read(self, member: str) -> bytes:
        with open(self.path / member, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_TILE_BYTES:
                raise _TooLarge(size)
            return _read_bounded(fh)

    def display(self, member: str) -> str:
        return str(self.path / member) if member else str(self.path)


class _ZipSource(_Source):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"cannot open {path} as a zip file ({exc})") from None
        # ZipFile shares one file handle; reads are serialised, decoding is not.
        self._lock = threading.Lock()

    def walk(self) -> tuple[list[PurePosixPath], set[PurePosixPath]]:
        files: list[PurePosixPath] = []
        dirs: set[PurePosixPath] = set()
        for info in self._zip.infolist():
            member = PurePosixPath(info.filename)
            if any(_is_junk(p) for p in member.parts):
                continue
            if info.is_dir():
                dirs.add(member)
            else:
                files.append(member)
            dirs.update(p for p in member.parents if p.parts)
        return files, dirs

    def read(self, member: str) -> bytes:
        with self._lock:
            info = self._zip.getinfo(member)
            if info.file_size > MAX_TILE_BYTES:
                raise _TooLarge(info.file_size)
            with self._zip.open(info) as fh:
                return _read_bounded(fh)

    def display(self, member: str) -> str:
        return f"{self.path}:{member}" if member else str(self.path)

    def close(self) -> None:
        self._zip.close()


def _read_bounded(fh: BinaryIO) -> bytes:
    """All of ``fh``, but never more than :data:`MAX_TILE_BYTES` read (raises _TooLarge):
    a size in a header can lie, and a zip member decompresses to what it holds."""
    data = fh.read(MAX_TILE_BYTES + 1)
    if len(data) > MAX_TILE_BYTES:
        raise _TooLarge()
    return data


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def _open_source(source: str | os.PathLike) -> _Source:
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"cannot open the dataset {path}: {missing_reason(path)}")
    if path.is_dir():
        return _FolderSource(path)
    if zipfile.is_zipfile(path):
        return _ZipSource(path)
    raise DatasetError(
        f"the dataset {path} is neither a folder nor a zip file with one sub-folder per class"
    )


# --------------------------------------------------------------------------- listing


def _strip(paths, n: int = 1):
    return {PurePosixPath(*p.parts[n:]) for p in paths if len(p.parts) > n}


def _class_root(
    files: list[PurePosixPath], dirs: set[PurePosixPath]
) -> tuple[PurePosixPath, list[PurePosixPath], set[PurePosixPath]]:
    """Descend through wrapper folders: while the root holds exactly one folder, no files,
    and that folder holds folders itself, the class folders are one level further down."""
    prefix = PurePosixPath()
    while True:
        top_dirs = {d for d in dirs if len(d.parts) == 1}
        loose = [f for f in files if len(f.parts) == 1]
        if len(top_dirs) != 1 or loose or not any(len(d.parts) >= 2 for d in dirs):
            return prefix, files, dirs
        prefix = prefix / next(iter(top_dirs)).parts[0]
        files = [PurePosixPath(*f.parts[1:]) for f in files]
        dirs = _strip(dirs)


def _index(source: _Source) -> TileIndex:
    prefix, files, dirs = _class_root(*source.walk())
    where = source.display(str(prefix) if prefix.parts else "")
    images = _image_extensions()
    folders = sorted(d.parts[0] for d in dirs if len(d.parts) == 1)
    by_class: dict[str, list[PurePosixPath]] = {f: [] for f in folders}
    for rel in files:
        if len(rel.parts) == 1:
            log.info(
                "ignoring %s: it is not inside a class folder", source.display(str(prefix / rel))
            )
        elif len(rel.parts) > 2:
            log.info(
                "ignoring %s: only images directly inside a class folder are used",
                source.display(str(prefix / rel)),
            )
        else:
            by_class[rel.parts[0]].append(rel)
    if not folders:
        raise DatasetError(
            f"no class folders found in {where}: a dataset needs one sub-folder per class "
            "holding that class's images (e.g. 01_TUMOR/, 02_STROMA/, ...)"
        )
    if len(folders) == 1:
        raise DatasetError(
            f"only one class folder ({folders[0]}) found in {where}: training needs at least "
            "two classes, each in its own sub-folder"
        )
    names: dict[str, str] = {}
    for folder in folders:
        name = name_from_folder(folder)
        if name in names:
            raise DatasetError(
                f"the class folders {names[name]} and {folder} in {where} both name the class "
                f"'{name}'; rename one of them"
            )
        names[name] = folder
    entries: list[tuple[int, str, str]] = []
    skipped: list[SkippedFile] = []
    for cid, folder in enumerate(folders):
        count = 0
        for rel in sorted(by_class[folder]):
            member = str(prefix / rel)
            if rel.suffix.lower() not in images:
                skipped.append(SkippedFile(source.display(member), "not an image file"))
                continue
            entries.append((cid, rel.stem, member))
            count += 1
        if count == 0:
            raise DatasetError(
                f"the class folder {source.display(str(prefix / folder))} holds no images"
            )
    entries.sort(key=lambda e: (e[0], e[1]))
    for (c1, s1, m1), (c2, s2, m2) in itertools.pairwise(entries):
        if c1 == c2 and s1 == s2:
            raise DatasetError(
                f"{source.display(m1)} and {source.display(m2)} have the same name without "
                "extension; the split is keyed by that name, so rename or remove one"
            )
    for item in skipped:
        log.warning("skipping %s: %s", item.path, item.reason)
    return TileIndex(str(source.path), where, folders, entries, skipped)


def list_tiles(source: str | os.PathLike) -> TileIndex:
    """List the image files of a folder or zip without decoding them.

    Raises DatasetError when the dataset is missing or its layout is unusable (no class
    folders, a single class, an empty class folder, two folders naming one class). Files
    that are not images are listed in ``skipped``.
    """
    src = _open_source(source)
    try:
        return _index(src)
    finally:
        src.close()


# --------------------------------------------------------------------------- decoding


def _size_text(width: int, height: int) -> str:
    return f"{width} x {height}"


def _probe(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    with Image.open(BytesIO(data)) as img:
        return img.size


def _decode(data: bytes, size: int) -> tuple[np.ndarray, bool]:
    """The image as (size, size, 3) uint8 RGB, and whether its pixels had to be cropped or
    resized. A non-square image is centre-cropped to a square first: squashing it would
    change the shape of every cell in it."""
    with Image.open(BytesIO(data)) as img:
        img.load()
        rgb = img.convert("RGB") if img.mode != "RGB" else img
        changed = False
        width, height = rgb.size
        if width != height:
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            rgb = rgb.crop((left, top, left + side, top + side))
            changed = True
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            changed = True
        return np.asarray(rgb, dtype=np.uint8), changed


def _too_large(size: int | None) -> str:
    actual = f" ({format_bytes(size)})" if size is not None else ""
    return (
        f"larger than {format_bytes(MAX_TILE_BYTES)}{actual}, too large for a tile "
        "(a whole slide?); left out unread"
    )


def _decode_error(exc: Exception) -> str:
    if isinstance(exc, _TooLarge):
        return _too_large(exc.size)
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image (Pillow cannot identify it)"
    if isinstance(exc, Image.DecompressionBombError):
        return "image is too large"
    return f"cannot decode the image ({type(exc).__name__}: {exc})"


LoadProgress = Callable[[int, int], None]


def load_tiles(
    source: str | os.PathLike | TileIndex,
    *,
    size: int | None = None,
    limit_per_class: int | None = None,
    limit_seed: int = 2000,
    workers: int = 0,
    progress: LoadProgress | None = None,
    cancel: CancelToken | None = None,
) -> TileDataset:
    """Decode every image of a folder or zip into a :class:`TileDataset`.

    ``size``: None (default) keeps the tiles' own size; they must then all be square and
    of one size, else DatasetError names the odd files, their sizes and how many there
    are. A number resizes every tile to ``size`` x ``size`` pixels (non-square ones are
    centre-cropped first); tiles whose size differs from most are named in a warning
    and in ``notes``. ``limit_per_class``: keep at most that many images per class (a
    seeded random choice, see :meth:`TileIndex.limit_per_class`). ``workers``: decoding
    threads (0 = one per CPU core, at most 16). ``progress(done, total)`` is called from
    this thread as images are decoded; ``cancel`` stops decoding (raises Cancelled).

    Unreadable images are skipped and listed in ``skipped``; a class whose images are
    all unreadable raises DatasetError naming its folder.
    """
    index = source if isinstance(source, TileIndex) else None
    src = _open_source(index.path if index is not None else source)  # type: ignore[arg-type]
    try:
        if index is None:
            index = _index(src)
        index = index.limit_per_class(limit_per_class, limit_seed)
        return _decode_all(src, index, size, workers, progress, cancel)
    finally:
        src.close()


def _member_name(member: str) -> str:
    """``CLASS/file`` of a member: short enough for a message, clear enough to find it."""
    return "/".join(PurePosixPath(member).parts[-2:])


def _examples(index: TileIndex, rows: Sequence[int], sizes: dict[int, tuple[int, int]]) -> str:
    """A few of ``rows`` as 'CLASS/file (W x H px)', and how many more there are."""
    named = [
        f"{_member_name(index.entries[i][2])} ({_size_text(*sizes[i])} px)"
        for i in rows[:_EXAMPLES]
    ]
    more = len(rows) - len(named)
    return ", ".join(named) + (f" and {more} more" if more else "")


def _differ(count: int) -> str:
    return "differs" if count == 1 else "differ"


@dataclass
class _SizePlan:
    side: int  # the stored tiles' side S
    common: tuple[int, int]  # the size most tiles have
    counts: Counter  # (width, height) -> files
    notes: list[str]


def _plan_sizes(
    where: str,
    index: TileIndex,
    sizes: dict[int, tuple[int, int]],
    size: int | None,
) -> _SizePlan:
    """Decide the stored side S from the sizes of the readable tiles (row -> (width,
    height)), or refuse (``size`` None) when they are not all one square size."""
    readable = sorted(sizes)
    counts = Counter(sizes.values())
    if not counts:  # nothing readable: the per-class check after decoding says which
        return _SizePlan(size or 1, (0, 0), counts, [])
    # The most common size; among equals the larger, so that the choice is stable.
    common = max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
    odd = [i for i in readable if sizes[i] != common]
    n = len(readable)
    notes: list[str] = []
    if size is None:
        not_square = [i for i in readable if sizes[i][0] != sizes[i][1]]
        if not_square:
            raise DatasetError(
                f"{len(not_square)} of the {n} tiles in {where} "
                f"{'is' if len(not_square) == 1 else 'are'} not square, e.g. "
                f"{_examples(index, not_square, sizes)}; a model reads square patches, so "
                f"crop them, or {_SIZE_ADVICE} to centre-crop and resize every tile to it"
            )
        if odd:
            raise DatasetError(
                f"the tiles in {where} are not all one size: {len(odd)} of {n} "
                f"{_differ(len(odd))} from the {_size_text(*common)} px of the others, e.g. "
                f"{_examples(index, odd, sizes)}; a model needs every tile at one scale, "
                f"so remove or resize them, or {_SIZE_ADVICE} to resize every tile to it"
            )
        return _SizePlan(common[0], common, counts, notes)
    if odd:
        notes.append(
            f"{len(odd)} of the {n} tiles {_differ(len(odd))} from the "
            f"{_size_text(*common)} px of the others and {'was' if len(odd) == 1 else 'were'} "
            f"resized to {size} x {size} px as well; unless they show as "
            "much tissue as the others, their magnification now differs: "
            f"{_examples(index, odd, sizes)}"
        )
        log.warning("%s: %s", where, notes[-1])
    if common != (size, size):
        how = "centre-cropped to squares and resized" if common[0] != common[1] else "resized"
        notes.append(
            f"the {_size_text(*common)} px tiles were {how} to {size} x {size} px "
            "(the patch size chosen)"
        )
        log.info("%s: %s", where, notes[-1])
    return _SizePlan(size, common, counts, notes)


def _decode_all(
    src: _Source,
    index: TileIndex,
    size: int | None,
    workers: int,
    progress: LoadProgress | None,
    cancel: CancelToken | None,
) -> TileDataset:
    n = len(index.entries)
    sizes: dict[int, tuple[int, int]] = {}  # row -> (width, height), readable ones only
    ok = np.zeros(n, dtype=bool)
    changed = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    too_large: list[int] = []

    def probe(i: int) -> None:
        try:
            sizes[i] = _probe(src.read(index.entries[i][2]))
        except Exception as exc:
            # Any failure of one file (bad bytes, a codec bug, a damaged zip member) must
            # cost that file only, not a run over thousands of images.
            errors[i] = _decode_error(exc)
            if isinstance(exc, _TooLarge):
                too_large.append(i)

    def decode_into(images: np.ndarray, i: int) -> None:
        if i not in sizes:
            return
        try:
            images[i], changed[i] = _decode(src.read(index.entries[i][2]), images.shape[1])
            ok[i] = True
        except Exception as exc:
            errors[i] = _decode_error(exc)

    threads = workers if workers > 0 else min(16, os.cpu_count() or 1)
    chunk = 256
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        # Headers first (fast): the stored size must be known, and a dataset of mixed
        # sizes refused, before thousands of images are decoded.
        for start in range(0, n, 4 * chunk):
            if cancel is not None:
                cancel.raise_if_cancelled()
            list(pool.map(probe, range(start, min(n, start + 4 * chunk))))
        plan = _plan_sizes(index.source, index, sizes, size)
        images = np.empty((n, plan.side, plan.side, 3), dtype=np.uint8)
        for start in range(0, n, chunk):
            if cancel is not None:
                cancel.raise_if_cancelled()
            list(pool.map(lambda i: decode_into(images, i), range(start, min(n, start + chunk))))
            if progress is not None:
                progress(min(n, start + chunk), n)
    skipped = list(index.skipped)
    for i in sorted(errors):
        item = SkippedFile(src.display(index.entries[i][2]), errors[i])
        log.warning("skipping %s: %s", item.path, item.reason)
        skipped.append(item)
    notes = list(plan.notes)
    if too_large:
        rows = sorted(too_large)
        named = [_member_name(index.entries[i][2]) for i in rows[:_EXAMPLES]]
        more = f" and {len(rows) - len(named)} more" if len(rows) > len(named) else ""
        notes.append(
            f"{len(rows)} {'file was' if len(rows) == 1 else 'files were'} larger than "
            f"{format_bytes(MAX_TILE_BYTES)}, too large for a tile, and left out unread: "
            f"{', '.join(named)}{more}"
        )
    labels = index.labels
    for cid, _folder in enumerate(index.class_folders):
        in_class = labels == cid
        if not ok[in_class].any():
            bad = [errors[i] for i in np.flatnonzero(in_class) if i in errors]
            example = f" (e.g. {bad[0]})" if bad else ""
            raise DatasetError(
                f"none of the {int(in_class.sum())} files in the class folder "
                f"{_folder_display(src, index, cid)} could be read as an image{example}"
            )
    keep = np.flatnonzero(ok)
    names = index.class_names
    return TileDataset(
        source=index.source,
        class_folders=list(index.class_folders),
        class_names=names,
        class_colors=[color_for(name, i) for i, name in enumerate(names)],
        images=images[keep] if len(keep) < n else images,
        labels=labels[keep],
        stems=[index.entries[i][1] for i in keep],
        skipped=skipped,
        tile_size=plan.common,
        size_counts={
            _size_text(*s): c for s, c in sorted(plan.counts.items(), key=lambda x: -x[1])
        },
        resized=[src.display(index.entries[i][2]) for i in keep if changed[i]],
        notes=notes,
    )


def _folder_display(src: _Source, index: TileIndex, cid: int) -> str:
    member = next(m for c, _, m in index.entries if c == cid)
    return src.display(str(PurePosixPath(member).parent))


def dataset_from_arrays(
    images: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    stems: Sequence[str] | None = None,
    source: str = "in-memory",
) -> TileDataset:
    """A dataset from arrays already in memory (demos, tests, other loaders)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise DatasetError(f"tiles must be square RGB images (N, S, S, 3), got {images.shape}")
    labels_arr = np.asarray(labels, dtype=np.int64)
    names = list(class_names)
    stems = list(stems) if stems is not None else [f"{i:06d}" for i in range(len(labels_arr))]
    return TileDataset(
        source=source,
        class_folders=names,
        class_names=names,
        class_colors=[color_for(n, i) for i, n in enumerate(names)],
        images=images,
        labels=labels_arr,
        stems=stems,
    )
