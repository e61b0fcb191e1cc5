"""The map cache: maps (finished or partial) come back for the same slide, model and
settings only, and a partial map comes back as partial."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from histoviewer.mapping.cache import (
    CACHE_ENV,
    MapCache,
    default_cache_dir,
    is_current,
    map_key,
)
from histoviewer.mapping.engine import map_slide
from histoviewer.mapping.tissue_map import CLASSIFIED, PENDING
from histoviewer.slide import open_slide
from histoviewer.slide.synthetic import write_strip_tiff


@pytest.fixture
def slide_file(tmp_path):
    return write_strip_tiff(tmp_path / "slide.tif", width=450, height=300, seed=4)


@pytest.fixture
def mapped(slide_file, classifier):
    with open_slide(slide_file) as slide:
        key = map_key(slide, classifier, 150, True)
        tmap = map_slide(slide, classifier, stride=150, skip_background=True, device="cpu")
    return key, tmap


def test_round_trip(tmp_path, mapped):
    key, tmap = mapped
    cache = MapCache(tmp_path / "cache")
    assert cache.load(key) is None
    path = cache.save(key, tmap)
    assert path.is_file() and path.is_relative_to(cache.root)
    back = cache.load(key)
    assert back is not None and back.complete
    assert np.array_equal(back.probs, tmap.probs, equal_nan=True)
    assert np.array_equal(back.state, tmap.state)
    assert cache.remove(key) and not path.exists() and not cache.remove(key)


def test_every_ingredient_changes_the_key(slide_file, classifier, mapped):
    key, _ = mapped
    variants = [
        replace(key, model_fingerprint="0" * 64),
        replace(key, stride=100),
        replace(key, skip_background=False),
        replace(key, slide={**key.slide, "mtime": key.slide["mtime"] + 1}),
        replace(key, slide={**key.slide, "size": key.slide["size"] + 1}),
    ]
    digests = {key.digest(), *(v.digest() for v in variants)}
    assert len(digests) == len(variants) + 1
    # The same ingredients give the same key, whatever their container types.
    same = replace(key, slide={**key.slide, "dimensions": tuple(key.slide["dimensions"])})
    assert same.digest() == key.digest()


def test_a_rewritten_slide_file_does_not_find_the_old_map(tmp_path, slide_file, classifier, mapped):
    key, tmap = mapped
    cache = MapCache(tmp_path / "cache")
    cache.save(key, tmap)
    write_strip_tiff(slide_file, width=450, height=300, seed=9)
    later = time.time() + 5
    os.utime(slide_file, (later, later))
    with open_slide(slide_file) as slide:
        new_key = map_key(slide, classifier, 150, True)
        assert cache.load(new_key) is None
        assert not is_current(tmap, new_key.slide, classifier.fingerprint)


def test_a_map_filed_under_the_wrong_key_is_not_trusted(tmp_path, mapped):
    key, tmap = mapped
    cache = MapCache(tmp_path / "cache")
    other = replace(key, model_fingerprint="f" * 64)
    # A map from another model copied over the key's file (by hand, or a collision).
    wrong = cache.path_for(other)
    tmap.save(wrong)
    assert cache.load(other) is None
    assert not wrong.exists()  # discarded, so it is not checked again


def test_a_damaged_file_is_discarded(tmp_path, mapped):
    key, _ = mapped
    cache = MapCache(tmp_path / "cache")
    path = cache.path_for(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    assert cache.load(key) is None
    assert not path.exists()


def test_partial_maps_are_kept_as_partial(tmp_path, mapped):
    key, tmap = mapped
    cache = MapCache(tmp_path / "cache")
    partial = replace(tmap, complete=False, state=tmap.state.copy(), probs=tmap.probs.copy())
    tissue = np.argwhere(partial.state == CLASSIFIED)
    r, c = tissue[len(tissue) // 2]
    partial.state[r, c] = PENDING
    partial.probs[r, c] = np.nan

    assert cache.save(key, partial) == cache.path_for(key)
    back = cache.load(key)
    assert back is not None and not back.complete  # never shown as if it were finished
    assert back.pending_count == 1 and np.array_equal(back.state, partial.state)
    assert not cache.holds_complete(key)

    # The finished map replaces the partial one ...
    assert cache.save(key, tmap) == cache.path_for(key)
    assert cache.holds_complete(key) and cache.load(key).complete
    # ... and a later partial one (a cancelled Re-map) does not replace a finished one.
    assert cache.save(key, partial) is None
    back = cache.load(key)
    assert back.complete and np.array_equal(back.state, tmap.state)


def test_foreign_maps_are_refused(tmp_path, mapped):
    key, tmap = mapped
    cache = MapCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="another slide or model"):
        cache.save(replace(key, model_fingerprint="a" * 64), tmap)
    with pytest.raises(ValueError, match="another slide or model"):
        cache.save(key, replace(tmap, complete=False, model={}))
    with pytest.raises(ValueError, match="grid"):
        cache.save(replace(key, stride=100), tmap)
    assert list(cache.root.rglob("*.npz")) == []


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    assert MapCache().root == tmp_path / "here"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "xdg" / "histoviewer" / "maps"
