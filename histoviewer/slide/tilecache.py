"""Byte-bounded LRU caches (Qt-free).

:class:`ByteLRUCache` is the one least-recently-used store, bounded by the bytes
its values take, that HistoViewer keeps tiles in. Two caches build on it:

- :class:`DecodedTileCache` (here): a slide reader's decoded TIFF tiles and strips
  as read-only numpy arrays, shared by the threads that read the slide;
- ``PixmapCache`` (:mod:`histoviewer.gui.tiles`): the slide view's screen tiles as
  QPixmaps, on the GUI thread only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRUCache(Generic[K, V]):
    """Least-recently-used store of values whose sizes ``size_of(value)`` (bytes) add
    up to at most ``max_bytes``; thread-safe.

    The newest value is always kept, even when it alone exceeds ``max_bytes``, so the
    last thing stored can always be used. Lowering ``max_bytes`` evicts at once.
    ``hits`` and ``misses`` count :meth:`get` calls (for tests and tuning).
    """

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size_of = size_of
        self._bytes = 0
        self._max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        with self._lock:
            self._max_bytes = int(value)
            self._evict()

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def get(self, key: K) -> V | None:
        """The value stored for ``key`` (now the most recently used), None if none."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        """Store ``value`` as the most recently used, evicting the least recent ones."""
        size = int(self._size_of(value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= int(self._size_of(old))
            self._items[key] = value
            self._bytes += size
            self._evict()

    def keys(self) -> list[K]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def _evict(self) -> None:  # the lock is held
        while self._bytes > self._max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= int(self._size_of(dropped))


def _array_bytes(tile: np.ndarray) -> int:
    return int(tile.nbytes)


class DecodedTileCache(ByteLRUCache[Hashable, np.ndarray]):
    """A slide reader's decoded TIFF tiles and strips (RGB numpy arrays).

    Neighbouring 150 px patches share the 256-512 px tiles they fall in, so a
    few dozen tiles spare most repeated decodes. Stored arrays are made read-only:
    callers share them and must copy before changing pixels.
    """

    def __init__(self, max_bytes: int = 48 * 2**20) -> None:
        super().__init__(max_bytes, _array_bytes)

    def put(self, key: Hashable, tile: np.ndarray) -> None:
        tile.flags.writeable = False  # shared between callers: never modified
        super().put(key, tile)
