"""Test-time augmentation: 8 dihedral views per patch, their mean and their spread."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from histoviewer.mapping.cache import MapCache, MapKey
from histoviewer.mapping.engine import TtaRunner, map_slide
from histoviewer.mapping.export import export_csv
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap


class _Inner:
    """A 'network' that reads orientation: class 0 if the top-left pixel is the brightest
    corner, else class 1."""

    name, device, chunk = "fake", torch.device("cpu"), 64

    def __init__(self):
        self.seen = []

    def __call__(self, batch):
        self.seen.append(len(batch))
        x = batch.numpy().astype(np.float32).mean(axis=-1)
        corners = np.stack([x[:, 0, 0], x[:, 0, -1], x[:, -1, 0], x[:, -1, -1]], axis=1)
        top_left = corners.argmax(axis=1) == 0
        return np.stack([top_left, ~top_left], axis=1).astype(np.float32)


def test_the_runner_averages_the_8_views_and_measures_their_spread():
    inner = _Inner()
    runner = TtaRunner(inner)
    flat = torch.full((1, 6, 6, 3), 100, dtype=torch.uint8)
    corner = flat.clone()
    corner[0, 0, 0] = 255  # one bright corner: 2 of the 8 views put it top left
    probs = runner(torch.cat([flat, corner]))
    assert inner.seen == [16]  # one batch of 8 views of both patches
    # Flat: every view says class 0 (ties go to the first corner) -> no spread.
    assert probs[0] == pytest.approx([1.0, 0.0]) and runner.last_spread[0] == pytest.approx(0)
    # Corner: 2 of 8 views say 0 -> mean (0.25, 0.75); each view is 0.75 or 0.25 away.
    assert probs[1] == pytest.approx([0.25, 0.75])
    assert runner.last_spread[1] == pytest.approx((2 * 0.75 + 6 * 0.25) / 8)


def test_a_tta_map_is_the_mean_over_views_and_keeps_its_spread(tissue_slide, classifier, tmp_path):
    tmap = map_slide(tissue_slide, classifier, batch_size=8, tta=True, precision="fp32")
    assert tmap.spread is not None and np.isfinite(tmap.spread[tmap.state == CLASSIFIED]).all()
    x, y, w, h = tmap.patch_box(1, 2)
    patch = tissue_slide.read_region(0, x, y, w, h)
    views = [np.rot90(patch, k) for k in range(4)]
    views += [v[:, ::-1] for v in views]
    by_hand = classifier.predict_proba(np.ascontiguousarray(np.stack(views)))
    assert tmap.probs[1, 2] == pytest.approx(by_hand.mean(axis=0), abs=2e-4)
    assert np.array_equal(tmap.uncertainty("tta"), tmap.spread, equal_nan=True)
    plain = map_slide(tissue_slide, classifier, batch_size=8, precision="fp32")
    assert plain.spread is None and np.isnan(plain.uncertainty("tta")).all()
    # Saved and cached apart from the plain map, spread and all.
    tmap.save(tmp_path / "m.npz")
    assert np.array_equal(TissueMap.load(tmp_path / "m.npz").spread, tmap.spread, equal_nan=True)
    cache = MapCache(tmp_path / "cache")
    tmap.slide = plain.slide = {"path": "x", "dimensions": [600, 450]}
    tta_key = MapKey(tmap.slide, classifier.fingerprint, 150, True, tta=True)
    plain_key = MapKey(plain.slide, classifier.fingerprint, 150, True)
    assert tta_key.digest() != plain_key.digest()
    cache.save(tta_key, tmap)
    assert cache.load(plain_key) is None and cache.load(tta_key).spread is not None
    with pytest.raises(ValueError, match="another grid"):
        cache.save(plain_key, tmap)
    export_csv(tmap, tmp_path / "m.csv")
    lines = [r for r in (tmp_path / "m.csv").read_text().splitlines() if not r.startswith("#")]
    header, first = next(csv.reader(lines[:1])), next(csv.reader(lines[1:2]))
    assert header[-2:] == ["uncertainty", "tta_spread"]
    assert float(first[-1]) == pytest.approx(float(tmap.spread[0, 0]), abs=1e-6)


def test_map_tta_on_the_command_line(tmp_path, tiny_model, capsys):
    from mapping_support import batch_map_args, he_texture
    from PIL import Image

    from histoviewer import cli

    Image.fromarray(he_texture(150, 300)).save(tmp_path / "s.png")
    out = tmp_path / "out"
    args = batch_map_args(tmp_path / "s.png", tiny_model, out, "--tta", "--mpp", "0.495")
    assert cli.main(["-q", *args]) == 0, capsys.readouterr().err
    tmap = TissueMap.load(tmp_path / "out" / "s.npz")
    assert tmap.spread is not None and tmap.classified_count == 2
    assert "tta_spread" in (tmp_path / "out" / "s.csv").read_text()
