"""The tiles' scale: --mpp and --patch-size, what the model records, resume and evaluation."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_support import CLASS_FOLDERS, make_tiles

from histoviewer import cli
from histoviewer.errors import HistoViewerError
from histoviewer.mapping import make_grid
from histoviewer.model import load_model
from histoviewer.slide import ArraySlide
from histoviewer.training import TrainConfig, evaluate_model

TINY = [
    "--arch",
    "resnet18",
    "--image-size",
    "32",
    "--batch-size",
    "6",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--workers",
    "1",
    "--threads",
    "1",
]


def train(*argv: str) -> tuple[int, str, str]:
    """Run `histoviewer train ...`; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    # cli.main points the package logger at the stderr of its moment: restore it after.
    logger = logging.getLogger("histoviewer")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["train", *argv])
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quarter_micron(tmp_path_factory):
    """64 px tiles scanned at 0.25 um/px, trained for one tiny epoch with --mpp 0.25."""
    data = make_tiles(tmp_path_factory.mktemp("tiles"), per_class=6, size=64, seed=3)
    out = tmp_path_factory.mktemp("run")
    code, printed, err = train(str(data), "--out", str(out), "--mpp", "0.25", *TINY)
    assert code == 0, err
    return data, out, printed


def test_the_model_records_the_tiles_scale_and_size(quarter_micron):
    _, out, printed = quarter_micron
    for path in (out / "best.safetensors", out / "last.pt"):
        info = load_model(path).info
        assert (info.mpp, info.patch_size) == (0.25, 64)
    assert torch.load(out / "last.pt", weights_only=True)["config"]["mpp"] == 0.25
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["scale"] == {
        "tile_mpp": 0.25,
        "mpp_assumed": False,
        "tile_size": [64, 64],
        "tile_sizes": {"64 x 64": 18},
        "patch_size": 64,
        "mpp": 0.25,
        "patch_microns": 16.0,
        "resized": 0,
        "resized_examples": [],
    }
    assert report["notes"] == []  # the scale was given, nothing resized
    assert printed.splitlines()[-1] == ("patches: 64 px at 0.25 µm/px (16 µm); tiles at 0.25 µm/px")
    assert "note:" not in printed


def test_mapping_reads_patches_of_the_microns_the_model_learnt(quarter_micron):
    _, out, _ = quarter_micron
    info = load_model(out / "best.safetensors").info
    # 64 px at 0.25 um/px = 16 um: 32 px of a 0.5 um/px slide, 64 px of a 0.25 one.
    coarse = make_grid(ArraySlide(np.zeros((256, 256, 3), np.uint8), mpp=0.5), info, stride=64)
    fine = make_grid(ArraySlide(np.zeros((256, 256, 3), np.uint8), mpp=0.25), info, stride=64)
    assert (coarse.patch_size, fine.patch_size) == (32, 64)


def test_resume_refuses_another_scale_or_patch_size(quarter_micron):
    data, out, _ = quarter_micron
    code, _, err = train(str(data), "--out", str(out), "--resume", "--mpp", "0.5")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "settings differ from the checkpoint's (mpp: 0.25 -> 0.5)" in err
    code, _, err = train(str(data), "--out", str(out), "--resume", "--patch-size", "32")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "(patch_size: the tiles' own size -> 32)" in err


def test_an_assumed_scale_and_the_same_scale_given_are_no_difference():
    assumed, given = TrainConfig(), TrainConfig(mpp=0.495)
    assert assumed.mpp_assumed and not given.mpp_assumed
    assert assumed.differences(given) == [] and given.differences(assumed) == []
    assert assumed.differences(TrainConfig(mpp=0.5)) == ["mpp: not given (0.495 assumed) -> 0.5"]


