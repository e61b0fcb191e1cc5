"""The output folder of a new run: an earlier run there is refused unless --overwrite
replaces it (leaving none of its files behind), and the disk must have room for the run's
files; both are checked before any tile is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_support import tiny_config

from histoviewer import cli, fileio
from histoviewer.errors import HistoViewerError, StorageError
from histoviewer.training import fit, run_folder
from histoviewer.training import trainer as trainer_module

OLD = b"a file of the earlier run"
# Everything a finished run leaves in its folder.
RUN_FILES = (
    "last.pt",
    "best.safetensors",
    "report.json",
    "curves.png",
    "confusion_matrix.png",
    "split.csv",
)


@pytest.fixture
def no_tiles_read(monkeypatch):
    """Fail the test if the run gets as far as reading its tiles."""

    def refuse(*args, **kwargs):
        raise AssertionError("the tiles were read before the check")

    monkeypatch.setattr(trainer_module, "load_tiles", refuse)


def _earlier_run(out: Path, names=RUN_FILES) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / name).write_bytes(OLD)
    return out


@pytest.mark.parametrize("present", ["last.pt", "best.safetensors", "report.json"])
def test_a_new_run_refuses_a_folder_holding_a_run_before_reading_tiles(
    train_data, tmp_path, no_tiles_read, present
):
    out = _earlier_run(tmp_path / "run", [present, "split.csv"])
    with pytest.raises(HistoViewerError) as caught:
        fit(tiny_config(train_data, out))
    message = str(caught.value)
    assert message == (
        f"{out} already holds a training run ({present}, split.csv); continue or extend it "
        "with --resume (in the app, Resume), train into a new folder, or replace it with "
        "--overwrite"
    )
    assert (out / present).read_bytes() == OLD and (out / "split.csv").read_bytes() == OLD


def test_the_command_line_refuses_too_in_one_line(train_data, tmp_path, capsys, no_tiles_read):
    out = _earlier_run(tmp_path / "run")
    code = cli.main(["train", str(train_data), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert "already holds a training run (last.pt, best.safetensors, report.json" in err[0]
    assert "--resume" in err[0] and "--overwrite" in err[0]
    assert all((out / name).read_bytes() == OLD for name in RUN_FILES)

    code = cli.main(["train", str(train_data), "--out", str(out), "--resume", "--overwrite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err == [
        "histoviewer: error: --resume continues the run in the output folder and --overwrite "
        "replaces it: give one of them, not both"
    ]


def test_a_lone_split_is_not_a_run(train_data, tmp_path):
    out = _earlier_run(tmp_path / "run", ["split.csv"])
    fit(tiny_config(train_data, out, epochs=0))
    assert (out / "split.csv").read_bytes() != OLD


def test_overwrite_leaves_no_file_of_the_earlier_run(train_data, tmp_path, capsys):
    out = _earlier_run(tmp_path / "run")
    (out / "notes.txt").write_text("the user's own file")
    # Data that cannot be loaded: the earlier run is left as it was.
    code = cli.main(
        ["train", str(tmp_path / "missing"), "--out", str(out), "--overwrite", "--epochs", "0"]
    )
    assert code != 0 and all((out / name).read_bytes() == OLD for name in RUN_FILES)
    capsys.readouterr()

    # A split-only run replaces it: nothing of the old run is left beside the new split.
    args = ["train", str(train_data), "--out", str(out), "--overwrite", "--epochs", "0"]
    assert cli.main([*args, "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "split.csv"]
    assert (out / "split.csv").read_text().startswith("class,file,split")


def test_overwrite_then_cancel_keeps_no_stale_report(train_data, tmp_path):
    out = _earlier_run(tmp_path / "run")
    from histoviewer.tasks import CancelToken

    cancel = CancelToken()

    def stop(event):
        if event.kind == "batch":
            cancel.cancel()

    result = fit(tiny_config(train_data, out), stop, cancel, overwrite=True)
    assert result.cancelled and result.epochs_done == 0
    # The new run's epoch-0 checkpoint and split; no report or model of the old run.
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "split.csv"]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 0


def test_a_full_disk_is_refused_before_any_tile_is_read(
    train_data, tmp_path, monkeypatch, capsys, no_tiles_read
):
    out = tmp_path / "run"
    free = 50 * 1024 * 1024
    monkeypatch.setattr(fileio, "free_space", lambda folder: free)
    with pytest.raises(StorageError) as caught:
        fit(tiny_config(train_data, out))
    need = run_folder.estimate_run_bytes(tiny_config(train_data, out))
    assert str(caught.value) == (
        f"not enough free space in {out} for the training run's checkpoints and report "
        f"(last.pt, best.safetensors, ...): about {fileio.format_bytes(need)} needed, "
        "50.0 MB free"
    )
    code = cli.main(["train", str(train_data), "--out", str(out), "--arch", "resnet50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "not enough free space" in err[0]


def test_the_estimate_follows_the_network_and_the_optimiser(tmp_path):
    def need(**changes) -> int:
        return run_folder.estimate_run_bytes(tiny_config(tmp_path, tmp_path / "o", **changes))

    # ResNet-18 has 11.7 M weights: last.pt twice (weights + two Adam moments) and the model.
    assert 7 * 11.1e6 * 4 < need() < 7 * 11.8e6 * 4 + 8e6
    assert need(arch="resnet50") > 2 * need()
    assert need(optimizer="sgd") < need() and need(optimizer="sgd", momentum=0.0) < need(
        optimizer="sgd"
    )
    assert need(epochs=0) < 10e6  # only split.csv


def test_a_stopped_run_says_how_to_go_on(tmp_path):
    from histoviewer.training.checkpoint import LAST_FILE
    from histoviewer.training.commands import stopped_text

    out = tmp_path / "run"
    out.mkdir()
    assert stopped_text(0, 15, "tiles", out) == (
        "stopped before anything was saved; run the same command to start again"
    )
    (out / LAST_FILE).write_bytes(b"epoch 0")
    first = stopped_text(0, 15, "tiles", out)
    assert first.startswith("stopped before the first epoch ended") and "--resume" in first
    later = stopped_text(3, 15, "tiles", out)
    assert later.startswith("stopped after epoch 3 of 15;")
    assert later.endswith(f"histoviewer train tiles --out {out} --resume")
