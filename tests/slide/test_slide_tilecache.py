"""The byte-bounded LRU behind the slide readers' decoded-tile cache (and the view's)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from histoviewer.slide.tilecache import ByteLRUCache, DecodedTileCache


def tile(value: int, side: int = 10) -> np.ndarray:
    return np.full((side, side, 3), value, np.uint8)  # 300 bytes at side 10


def test_decoded_tiles_are_evicted_least_recently_used_first_by_bytes():
    cache = DecodedTileCache(max_bytes=3 * 300)
    for i in range(3):
        cache.put(("level0", i), tile(i))
    assert len(cache) == 3 and cache.nbytes == 900
    assert cache.get(("level0", 0))[0, 0, 0] == 0  # now the most recently used
    cache.put(("level0", 3), tile(3))
    assert ("level0", 1) not in cache and ("level0", 0) in cache
    assert cache.keys() == [("level0", 2), ("level0", 0), ("level0", 3)]
    assert cache.get(("level0", 1)) is None
    assert (cache.hits, cache.misses) == (1, 1)
    cache.put(("level0", 3), tile(9))  # replacing a tile counts its bytes once
    assert cache.nbytes == 900 and cache.get(("level0", 3))[0, 0, 0] == 9
    cache.max_bytes = 300  # lowering the bound evicts at once
    assert cache.keys() == [("level0", 3)] and cache.nbytes == 300
    big = tile(1, side=40)
    cache.put("big", big)  # alone larger than the bound: still kept (the newest)
    assert list(cache) == ["big"] and cache.nbytes == big.nbytes
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_decoded_tiles_are_read_only_once_shared():
    cache = DecodedTileCache()
    pixels = tile(5)
    cache.put("t", pixels)
    with pytest.raises(ValueError):
        cache.get("t")[0, 0, 0] = 1


def test_any_values_with_a_size_function():
    cache: ByteLRUCache[str, bytes] = ByteLRUCache(10, len)
    cache.put("a", b"12345")
    cache.put("b", b"123456")
    assert cache.keys() == ["b"] and cache.nbytes == 6


def test_threads_share_one_cache_without_losing_count_of_its_bytes():
    cache = DecodedTileCache(max_bytes=50 * 300)
    errors = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(2000):
                key = int(rng.integers(0, 200))
                if cache.get(key) is None:
                    cache.put(key, tile(key % 256))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.nbytes == sum(cache.get(k).nbytes for k in cache) <= 50 * 300