@pytest.mark.parametrize("value", ["0", "-0.25", "0.01", "1000", "nan", "inf", "abc", "0,25"])
def test_a_bad_mpp_is_one_line(value, tmp_path):
    code, out, err = train(str(tmp_path), "--out", str(tmp_path / "o"), f"--mpp={value}")
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"histoviewer: error: --mpp {value} is not a tile scale: give the microns per pixel "
        "the tiles were scanned at, from 0.05 to 40 (about 0.25 at 40x, 0.5 at 20x)"
    ]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", [0, -1.0, 100.0, float("nan"), True, "0.5"])
def test_train_config_refuses_an_implausible_mpp(value):
    with pytest.raises(HistoViewerError, match=r"invalid training setting mpp=.*microns per"):
        TrainConfig(mpp=value)


def _mixed_tiles(root: Path) -> Path:
    """64 px tiles at 0.25 um/px, and two of other sizes (scanned elsewhere)."""
    make_tiles(root, per_class=5, size=64, seed=4)
    Image.new("RGB", (80, 80), (150, 40, 110)).save(root / CLASS_FOLDERS[0] / "odd_a.png")
    Image.new("RGB", (100, 100), (245, 240, 245)).save(root / CLASS_FOLDERS[2] / "odd_b.png")
    return root


def test_mixed_sizes_are_refused_unless_a_patch_size_is_given(tmp_path):
    data = _mixed_tiles(tmp_path / "mixed")
    out = tmp_path / "run"
    code, _, err = train(str(data), "--out", str(out), "--mpp", "0.25", *TINY)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "not all one size: 2 of 17 differ from the 64 x 64 px of the others" in err
    assert "01_TUMOR/odd_a.png (80 x 80 px), 07_ADIPOSE/odd_b.png (100 x 100 px)" in err
    assert not (out / "last.pt").exists()

    # --patch-size resizes every tile; the model keeps the tiles' microns per patch.
    code, printed, err = train(
        str(data), "--out", str(out), "--mpp", "0.25", "--patch-size", "32", *TINY
    )
    assert code == 0, err
    assert "odd_a.png (80 x 80 px)" in err  # warned while loading
    info = load_model(out / "best.safetensors").info
    # 64 px at 0.25 um/px = 16 um, now in 32 px: 0.5 um/px.
    assert (info.patch_size, info.mpp, info.patch_microns) == (32, 0.5, 16.0)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["scale"]["resized"] == 17 and report["scale"]["tile_size"] == [64, 64]
    odd, every, model = report["notes"]
    assert odd.startswith("2 of the 17 tiles differ from the 64 x 64 px of the others and")
    assert "01_TUMOR/odd_a.png (80 x 80 px), 07_ADIPOSE/odd_b.png (100 x 100 px)" in odd
    assert every == "The 64 x 64 px tiles were resized to 32 x 32 px (the patch size chosen)."
    assert model == (
        "The model's patches are 32 px at 0.5 µm/px: the 16 µm of tissue of the 64 x 64 px "
        "tiles at 0.25 µm/px."
    )
    assert [line for line in printed.splitlines() if line.startswith("note: ")] == [
        f"note: {n}" for n in report["notes"]
    ]

    # Evaluation loads the tiles as the run did: resized to 32 px, the same test split.
    scores = evaluate_model(out / "best.safetensors", data, device="cpu")
    assert scores["confusion_matrix"] == report["test"]["confusion_matrix"]


def test_evaluation_refuses_mixed_sizes_as_training_does(quarter_micron, tmp_path):
    _, out, _ = quarter_micron
    data = _mixed_tiles(tmp_path / "mixed")
    with pytest.raises(HistoViewerError, match="not all one size: 2 of 17"):
        evaluate_model(out / "best.safetensors", data, device="cpu")


def test_evaluation_warns_about_tiles_of_another_size(quarter_micron, train_data, caplog):
    _, out, _ = quarter_micron
    scores = evaluate_model(out / "best.safetensors", train_data, device="cpu")
    assert scores["n"] == 12  # scored all the same: 32 px tiles, the same classes
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "are 32 px, but the model" in warning and "trained on 64 px patches (16 µm)" in warning
