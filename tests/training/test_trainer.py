"""fit(): files written, progress events, cancel and resume, the CLI and mapping with the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from training_support import CLASS_COLORS, tiny_config

from histoviewer import cli
from histoviewer.errors import HistoViewerError
from histoviewer.model import load_model
from histoviewer.tasks import CancelToken
from histoviewer.training import TrainEvent, fit, load_tiles

EPOCHS = 2  # what tiny_config trains


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(train_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    events: list[TrainEvent] = []
    result = fit(tiny_config(train_data, out), progress=events.append)
    return result, events


def test_short_run_writes_checkpoints_split_report_and_figures(trained):
    result, _ = trained
    out = result.out
    names = {p.name for p in out.iterdir()}
    assert {
        "last.pt",
        "best.safetensors",
        "split.csv",
        "report.json",
        "curves.png",
        "confusion_matrix.png",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert result.split_counts == {"train": 60, "val": 3, "test": 12}
    lines = (out / "split.csv").read_text().splitlines()
    assert lines[0] == "class,file,split" and len(lines) == 76
    assert lines[1].startswith("01_TUMOR,tile_000,")

    report = json.loads((out / "report.json").read_text())
    assert report["config"]["arch"] == "resnet18" and report["config"]["epochs"] == EPOCHS
    assert len(report["history"]) == EPOCHS
    assert report["test"]["class_names"] == ["tumor", "stroma", "adipose"]
    assert sum(map(sum, report["test"]["confusion_matrix"])) == 12
    assert [c["support"] for c in report["test"]["per_class"]] == [4, 4, 4]
    assert report["test_accuracy"] == report["test"]["accuracy"]
    assert report["timings"]["train_images_per_s"] > 0
    assert report["data"]["skipped"] == []
    # No --mpp: the Kather scale is assumed, and the report says so.
    assert report["config"]["mpp"] is None
    assert report["scale"]["mpp_assumed"] and report["scale"]["mpp"] == 0.495
    assert report["scale"]["patch_size"] == 32 and report["scale"]["tile_sizes"] == {"32 x 32": 75}
    (note,) = report["notes"]
    assert "scale was not given, so 0.495 µm/px (the Kather 2016 scale) was assumed" in note
    assert "maps made with this model will be wrong in scale" in note
    assert "µm/px" in (out / "report.json").read_text(encoding="utf-8")  # not \u00b5
    for png in ("curves.png", "confusion_matrix.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.width > 300


def test_last_checkpoint_loads_with_weights_only(trained):
    result, _ = trained
    ckpt = torch.load(result.last_path, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "histoviewer-training" and ckpt["version"] == 1
    assert ckpt["epoch"] == EPOCHS and len(ckpt["history"]) == EPOCHS
    assert ckpt["config"] == result.config.to_dict()
    assert {"model", "optimizer", "scheduler", "rng", "info", "best_val_loss"} <= set(ckpt)
    assert set(ckpt["history"][0]) >= {
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "seconds",
        "images_per_s",
    }
    assert ckpt["history"][0]["lr"] == pytest.approx(1e-3)
    # The viewer's loader accepts last.pt too.
    assert load_model(result.last_path).info.class_names == ["tumor", "stroma", "adipose"]


def test_best_model_loads_and_classifies_with_its_metadata(trained, train_data):
    result, _ = trained
    model = load_model(result.best_path)
    info = model.info
    # The tiles' own size (32 px) at the assumed Kather scale.
    assert info.arch == "resnet18" and info.input_size == 32
    assert info.patch_size == 32 and info.mpp == 0.495
    assert info.class_names == ["tumor", "stroma", "adipose"]
    assert info.metrics["test_accuracy"] == result.test_metrics["accuracy"]
    assert info.metrics["epoch"] == result.best_epoch
    assert info.training["config"]["preset"] == "recipe"
    tiles = load_tiles(train_data)
    probs = model.predict_proba(tiles.images)
    assert probs.shape == (75, 3)
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    # Three clearly different colours: even two tiny epochs learn them.
    assert (probs.argmax(1) == tiles.labels).mean() > 0.6


def test_progress_events(trained):
    _, events = trained
    kinds = [e.kind for e in events]
    assert kinds[0] == "load" and kinds[-2:] == ["test", "done"]
    assert kinds.count("epoch") == EPOCHS and kinds.count("start") == 1
    batches = [e for e in events if e.kind == "batch"]
    assert {e.phase for e in batches} == {"train", "val"}
    last_train = [e for e in batches if e.phase == "train" and e.epoch == EPOCHS][-1]
    assert last_train.batch == last_train.batches == 3  # 60 images in batches of 20
    assert 0 <= last_train.acc <= 1 and last_train.images_per_s > 0 and last_train.eta_s >= 0
    epochs = [e for e in events if e.kind == "epoch"]
    assert [len(e.history) for e in epochs] == [1, 2]


def test_epochs_zero_only_writes_the_split(train_data, tmp_path, capsys, restore_logging):
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "train",
                str(train_data),
                "--out",
                str(out),
                "--epochs",
                "0",
                "--limit-per-class",
                "20",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert [p.name for p in out.iterdir()] == ["split.csv"]
    assert len((out / "split.csv").read_text().splitlines()) == 61
    printed = capsys.readouterr().out
    assert "split (train 48, val 3, test 9) written to" in printed
    # The last lines: the scale, and the note that it was assumed.
    assert printed.splitlines()[-2:] == [
        "patches: 32 px at 0.495 µm/px (15.84 µm); tiles at 0.495 µm/px (assumed)",
        "note: The tiles' scale was not given, so 0.495 µm/px (the Kather 2016 scale) was "
        "assumed: if they were scanned at another scale, maps made with this model will be "
        "wrong in scale. Give their real scale (--mpp; in the app, Tile scale) and train "
        "again.",
    ]


def test_cancel_then_resume_ends_like_an_uninterrupted_run(
    trained, train_data, tmp_path, capsys, restore_logging
):
    reference, _ = trained
    out = tmp_path / "run"
    cancel = CancelToken()

    def stop_in_epoch_two(event: TrainEvent) -> None:
        if event.kind == "batch" and event.epoch == 2:
            cancel.cancel()

    stopped = fit(tiny_config(train_data, out), progress=stop_in_epoch_two, cancel=cancel)
    assert stopped.cancelled and stopped.epochs_done == 1
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert not (out / "report.json").exists()

    # Resume from the command line: only the options typed are given, the rest comes
    # from the checkpoint.
    assert (
        cli.main(["train", str(train_data), "--out", str(out), "--resume", "--workers", "1"]) == 0
    )
    assert "test accuracy" in capsys.readouterr().out
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["epoch"] == EPOCHS
    assert len(resumed["history"]) == len(reference.history) == EPOCHS
    for a, b in zip(resumed["history"], reference.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # Same seed, same batches, same augmentation: on the CPU the weights end up identical.
    mine = resumed["model"]
    theirs = torch.load(reference.last_path, weights_only=True)["model"]
    for key, value in theirs.items():
        assert torch.allclose(mine[key].float(), value.float(), atol=1e-6), key


def test_resume_refuses_other_settings_and_missing_checkpoint(trained, train_data, tmp_path):
    reference, _ = trained
    with pytest.raises(HistoViewerError, match=r"settings differ .*lr: 0\.001 -> 0\.01"):
        fit(tiny_config(train_data, reference.out, lr=0.01), resume=True)
    with pytest.raises(
        HistoViewerError, match=r"settings differ .*mpp: not given \(0\.495 assumed\) -> 0\.25"
    ):
        fit(tiny_config(train_data, reference.out, mpp=0.25), resume=True)
    with pytest.raises(
        HistoViewerError, match=r"settings differ .*patch_size: the tiles' own size -> 64"
    ):
        fit(tiny_config(train_data, reference.out, patch_size=64), resume=True)
    with pytest.raises(HistoViewerError, match="does not exist"):
        fit(tiny_config(train_data, tmp_path / "empty"), resume=True)


def test_cli_evaluate_and_map_with_the_best_model(
    trained, train_data, tmp_path, capsys, restore_logging
):
    result, _ = trained
    best = str(result.best_path)
    assert cli.main(["evaluate", best, str(train_data), "--json", "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["split"] == "test" and scores["n"] == 12
    assert scores["confusion_matrix"] == result.test_metrics["confusion_matrix"]

    assert cli.main(["evaluate", best, str(train_data), "--split", "all", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "macro F1" in text and "confusion matrix" in text and "adipose" in text
    assert "(75 images)" in text

    # The trained model maps a slide: 3 x 2 patches of 32 px (its tiles' size at the
    # same 0.495 um/px) in the class colours.
    slide = np.zeros((64, 96, 3), dtype=np.uint8)
    for col, colour in enumerate(CLASS_COLORS):
        slide[:, col * 32 : (col + 1) * 32] = colour
    Image.fromarray(slide).save(tmp_path / "slide.png")
    maps = tmp_path / "maps"
    assert (
        cli.main(
            [
                "map",
                str(tmp_path / "slide.png"),
                "--model",
                best,
                "--out",
                str(maps),
                "--device",
                "cpu",
                "--no-skip-background",
                "--stride",
                "32",
                "--formats",
                "npz",
            ]
        )
        == 0
    )
    assert "6 patches classified" in capsys.readouterr().out
    assert sorted(p.name for p in maps.iterdir()) == ["slide.map.json", "slide.npz"]


def test_cli_bad_input_is_one_line_on_stderr(tmp_path, capsys, restore_logging):
    code = cli.main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"histoviewer: error: cannot open the dataset {tmp_path / 'missing'}: it does not exist"
    ]
    code = cli.main(["train", str(tmp_path), "--out", str(tmp_path / "o"), "--resume"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and "last.pt does not exist" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    code = cli.main(["evaluate", str(bad), str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1 and "bad.safetensors" in err


def test_the_free_space_estimate_covers_what_a_run_writes(trained):
    from histoviewer.training.run_folder import RUN_FILES, estimate_run_bytes

    result, _ = trained
    sizes = {name: (result.out / name).stat().st_size for name in RUN_FILES}
    # At its peak a run holds last.pt, a new copy of it being written, and the model.
    peak = sizes["last.pt"] + sum(sizes.values())
    estimate = estimate_run_bytes(result.config)
    assert peak <= estimate < 1.2 * peak
