"""Robustness figures: each condition changes the pixels as documented, a model that
depends on orientation loses accuracy in exactly the rows it should, and `evaluate
--robustness` reports them as a table and in the JSON."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from histoviewer import cli
from histoviewer.model import Classifier, ModelInfo, build_network, save_model
from histoviewer.training import robustness
from histoviewer.training.robustness import (
    CONDITIONS,
    TOLERANCE_POINTS,
    apply_condition,
    format_robustness,
    robustness_report,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYMMETRIES = {
    "rot90": lambda t: np.rot90(t, 1),
    "rot180": lambda t: np.rot90(t, 2),
    "rot270": lambda t: np.rot90(t, 3),
    "flip-lr": np.fliplr,
    "flip-ud": np.flipud,
    "transpose": lambda t: t.transpose(1, 0, 2),
    "anti-transpose": lambda t: np.rot90(t, 2).transpose(1, 0, 2),
}


def he_tiles(n: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 RGB tiles with H&E colours and fine texture (so blur and JPEG have
    something to change)."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 120, 180], dtype=np.float32)
    texture = rng.normal(0, 30, (n, size, size, 1)) * np.array([0.6, 1.0, 0.5])
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def test_the_conditions_are_the_documented_ones():
    names = [c.name for c in CONDITIONS]
    assert names[0] == "clean" and len(names) == len(set(names)) == 15
    assert [c.name for c in CONDITIONS if c.group == "symmetry"] == list(SYMMETRIES)
    groups = {c.group for c in CONDITIONS}
    assert groups == {"clean", "symmetry", "jpeg", "blur", "stain"}
    assert len([c for c in CONDITIONS if c.group == "stain"]) == 5


@pytest.mark.parametrize("name", list(SYMMETRIES))
def test_symmetries_are_the_numpy_ones(name):
    tiles = he_tiles(3, size=16)
    tiles[:, :4, :8] = 0  # an asymmetric mark, so that no two symmetries agree
    out = apply_condition(name, tiles)
    for tile, got in zip(tiles, out, strict=True):
        assert np.array_equal(got, SYMMETRIES[name](tile))
        assert not np.array_equal(got, tile)


def test_clean_is_the_tiles_themselves():
    tiles = he_tiles()
    assert np.array_equal(apply_condition("clean", tiles), tiles)


def test_jpeg_60_is_pillows_jpeg_differs_but_stays_close():
    tiles = he_tiles()
    out = apply_condition("jpeg-q60", tiles)
    assert out.dtype == np.uint8 and out.shape == tiles.shape
    buffer = io.BytesIO()
    Image.fromarray(tiles[1]).save(buffer, format="JPEG", quality=60)
    assert np.array_equal(out[1], np.asarray(Image.open(buffer).convert("RGB")))
    diff = np.abs(out.astype(float) - tiles)
    assert diff.mean() > 2  # lossy: the texture is changed
    assert abs(out.astype(float).mean() - tiles.mean()) < 2  # same colours on the whole


def test_blur_is_a_gaussian_of_sigma_one():
    tiles = he_tiles()
    out = apply_condition("blur-sigma1", tiles)
    expected = np.stack(
        [
            ndimage.gaussian_filter(t.astype(float), sigma=(1, 1, 0), mode="mirror", truncate=3)
            for t in tiles
        ]
    )
    assert np.abs(out - expected).max() <= 0.5 + 1e-6  # rounding to uint8 only

    def roughness(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x.astype(float), axis=2)).mean())

    assert roughness(out) < 0.5 * roughness(tiles)  # smoother
    # Sigma 2 would be further from it: the kernel is the documented one.
    wider = ndimage.gaussian_filter(tiles[0].astype(float), sigma=(2, 2, 0), mode="mirror")
    assert np.abs(out[0] - wider).max() > 3


def test_stain_with_factor_one_returns_the_input():
    x = torch.from_numpy(he_tiles())
    assert torch.equal(robustness.stain(x, (1.0, 1.0, 1.0)), x)
    # A grid over the whole colour cube, black and white included: 52^3 colours.
    levels = torch.tensor([*range(0, 255, 5), 255], dtype=torch.uint8)
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    x = torch.stack([r, g, b], dim=-1)  # (52, 52, 52, 3): 52 tiles of 52 x 52
    assert torch.equal(robustness.stain(x, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), x)
    assert not torch.equal(robustness.stain(x, (1.0, 1.02, 1.0)), x)


def test_stain_shifts_move_the_stain_they_name():
    """More haematoxylin darkens red most (its optical density is strongest in red);
    more eosin darkens green most; other-lab tints white glass."""
    tiles = he_tiles()

    def mean_drop(name: str) -> np.ndarray:
        out = apply_condition(name, tiles).astype(float)
        return (tiles.astype(float) - out).mean(axis=(0, 1, 2))

    more_h, less_h = mean_drop("haematoxylin+15%"), mean_drop("haematoxylin-15%")
    more_e, less_e = mean_drop("eosin+15%"), mean_drop("eosin-15%")
    assert (more_h > 0).all() and (less_h < 0).all()
    assert (more_e[1] > 0) and (less_e[1] < 0)
    assert more_h[0] > more_h[1] and more_e[1] > more_e[0] and more_e[1] > more_e[2]
    # The eosin change is the training augmentation's transform with fixed factors.
    from histoviewer.training.augment import shift_stains

    x = torch.from_numpy(tiles)
    y = shift_stains(x.permute(0, 3, 1, 2).float() / 255, (1.0, 1.15, 1.0), (0.0, 0.0, 0.0))
    expected = (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(apply_condition("eosin+15%", tiles), expected)

    white = np.full((1, 4, 4, 3), 255, np.uint8)
    assert np.array_equal(apply_condition("eosin+15%", white), white)  # no stain, no change
    tinted = apply_condition("other-lab", white)[0, 0, 0].astype(int)
    assert 240 < tinted[2] < tinted[1] < tinted[0] < 255  # a light brown cast over glass


class TopLeftVsBottomRight(nn.Module):
    """Class 0 when the top half is brighter than the bottom half, else class 1: a
    "model" that knows orientation and nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[2] // 2
        top = x[:, :, :half].mean(dim=(1, 2, 3))
        bottom = x[:, :, half:].mean(dim=(1, 2, 3))
        logits = torch.zeros(x.shape[0], 8, device=x.device)
        logits[:, 0] = 10 * (top - bottom)
        logits[:, 1] = 10 * (bottom - top)
        return logits


