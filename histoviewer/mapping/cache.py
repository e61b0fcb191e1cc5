"""A cache of tissue maps, so a slide mapped once opens with its map at once.

Finished maps and partial ones (mapping cancelled, the slide closed or the viewer
quit while mapping, or only a region mapped) are kept alike: a partial map keeps
``complete == False`` and the viewer continues it instead of starting afresh.

A map is filed under a key made of everything that decides its content: the
slide's identity (path, size, modification time, dimensions), the model's weight
fingerprint, the stride and whether background was skipped. A changed slide file
or another model therefore gives another key, and an old map is never found for
it. Loading also checks the identities the map itself records, so a renamed,
hand-copied or damaged cache file is not shown as if it were current.

Headless: no Qt here; the GUI decides when to look things up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histoviewer.errors import HistoViewerError
from histoviewer.mapping.tissue_map import TissueMap, slide_identity

log = logging.getLogger(__name__)

CACHE_ENV = "HISTOVIEWER_CACHE_DIR"
# Bump when the cache layout or the TissueMap file changes meaning.
CACHE_VERSION = 2  # 2: grids reach the slide's edges, patches at the model's scale


def user_cache_dir() -> Path:
    """The platform's per-user cache folder + histoviewer (maps, exported models...)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "histoviewer"


def default_cache_dir() -> Path:
    """$HISTOVIEWER_CACHE_DIR, else :func:`user_cache_dir` + maps."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    return user_cache_dir() / "maps"


@dataclass(frozen=True)
class MapKey:
    """What a cached map was made from.

    ``slide`` is what a map records about its slide
    (:func:`histoviewer.mapping.tissue_map.slide_identity`): path, size, mtime, dimensions.
    """

    slide: dict[str, Any]
    model_fingerprint: str
    stride: int
    skip_background: bool
    tta: bool = False

    def digest(self) -> str:
        payload = {
            "version": CACHE_VERSION,
            "slide": _canonical(self.slide),
            "model": self.model_fingerprint,
            "stride": int(self.stride),
            "skip_background": bool(self.skip_background),
        }
        if self.tta:  # only then: maps cached before TTA existed keep their keys
            payload["tta"] = True
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def map_key(
    slide: Any, classifier: Any, stride: int | None, skip_background: bool, tta: bool = False
) -> MapKey:
    """The key of the map ``map_slide(slide, classifier, stride=..., skip_background=...,
    tta=...)`` would make (``slide`` a SlideReader, ``classifier`` a Classifier; ``stride``
    None: the model's patch size)."""
    stride = stride or classifier.info.patch_size
    return MapKey(slide_identity(slide), classifier.fingerprint, stride, skip_background, tta)


def is_current(tmap: TissueMap, slide_identity: dict[str, Any], model_fingerprint: str) -> bool:
    """True when ``tmap`` was made from this very slide file by this very model."""
    made_by = (tmap.model or {}).get("fingerprint")
    return made_by == model_fingerprint and _canonical(tmap.slide) == _canonical(slide_identity)


class MapCache:
    """Tissue maps on disk, one ``.npz`` per :class:`MapKey`, complete or partial.

    ``root`` defaults to :func:`default_cache_dir`. A partial map (``complete`` False)
    comes back as partial, never as if it were finished, so the caller can show it
    for what it is and map only its pending patches. A partial map never replaces a
    complete one stored under the same key (a cancelled Re-map keeps the old answer).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path_for(self, key: MapKey) -> Path:
        digest = key.digest()
        # Two-character fan-out keeps folders small on machines that map many slides.
        return self.root / digest[:2] / f"{digest}.npz"

    def load(self, key: MapKey) -> TissueMap | None:
        """The cached map for ``key`` (complete or partial: check ``complete``), or None
        when there is none or it is not current.

        A file that cannot be read or that records another slide or model is
        logged, deleted and reported as missing, so the caller maps afresh.
        """
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            tmap = TissueMap.load(path)
        except (HistoViewerError, OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cached map %s: %s", path, exc)
            self._discard(path)
            return None
        if not is_current(tmap, key.slide, key.model_fingerprint) or not _same_grid(tmap, key):
            log.warning("ignoring cached map %s: it does not match the slide and model", path)
            self._discard(path)
            return None
        return tmap

    def save(self, key: MapKey, tmap: TissueMap) -> Path | None:
        """Store ``tmap`` (complete or partial) under ``key`` atomically; returns its path,
        or None when ``tmap`` is partial and a complete map is already stored (kept).

        Raises ValueError for a map made from another slide or model than ``key``
        names, or on another grid, and StorageError when the disk refuses.
        """
        if not is_current(tmap, key.slide, key.model_fingerprint):
            raise ValueError("the tissue map was made from another slide or model than its key")
        if not _same_grid(tmap, key):
            raise ValueError("the tissue map was made on another grid than its key's stride")
        path = self.path_for(key)
        if not tmap.complete and self.holds_complete(key):
            log.info("partial map not cached: a complete map is stored at %s", path)
            return None
        tmap.save(path)
        log.info("cached %s tissue map %s", "complete" if tmap.complete else "partial", path)
        return path

    def holds_complete(self, key: MapKey) -> bool:
        """True when a complete map is stored under ``key`` (reads its metadata only)."""
        path = self.path_for(key)
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["metadata"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return False
        return isinstance(meta, dict) and bool(meta.get("complete"))

    def remove(self, key: MapKey) -> bool:
        """Delete the map cached under ``key``; True if there was one."""
        path = self.path_for(key)
        existed = path.is_file()
        self._discard(path)
        return existed

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # read-only cache: reading still works, so only log
            log.warning("cannot delete cached map %s: %s", path, exc)


def _same_grid(tmap: TissueMap, key: MapKey) -> bool:
    """The map's stride (in model pixels) and test-time augmentation are the key's."""
    return int(tmap.stride_model) == int(key.stride) and (tmap.spread is not None) == key.tta


def _canonical(value: Any) -> Any:
    """A JSON round trip, so tuples/lists, Paths/strings and int/float compare equal
    before and after the identity was stored in a map file."""
    return json.loads(json.dumps(value, sort_keys=True, default=_plain))


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else str(value)
