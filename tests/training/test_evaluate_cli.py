"""`histoviewer evaluate DATA [--model MODEL]`, the older `evaluate MODEL DATA`, and the
model shipped with the app as the default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from histoviewer import cli
from histoviewer.model import ModelInfo, build_network, save_model
from histoviewer.model.shipped import MODEL_FILE
from histoviewer.resources import resources_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(path: Path, seed: int) -> Path:
    """An untrained ResNet-18 at 32 px for the eight Kather classes, patches of 32 px
    (the size of the ``train_data`` tiles); ``seed`` sets its weights."""
    torch.manual_seed(seed)
    info = ModelInfo.recipe("resnet18", input_size=32, patch_size=32, name=f"tiny {seed}")
    return save_model(path, build_network("resnet18", 8), info)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=3)


@pytest.fixture
def resources(tmp_path, monkeypatch) -> Path:
    """An empty resources folder (the marker file only) that resources_dir() finds."""
    folder = tmp_path / "resources"
    folder.mkdir()
    shutil.copy(resources_dir() / "classes.json", folder / "classes.json")
    monkeypatch.setenv("HISTOVIEWER_RESOURCES", str(folder))
    resources_dir.cache_clear()
    assert resources_dir() == folder
    yield folder
    resources_dir.cache_clear()  # the environment is restored after this


def evaluate_json(capsys, *args: str) -> dict:
    assert cli.main(["evaluate", *args, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_older_form_model_then_data_still_works(model, train_data, capsys):
    scores = evaluate_json(capsys, str(model), str(train_data))
    assert scores["model"] == str(model)
    assert scores["split"] == "test" and scores["n"] == 12


def test_model_option_scores_the_same_as_the_older_form(model, train_data, capsys):
    older = evaluate_json(capsys, str(model), str(train_data))
    newer = evaluate_json(capsys, str(train_data), "--model", str(model))
    before = evaluate_json(capsys, "--model", str(model), str(train_data))
    assert newer["model"] == before["model"] == str(model)
    for key in ("n", "accuracy", "confusion_matrix"):
        assert newer[key] == older[key] == before[key]


def test_without_a_model_and_none_shipped_one_line_error(resources, train_data, capsys):
    code = cli.main(["evaluate", str(train_data), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.strip().splitlines() == [
        "histoviewer: error: no model given and none is shipped with this installation: "
        "pass --model FILE (a model trained with 'histoviewer train')"
    ]


def test_without_a_model_the_first_shipped_model_is_used(resources, model, train_data, capsys):
    models = resources / "models"
    tiny_model(models / "a-first" / MODEL_FILE, seed=5)
    tiny_model(models / "b-second" / MODEL_FILE, seed=6)
    (models / "c-empty").mkdir()  # a folder without a model is not a shipped model
    scores = evaluate_json(capsys, str(train_data))
    assert scores["model"] == str(models / "a-first")
    # The same figures as that model named outright, unlike the other one's.
    named = evaluate_json(capsys, str(train_data), "--model", str(models / "a-first"))
    assert scores["confusion_matrix"] == named["confusion_matrix"]
    other = evaluate_json(capsys, str(train_data), "--model", str(models / "b-second"))
    assert other["model"] != scores["model"]

    # An explicit model always wins over the shipped one, in both forms.
    assert evaluate_json(capsys, str(train_data), "--model", str(model))["model"] == str(model)
    assert evaluate_json(capsys, str(model), str(train_data))["model"] == str(model)

    # The text output names the model used.
    assert cli.main(["evaluate", str(train_data), "--device", "cpu"]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line == f"{models / 'a-first'} on the test split of {train_data}"


def test_two_models_at_once_is_one_line_error(model, train_data, capsys):
    code = cli.main(["evaluate", str(model), str(train_data), "--model", str(model)])
    err = capsys.readouterr().err
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "two models given" in line and "--model MODEL" in line


def test_help_shows_the_new_form(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "[--model MODEL]" in text and "--robustness" in text
    assert "legacy" not in text
