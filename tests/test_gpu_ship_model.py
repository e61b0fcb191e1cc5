"""The GPU training job's shipping rule, model pieces and reassembly (tools/gpu_ship_model.py).

The job runs once, on a GPU machine with minutes to spare: these parts must be right
before it goes there. The training runs themselves are rehearsed with ``--tiny``.
"""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import torch

from histoviewer.model import ModelInfo, build_network, load_model, save_model

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_ship_model.py"
_spec = importlib.util.spec_from_file_location("gpu_ship_model", _TOOL)
ship = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ship)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Two finished best runs (tiny ResNet-18s standing in for the ResNet-50s)."""
    monkeypatch.setattr(ship, "PIECE_BYTES", 1_000_000)  # several pieces of a tiny model
    work = tmp_path / "work"
    for seed, (name, size) in enumerate([("best150", 32), ("best224", 48)]):
        torch.manual_seed(seed)
        info = ModelInfo.recipe("resnet18", input_size=size, name=f"resnet18 {name}")
        (work / name).mkdir(parents=True)
        save_model(work / name / "best.safetensors", build_network("resnet18", 8), info)
    out = tmp_path / "out"
    out.mkdir()
    return work, out


def summary_with(a150: float | None, a224: float | None) -> dict:
    runs = {}
    for name, size, accuracy in [("best150", 32, a150), ("best224", 48, a224)]:
        if accuracy is not None:
            runs[name] = {"input_size": size, "test_accuracy": accuracy, "returncode": 0}
    return {"runs": runs}


@pytest.mark.parametrize(
    ("a150", "a224", "chosen"),
    [
        (0.960, 0.9650, "best150"),  # 0.5 points behind: the faster model ships
        (0.960, 0.9665, "best224"),  # 0.65 points behind: the more accurate one
        (0.970, 0.9600, "best150"),
        (0.960, None, "best150"),  # the 224 px run did not finish
        (None, 0.950, "best224"),
    ],
)
def test_the_150_px_model_ships_when_within_half_a_point(runs, a150, a224, chosen):
    work, out = runs
    summary = summary_with(a150, a224)
    ship.choose_and_ship(summary, work, out)
    assert summary["shipped"]["run"] == chosen
    assert summary["shipped"]["input_size"] == {"best150": 32, "best224": 48}[chosen]


def test_pieces_are_replaced_when_the_choice_changes_and_reassemble(runs, tmp_path):
    work, out = runs
    summary = summary_with(0.96, None)
    ship.choose_and_ship(summary, work, out)
    first = sorted(p.name for p in out.iterdir())
    assert len(first) > 1 and all(p.stat().st_size <= 1_000_000 for p in out.iterdir())

    summary["runs"].update(summary_with(None, 0.99)["runs"])
    ship.choose_and_ship(summary, work, out)
    assert summary["shipped"]["run"] == "best224"
    assert {p.name for p in out.iterdir()} == set(summary["shipped"]["pieces"])

    # The other files the job returns, then the reassembly here.
    for name in ("best150", "best224"):
        report = {"config": {"image_size": 48, "arch": "resnet18"}, "test": {"per_class": []}}
        (work / name / "report.json").write_text(json.dumps(report))
        for figure in ("curves.png", "confusion_matrix.png"):
            (work / name / figure).write_bytes(b"png")
    ship.write_runs(out, work, summary)
    ship.write_json(out / "summary.json", summary)
    dest = tmp_path / "resources" / "models" / "kather2016-resnet50"
    assert ship.assemble(out, dest) == 0
    shipped = load_model(dest)
    assert shipped.info.input_size == 48
    assert shipped.info.name == "Kather 2016 ResNet-50, 48 px"
    # float16 on disk, the trained weights once loaded
    trained = load_model(work / "best224" / "best.safetensors")
    for a, b in zip(shipped.network.parameters(), trained.network.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    assert (dest / "training" / "best150" / "report.json").is_file()
    assert "model.safetensors" in (dest / "README.md").read_text()


def test_a_damaged_piece_is_refused(runs, tmp_path, capsys):
    work, out = runs
    summary = summary_with(0.96, None)
    ship.choose_and_ship(summary, work, out)
    ship.write_json(out / "summary.json", summary)
    with tarfile.open(out / "runs.tar.gz", "w:gz"):
        pass
    piece = out / summary["shipped"]["pieces"][0]
    piece.write_bytes(piece.read_bytes()[:-1] + b"\0")
    assert ship.assemble(out, tmp_path / "dest") == 1
    assert "do not match" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()
