"""A small thread-safe LRU cache of decoded tiles, bounded by bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np


class TileCache:
    """Least-recently-used store of decoded RGB tiles.

    Neighbouring 150 px patches share the 256-512 px tiles they fall in, so a
    few dozen tiles spare most repeated decodes. The newest tile is always
    kept, even when it alone exceeds ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 48 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            tile = self._items.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return tile

    def put(self, key: Hashable, tile: np.ndarray) -> None:
        tile.flags.writeable = False  # shared between callers: never modified
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = tile
            self._bytes += tile.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes
