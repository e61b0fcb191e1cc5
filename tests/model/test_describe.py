"""Naming models apart and describing them: model_display_name, model_summary, warnings."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime

import pytest

from histoviewer.model import ModelInfo, load_model, save_model
from histoviewer.model.describe import (
    MAX_NAME_LENGTH,
    accuracy_note,
    model_date,
    model_display_name,
    model_summary,
    percent,
    recorded_test_accuracy,
    weak_model_warning,
)

FINGERPRINT = "0123456789abcdef" * 4  # 64 hex digits, like a SHA-256


def trained_info(accuracy: float | None = 0.875, **changes) -> ModelInfo:
    """What the trainer records: the same name for every run on the same tiles."""
    metrics = {"epoch": 14, "val_loss": 0.3}
    if accuracy is not None:
        metrics.update(
            test_accuracy=accuracy,
            test_macro_f1=0.812,
            test_images=180,
            per_class_f1={"tumor": 0.9, "stroma": 0.7},
        )
    values = {
        "name": "resnet18 recipe (tiles)",
        "training": {
            "config": {"epochs": 20, "preset": "recipe", "data": "/data/tiles"},
            "data": {
                "source": "/data/tiles",
                "images": 1800,
                "split_counts": {"test": 180, "train": 1440, "val": 180},
            },
        },
        "metrics": metrics,
    }
    values.update(changes)
    return ModelInfo.recipe("resnet18", **values)


# --------------------------------------------------------------------------- names


def test_a_model_folder_is_named_by_the_folder(tmp_path):
    folder = tmp_path / "kather-resnet50"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    info = trained_info()
    assert model_display_name(info, folder) == "kather-resnet50"
    assert model_display_name(info, str(folder)) == "kather-resnet50"
    # Its weights file names the same model the same way.
    assert model_display_name(info, folder / "model.safetensors") == "kather-resnet50"


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("best.safetensors", "run18b (best)"),
        ("last.pt", "run18b (last)"),
        ("model_best.pth.tar", "run18b (best)"),
        ("checkpoint.pth.tar", "run18b (checkpoint)"),
        ("model.safetensors", "run18b"),
    ],
)
def test_a_generic_file_is_named_by_its_run_folder(tmp_path, file, expected):
    path = tmp_path / "runs" / "run18b" / file
    assert model_display_name(trained_info(), path) == expected


def test_generic_files_in_different_run_folders_get_different_names(tmp_path):
    info = trained_info()  # the same recorded name for all three
    names = {
        model_display_name(info, tmp_path / run / "best.safetensors")
        for run in ("recipe-20250103-140512", "recipe-20250104-090000", "best-20250105-1")
    }
    assert len(names) == 3
    assert "recipe-20250103-140512 (best)" in names
    assert all(info.name not in name for name in names)
    # best and last of one run differ too.
    run = tmp_path / "run7"
    assert model_display_name(info, run / "best.safetensors") != model_display_name(
        info, run / "last.pt"
    )


def test_a_generic_folder_is_named_with_the_one_above_it(tmp_path):
    path = tmp_path / "run7" / "checkpoints" / "best.pt"
    assert model_display_name(trained_info(), path) == "run7/checkpoints (best)"


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("kather-resnet50.safetensors", "kather-resnet50"),
        ("colon.v2.pth.tar", "colon.v2"),
        ("MyModel.PT", "MyModel"),
        ("weird-name", "weird-name"),
    ],
)
def test_a_distinct_file_name_is_its_stem(tmp_path, file, expected):
    assert model_display_name(trained_info(), tmp_path / "models" / file) == expected


def test_without_a_path_the_recorded_name_then_the_architecture():
    assert model_display_name(trained_info(), None) == "resnet18 recipe (tiles)"
    assert model_display_name(trained_info(name=""), None) == "resnet18"
    assert model_display_name(trained_info(name="  "), "") == "resnet18"
    assert model_display_name(None, None) == "no model"


def test_long_names_are_shortened_in_the_middle(tmp_path):
    long = "a" * 40 + "-important-middle-" + "z" * 40
    name = model_display_name(trained_info(), tmp_path / f"{long}.safetensors")
    assert len(name) == MAX_NAME_LENGTH and "…" in name
    assert name.startswith("aaaa") and name.endswith("zzzz")


# --------------------------------------------------------------------------- summary


def test_summary_puts_what_a_user_asks_first_on_top(tmp_path):
    path = tmp_path / "run18b" / "best.safetensors"
    rows = model_summary(trained_info(), FINGERPRINT, path)
    keys = [row.key for row in rows]
    assert keys[:4] == ["name", "file", "architecture", "test_accuracy"]
    order = ["test_accuracy", "macro_f1", "trained_on", "date", "input", "fingerprint"]
    assert [keys.index(k) for k in order] == sorted(keys.index(k) for k in order)
    assert keys.index("fingerprint") < keys.index("classes") < keys.index("normalisation")
    by_key = {row.key: row for row in rows}
    assert by_key["name"].value == "run18b (best)"
    assert by_key["file"].value == str(path)
    assert by_key["architecture"].value == "ResNet-18, 8 classes"
    assert by_key["test_accuracy"].value == "87.5 % on 180 test tiles"
    assert by_key["macro_f1"].value == "0.812"
    assert by_key["trained_on"].value == (
        "/data/tiles, 1,800 tiles (train 1,440 · val 180 · test 180)"
    )
    assert by_key["input"].value == (
        "150 px patches at 0.495 µm/px (74.2 µm), resized to 224 × 224 px"
    )
    assert by_key["fingerprint"].value == FINGERPRINT[:16] + "…"
    assert FINGERPRINT in by_key["fingerprint"].tooltip
    assert by_key["recorded_name"].value == "resnet18 recipe (tiles)"
    assert by_key["training"].value == "20 epochs, best at epoch 14, recipe preset"
    assert by_key["per_class_f1"].value == "tumor 0.90, stroma 0.70"  # class order
    assert not any(" um" in row.value or "um/px" in row.value for row in rows)


def test_summary_of_a_weak_model_says_so_and_of_an_unmeasured_one_too():
    weak = {r.key: r.value for r in model_summary(trained_info(0.621), FINGERPRINT, None)}
    assert weak["test_accuracy"].startswith("62.1 %") and "weak" in weak["test_accuracy"]
    assert weak["file"] == "not saved to a file (in memory)"
    assert weak["name"] == "resnet18 recipe (tiles)"
    info = trained_info(None, metrics={"epoch": 3, "val_accuracy": 0.712})
    rows = {r.key: r.value for r in model_summary(info, FINGERPRINT, None)}
    assert rows["test_accuracy"] == "not recorded (validation accuracy 71.2 % at epoch 3)"
    assert "macro_f1" not in rows


def test_summary_of_a_file_without_metadata_and_of_no_model(tmp_path):
    path = tmp_path / "recipe" / "model_best.pth.tar"
    path.parent.mkdir()
    path.write_bytes(b"x")
    info = ModelInfo.recipe(
        "resnet50",
        name="model_best",
        training={"source": "model_best.pth.tar", "metadata": "assumed (recipe)"},
    )
    rows = {r.key: r for r in model_summary(info, FINGERPRINT, path)}
    assert rows["name"].value == "recipe (best)"
    assert rows["test_accuracy"].value == "not recorded"
    assert rows["trained_on"].value.startswith("not recorded")
    assert rows["date"].value.endswith("(file date)")
    assert "metadata" in rows and "recorded_name" not in rows
    assert model_summary(None, None, None) == []


# --------------------------------------------------------------------------- warnings


@pytest.mark.parametrize(
    ("accuracy", "warned", "shown"),
    [
        (0.799, True, "79.9 %"),
        (0.7996, True, "79.9 %"),  # never rounded up to a contradictory "80.0 %"
        (0.621, True, "62.1 %"),
        (62.1, True, "62.1 %"),  # recorded as a percentage
        (0.80, False, None),
        (0.95, False, None),
        (None, False, None),
    ],
)
def test_weak_model_warning_below_80_percent(accuracy, warned, shown):
    info = trained_info(accuracy)
    warning = weak_model_warning(info)
    if not warned:
        assert warning is None
        return
    assert warning is not None
    assert f"test accuracy is {shown}, below 80 %" in warning
    assert "Model > Train New Model..." in warning


def test_no_recorded_accuracy_gets_a_gentle_note_not_a_warning():
    unmeasured = trained_info(None)
    assert weak_model_warning(unmeasured) is None
    assert "no test accuracy" in accuracy_note(unmeasured)
    assert accuracy_note(trained_info(0.5)) is None
    assert accuracy_note(trained_info(0.9)) is None
    for nonsense in ("high", float("nan"), True, -1):
        info = trained_info(None, metrics={"test_accuracy": nonsense})
        assert recorded_test_accuracy(info) is None and weak_model_warning(info) is None


def test_percent_rounds_down():
    assert percent(0.875) == "87.5 %"
    assert percent(0.29) == "29.0 %"
    assert percent(1.0) == "100.0 %"
    assert percent(0.79999) == "79.9 %"


# --------------------------------------------------------------------------- dates


def test_a_saved_model_records_its_date_and_keeps_it(tmp_path, small_net):
    info = trained_info()
    assert info.created == ""
    before = datetime.now().astimezone().replace(microsecond=0)
    first = save_model(tmp_path / "a.safetensors", small_net, info)
    loaded = load_model(first).info
    assert loaded.created.endswith("Z") and loaded == info  # the date takes no part in ==
    date = model_date(loaded, first)
    assert date.source == "recorded" and date.when >= before
    os.utime(first, (1_000_000_000, 1_000_000_000))  # the file's date no longer matters
    assert model_date(loaded, first).when == date.when
    # Saved again (e.g. converted), the model keeps the date it was made.
    again = save_model(tmp_path / "b.safetensors", small_net, loaded)
    assert load_model(again).info.created == loaded.created
    row = {r.key: r for r in model_summary(loaded, FINGERPRINT, first)}["date"]
    assert row.value == date.text() and "training" in row.tooltip


def test_without_a_recorded_date_the_file_date_is_labelled_so(tmp_path):
    path = tmp_path / "old.pth.tar"
    path.write_bytes(b"x")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    info = trained_info()
    date = model_date(info, path)
    assert date.source == "file" and date.when.timestamp() == 1_700_000_000
    row = {r.key: r for r in model_summary(info, FINGERPRINT, path)}["date"]
    assert row.value == f"{date.text()} (file date)" and "no date" in row.tooltip
    # A model folder: its model.safetensors.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    os.utime(folder / "model.safetensors", (1_600_000_000, 1_600_000_000))
    assert model_date(info, folder).when.timestamp() == 1_600_000_000
    # Nothing known.
    assert model_date(info, None) is None
    assert model_date(info, tmp_path / "gone.pt") is None
    assert {r.key: r.value for r in model_summary(info, None, None)}["date"] == "not recorded"
    assert model_date(dataclasses.replace(info, created="not a date"), None) is None


def test_created_must_be_text():
    from histoviewer.errors import ModelError

    with pytest.raises(ModelError, match="created"):
        ModelInfo.from_dict({"arch": "resnet18", "class_names": ["a", "b"], "created": 5})
