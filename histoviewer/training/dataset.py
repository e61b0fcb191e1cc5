"""Labelled tiles from a folder or a zip with one sub-folder per class.

Layout (the Kather 2016 download and anything like it)::

    DATA/[wrapper/]<CLASS>/<name>.<tif|png|webp|jpg|...>

``DATA`` is a folder or a ``.zip``; one wrapper folder above the class folders is
accepted (``Kather_texture_2016_image_tiles_5000/``), ``__MACOSX``, dot-files and
``Thumbs.db`` are ignored. Class ids are the positions of the sorted folder names;
class names come from :func:`histoviewer.classes.name_from_folder`.

:func:`list_tiles` only lists files (fast: the split can be computed from names
alone); :func:`load_tiles` also decodes every image, in a thread pool, into one
uint8 array ``(N, S, S, 3)`` (``S`` = patch size, 150 by default; other sizes are
resized). A file that cannot be decoded is logged, recorded in
``TileDataset.skipped`` and left out; a layout that cannot be used raises
:class:`~histoviewer.errors.DatasetError` naming the folder or file.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from histoviewer.classes import color_for, name_from_folder
from histoviewer.errors import DatasetError
from histoviewer.tasks import CancelToken

log = logging.getLogger(__name__)

PATCH_SIZE = 150
_JUNK_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
# Deep enough for DATA/wrapper/CLASS/file plus one more wrapper; stops a walk of a
# whole home directory when the user picks the wrong folder.
_MAX_DEPTH = 5


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
    """Decoded tiles: ``images`` uint8 (N, S, S, 3), ``labels`` int64 (N,), in canonical order."""

    source: str
    class_folders: list[str]
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    images: np.ndarray
    labels: np.ndarray
    stems: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def patch_size(self) -> int:
        return int(self.images.shape[1])

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
        return (self.path / member).read_bytes()

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
            return self._zip.read(member)

    def display(self, member: str) -> str:
        return f"{self.path}:{member}" if member else str(self.path)

    def close(self) -> None:
        self._zip.close()


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def _open_source(source: str | os.PathLike) -> _Source:
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"the dataset {path} does not exist")
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


def _decode(data: bytes, size: int) -> np.ndarray:
    with Image.open(BytesIO(data)) as img:
        img.load()
        rgb = img.convert("RGB") if img.mode != "RGB" else img
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def _decode_error(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image (Pillow cannot identify it)"
    if isinstance(exc, Image.DecompressionBombError):
        return "image is too large"
    return f"cannot decode the image ({type(exc).__name__}: {exc})"


LoadProgress = Callable[[int, int], None]


def load_tiles(
    source: str | os.PathLike | TileIndex,
    *,
    size: int = PATCH_SIZE,
    limit_per_class: int | None = None,
    limit_seed: int = 2000,
    workers: int = 0,
    progress: LoadProgress | None = None,
    cancel: CancelToken | None = None,
) -> TileDataset:
    """Decode every image of a folder or zip into a :class:`TileDataset`.

    ``size``: side of the stored tiles (images of another size are resized to it).
    ``limit_per_class``: keep at most that many images per class (a seeded random
    choice, see :meth:`TileIndex.limit_per_class`). ``workers``: decoding threads
    (0 = one per CPU core, at most 16). ``progress(done, total)`` is called from this
    thread as images are decoded; ``cancel`` stops decoding (raises Cancelled).

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


def _decode_all(
    src: _Source,
    index: TileIndex,
    size: int,
    workers: int,
    progress: LoadProgress | None,
    cancel: CancelToken | None,
) -> TileDataset:
    n = len(index.entries)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}

    def work(i: int) -> None:
        member = index.entries[i][2]
        try:
            images[i] = _decode(src.read(member), size)
            ok[i] = True
        except Exception as exc:
            # Any failure of one file (bad bytes, a codec bug, a damaged zip member) must
            # cost that file only, not a run over thousands of images.
            errors[i] = _decode_error(exc)

    threads = workers if workers > 0 else min(16, os.cpu_count() or 1)
    chunk = 256
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        for start in range(0, n, chunk):
            if cancel is not None:
                cancel.raise_if_cancelled()
            list(pool.map(work, range(start, min(n, start + chunk))))
            if progress is not None:
                progress(min(n, start + chunk), n)
    skipped = list(index.skipped)
    for i in sorted(errors):
        item = SkippedFile(src.display(index.entries[i][2]), errors[i])
        log.warning("skipping %s: %s", item.path, item.reason)
        skipped.append(item)
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