def oriented_tiles(n: int = 8, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Tiles with a bright top-left quadrant (class 0) or bottom-right one (class 1)."""
    tiles = np.full((n, size, size, 3), 90, np.uint8)
    labels = np.arange(n) % 2
    half = size // 2
    for i, label in enumerate(labels):
        if label == 0:
            tiles[i, :half, :half] = 230
        else:
            tiles[i, half:, half:] = 230
    return tiles, labels.astype(np.int64)


# Where the bright top-left quadrant goes: a top corner keeps class 0, a bottom one does not.
ORIENTED_ACCURACY = {
    "clean": 1.0,
    "rot90": 0.0,  # top-left -> bottom-left
    "rot180": 0.0,
    "rot270": 1.0,  # top-left -> top-right
    "flip-lr": 1.0,
    "flip-ud": 0.0,
    "transpose": 1.0,
    "anti-transpose": 0.0,
    "jpeg-q60": 1.0,
    "blur-sigma1": 1.0,
    "haematoxylin+15%": 1.0,
    "haematoxylin-15%": 1.0,
    "eosin+15%": 1.0,
    "eosin-15%": 1.0,
    "other-lab": 1.0,
}


def oriented_classifier() -> Classifier:
    info = ModelInfo.recipe("resnet18", input_size=32, patch_size=32, name="oriented")
    return Classifier.from_network(TopLeftVsBottomRight(), info)


def test_a_model_that_knows_orientation_drops_in_the_rotation_rows():
    tiles, labels = oriented_tiles()
    seen = []
    report = robustness_report(
        oriented_classifier(),
        tiles,
        np.arange(len(tiles)),
        labels,
        batch_size=3,
        progress=lambda done, total: seen.append((done, total)),
    )
    got = {e["name"]: e["accuracy"] for e in report["conditions"]}
    assert got == ORIENTED_ACCURACY
    changes = {e["name"]: e["accuracy_change_points"] for e in report["conditions"]}
    assert changes["rot90"] == -100.0 and changes["rot270"] == 0.0 and changes["clean"] == 0.0
    assert report["worst"] == {"name": "rot90", "accuracy": 0.0, "accuracy_change_points": -100.0}
    assert report["worst_by_group"]["symmetry"]["name"] == "rot90"
    assert report["worst_by_group"]["stain"]["accuracy"] == 1.0
    assert report["failing"] == ["rot90", "rot180", "flip-ud", "anti-transpose"]
    assert report["all_within_tolerance"] is False
    # Progress in images over every condition, clean included (no clean predictions given).
    assert seen[-1] == (15 * 8, 15 * 8) and seen[0] == (3, 15 * 8)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    text = format_robustness(report)
    assert "rot90" in text and "-100.00 !" in text
    assert "no (more than 3 points lower: rot90, rot180, flip-ud, anti-transpose)" in text


def test_tolerance_is_three_points_of_accuracy_from_the_counts():
    """100 tiles: 3 more wrong is exactly -3 points and passes; 4 more fails."""
    tiles, labels = oriented_tiles(100, size=16)
    clean = labels.copy()
    report = robustness_report(
        oriented_classifier(),
        tiles,
        np.arange(100),
        labels,
        clean_pred=clean,
        conditions=CONDITIONS[:2],  # clean and rot90 only
    )
    assert TOLERANCE_POINTS == 3.0
    assert [e["name"] for e in report["conditions"]] == ["clean", "rot90"]
    assert report["conditions"][1]["accuracy_change_points"] == -100.0

    # Exact counts: a model that always says class 0, right on every tile when clean.
    class AlwaysZero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 8)
            logits[:, 0] = 1.0
            return logits

    zeros = np.zeros(100, np.int64)
    for wrong, passes in ((3, True), (4, False)):
        labels = zeros.copy()
        labels[:wrong] = 1  # wrong under the condition
        info = ModelInfo.recipe("resnet18", input_size=16, patch_size=16)
        report = robustness_report(
            Classifier.from_network(AlwaysZero(), info),
            tiles,
            np.arange(100),
            labels,
            clean_pred=labels,  # all right when clean
            conditions=CONDITIONS[:2],
        )
        entry = report["conditions"][1]
        assert entry["accuracy_change_points"] == -float(wrong)
        assert entry["within_tolerance"] is passes and report["all_within_tolerance"] is passes


def test_the_clean_row_reuses_given_predictions():
    tiles, labels = oriented_tiles()
    wrong = 1 - labels  # not what the model would say: proves they were not recomputed
    report = robustness_report(oriented_classifier(), tiles, np.arange(8), labels, clean_pred=wrong)
    assert report["conditions"][0]["accuracy"] == 0.0
    assert report["conditions"][1]["accuracy_change_points"] == 0.0  # rot90: 0 of 8 too


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(4)
    info = ModelInfo.recipe("resnet18", input_size=32, patch_size=32, name="tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(path, build_network("resnet18", 8), info)


def test_cli_json_has_the_documented_structure(tiny_model, train_data, capsys):
    args = ["evaluate", str(train_data), "--model", str(tiny_model), "--device", "cpu"]
    assert cli.main([*args, "--robustness", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    report = out["robustness"]
    assert set(report) == {
        "n",
        "tolerance_points",
        "conditions",
        "worst",
        "worst_by_group",
        "all_within_tolerance",
        "failing",
        "seconds",
    }
    assert report["n"] == out["n"] == 12 and report["tolerance_points"] == 3.0
    entries = report["conditions"]
    assert [e["name"] for e in entries] == [c.name for c in CONDITIONS]
    keys = {"name", "group", "description", "accuracy", "macro_f1"}
    keys |= {"accuracy_change_points", "within_tolerance"}
    assert all(set(e) == keys for e in entries)
    clean = entries[0]
    assert clean["accuracy"] == out["accuracy"] and clean["macro_f1"] == out["macro_f1"]
    for e in entries:
        assert e["accuracy_change_points"] == pytest.approx(
            (e["accuracy"] - clean["accuracy"]) * 100
        )
        assert e["within_tolerance"] == (e["accuracy_change_points"] >= -3.0)
    worst = min(entries[1:], key=lambda e: e["accuracy"])
    assert report["worst"]["accuracy"] == worst["accuracy"]
    assert set(report["worst_by_group"]) == {"symmetry", "jpeg", "blur", "stain"}
    assert report["failing"] == [e["name"] for e in entries if not e["within_tolerance"]]

    # Without --robustness the JSON has no such key (and the scores are the same).
    assert cli.main([*args, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "robustness" not in plain and plain["accuracy"] == out["accuracy"]


def test_cli_prints_the_table_and_progress(tiny_model, train_data, capsys):
    args = ["evaluate", str(tiny_model), str(train_data), "--device", "cpu", "--robustness"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "confusion matrix (rows: true class, columns: predicted)" in lines
    start = lines.index("robustness (12 images; a condition passes within 3 points of clean)")
    assert lines[start + 2].split() == ["condition", "accuracy", "macro", "F1", "change", "what"]
    rows = [line.split()[0] for line in lines[start + 3 : start + 3 + len(CONDITIONS)]]
    assert rows == [c.name for c in CONDITIONS]
    assert lines[start + 3].split()[3] == "-"  # clean has no change
    assert any(line.startswith("worst symmetry: ") for line in lines)
    assert lines[-1].startswith("all conditions within 3 points of clean: ")
    assert "scoring: 100%" in captured.err and "180/180 images" in captured.err
