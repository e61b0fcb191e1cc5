"""Cross-validation by specimen: folds, the pooled report, the final model, resume, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_support import make_specimen_tiles, tiny_config

from histoviewer import cli
from histoviewer.errors import HistoViewerError
from histoviewer.model import load_model
from histoviewer.model.describe import model_summary
from histoviewer.tasks import CancelToken
from histoviewer.training import TrainEvent, evaluate_model
from histoviewer.training.crossval import (
    CROSSVAL_FILE,
    cross_validate,
    fold_folder,
    resume_any_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FOLDS = 3
SPECIMENS = 6
CLASSES = ["tumor", "stroma", "adipose"]


@pytest.fixture(scope="module")
def specimen_tiles(tmp_path_factory):
    # Adipose only in specimens 1 and 2: at most two of the three folds can test it.
    absent = tuple((2, s) for s in range(3, SPECIMENS + 1))
    return make_specimen_tiles(
        tmp_path_factory.mktemp("tiles"), specimens=SPECIMENS, per_class=5, absent=absent
    )


def cv_config(data, out, **changes):
    values = {"split_by": "specimen", "folds": FOLDS, "epochs": 1, **changes}
    return tiny_config(data, out, **values)


@pytest.fixture(scope="module")
def crossval(specimen_tiles, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    events: list[TrainEvent] = []
    result = cross_validate(cv_config(specimen_tiles, out), events.append)
    return result, events


def test_every_tile_is_tested_once_by_a_model_that_never_saw_its_specimen(crossval):
    result, _ = crossval
    assert not result.cancelled
    summary = json.loads((result.out / CROSSVAL_FILE).read_text())
    assert summary["status"] == "finished" and summary["folds"] == FOLDS
    folds = summary["per_fold"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    tested = [s for f in folds for s in f["test_specimens"]]
    assert sorted(tested) == [f"CRC-Prim-HE-{i:02d}" for i in range(1, SPECIMENS + 1)]
    total = 5 * (2 * SPECIMENS + 2)  # tumour and stroma everywhere, adipose in two
    assert summary["n"] == sum(f["test_tiles"] for f in folds) == total
    pooled = np.zeros((3, 3), dtype=int)
    for fold in folds:
        report = json.loads((fold_folder(result.out, fold["fold"]) / "report.json").read_text())
        assert report["test_split"] == "specimen"
        # The fold's model never trained on (or validated with) its test specimens.
        seen = set(report["specimens"]["train"]) | set(report["specimens"]["val"])
        assert not seen & set(fold["test_specimens"])
        assert report["specimens"]["test"] == fold["test_specimens"]
        assert report["test"]["accuracy"] == pytest.approx(fold["accuracy"])
        pooled += np.asarray(report["test"]["confusion_matrix"])
    assert summary["confusion_matrix"] == pooled.tolist()
    assert summary["accuracy"] == pytest.approx(np.trace(pooled) / pooled.sum())
    assert summary["fold_accuracy_mean"] == pytest.approx(np.mean([f["accuracy"] for f in folds]))
    assert (result.out / "crossval_confusion.png").stat().st_size > 1000


def test_a_fold_without_a_class_says_so_and_never_scores_it(crossval):
    result, _ = crossval
    folds = result.summary["per_fold"]
    without = [f for f in folds if "adipose" in f["untested"]]
    assert without, "adipose lives in two specimens: some fold cannot test it"
    for fold in without:
        assert not {"CRC-Prim-HE-01", "CRC-Prim-HE-02"} & set(fold["test_specimens"])
        run = result.folds[fold["fold"] - 1]
        adipose = run.test_metrics["per_class"][2]
        assert adipose["support"] == 0 and adipose["f1"] is None
        assert any("No test tile is adipose" in note for note in run.notes)
    # A fold holding both adipose specimens out cannot learn it, and says so; one holding
    # one of them out learns it from the other alone.
    for fold in folds:
        held = {"CRC-Prim-HE-01", "CRC-Prim-HE-02"} & set(fold["test_specimens"])
        assert ("adipose" in fold["untrained"]) == (len(held) == 2)
        assert ("adipose" in fold["one_training_specimen"]) == (len(held) == 1)
        assert "tumor" not in fold["one_training_specimen"]


def test_the_final_model_reports_both_figures_side_by_side(crossval):
    result, _ = crossval
    final = result.final
    assert final is not None and final.config.split_by == "tile"
    report = json.loads((result.out / "report.json").read_text())
    assert report["test_split"] == "tile"
    assert report["unseen_specimens"]["accuracy"] == pytest.approx(result.summary["accuracy"])
    assert report["specimens"]["test_tiles_from_seen_specimens"] == report["test"]["n"]
    assert any("cross-validation by specimen gives" in note for note in report["notes"])
    card = (result.out / "MODEL_CARD.md").read_text()
    assert f"Unseen specimens ({FOLDS}-fold cross-validation by specimen)" in card
    assert f"| {result.summary['accuracy'] * 100:.1f} % |" in card
    assert f"| {report['test']['accuracy'] * 100:.1f} % |" in card
    info = load_model(result.out / "best.safetensors").info
    assert info.metrics["unseen_accuracy"] == pytest.approx(result.summary["accuracy"])
    assert info.metrics["unseen_folds"] == FOLDS
    rows = {row.key: row for row in model_summary(info, None, result.out / "best.safetensors")}
    assert "of specimens also in training" in rows["test_accuracy"].value
    unseen = rows["unseen_accuracy"]
    assert unseen.label == "Unseen specimens"
    assert f"{result.summary['accuracy'] * 100:.1f} %" in unseen.value
    assert f"{FOLDS}-fold cross-validation by specimen" in unseen.value


def test_progress_names_each_part(crossval):
    _, events = crossval
    parts = [(e.part, e.part_no, e.parts) for e in events if e.kind == "start"]
    assert parts == [
        ("fold 1 of 3", 1, 4),
        ("fold 2 of 3", 2, 4),
        ("fold 3 of 3", 3, 4),
        ("final model", 4, 4),
    ]


def test_evaluate_by_specimen(crossval, specimen_tiles):
    result, _ = crossval
    fold = result.summary["per_fold"][1]
    model = result.out / fold["model"]
    metrics = evaluate_model(model, specimen_tiles, split_by="specimen", device="cpu")
    assert metrics["specimens"] == fold["test_specimens"]
    assert metrics["n"] == fold["test_tiles"]
    assert metrics["accuracy"] == pytest.approx(fold["accuracy"])
    # The default test split of a fold model is its unseen specimens too.
    default = evaluate_model(model, specimen_tiles, device="cpu")
    assert default["specimens"] == fold["test_specimens"] and default["n"] == fold["test_tiles"]
    with pytest.raises(HistoViewerError) as caught:
        evaluate_model(result.out / "best.safetensors", specimen_tiles, split_by="specimen")
    message = str(caught.value)
    assert "trained on tiles of every specimen" in message
    assert "cannot give an unseen-specimen figure" in message
    assert f"{result.summary['accuracy'] * 100:.1f} % accuracy on unseen specimens" in message


def test_evaluate_by_specimen_on_other_patients(crossval, tmp_path):
    result, _ = crossval
    # The same kind of tiles from two new specimens: all of them are unseen.
    other = make_specimen_tiles(tmp_path / "other", specimens=8, per_class=2)
    for path in other.rglob("*.png"):
        if "HE-07" not in path.name and "HE-08" not in path.name:
            path.unlink()
    metrics = evaluate_model(
        result.out / "best.safetensors", other, split_by="specimen", device="cpu"
    )
    assert metrics["specimens"] == ["CRC-Prim-HE-07", "CRC-Prim-HE-08"]
    assert metrics["n"] == 2 * 2 * 3


def test_cancel_then_resume_ends_like_an_uninterrupted_cross_validation(
    crossval, specimen_tiles, tmp_path
):
    reference, _ = crossval
    out = tmp_path / "cv"
    cancel = CancelToken()

    def stop_in_fold_two(event: TrainEvent) -> None:
        if event.kind == "batch" and event.part_no == 2:
            cancel.cancel()

    stopped = cross_validate(cv_config(specimen_tiles, out), stop_in_fold_two, cancel)
    assert stopped.cancelled and "fold 2 of 3" in stopped.message
    assert json.loads((out / CROSSVAL_FILE).read_text())["status"] == "running"
    config = resume_any_config(out, data=str(specimen_tiles))
    assert config.split_by == "specimen" and config.fold == 0 and config.folds == FOLDS
    resumed = cross_validate(config, resume=True)
    assert not resumed.cancelled
    assert resumed.summary["confusion_matrix"] == reference.summary["confusion_matrix"]
    assert resumed.final.test_metrics == reference.final.test_metrics


def test_a_finished_cross_validation_is_extended_even_when_stopped_midway(specimen_tiles, tmp_path):
    out = tmp_path / "cv"
    cross_validate(cv_config(specimen_tiles, out), final=False)
    cancel = CancelToken()

    def stop_in_fold_two(event: TrainEvent) -> None:
        if event.kind == "batch" and event.part_no == 2:
            cancel.cancel()

    longer = resume_any_config(out, data=str(specimen_tiles), epochs=2)
    stopped = cross_validate(longer, stop_in_fold_two, cancel, resume=True, final=False)
    assert stopped.cancelled
    # Resumed as typed the second time, without --epochs: the saved length is the new one.
    again = resume_any_config(out, data=str(specimen_tiles))
    assert again.epochs == 2
    done = cross_validate(again, resume=True, final=False)
    assert not done.cancelled
    assert [len(run.history) for run in done.folds] == [2, 2, 2]
    assert all(run.extensions for run in done.folds)


def test_an_earlier_cross_validation_is_not_overwritten_silently(crossval, specimen_tiles):
    result, _ = crossval
    with pytest.raises(HistoViewerError, match=r"already holds .*--resume.*--overwrite"):
        cross_validate(cv_config(specimen_tiles, result.out))
    with pytest.raises(HistoViewerError, match="no cross-validation to resume"):
        cross_validate(cv_config(specimen_tiles, result.out / "elsewhere"), resume=True)


def test_overwrite_replaces_the_folds(specimen_tiles, tmp_path):
    out = tmp_path / "cv"
    cross_validate(cv_config(specimen_tiles, out), final=False)
    mine = fold_folder(out, 1) / "notes.txt"
    mine.write_text("the user's")
    (fold_folder(out, 3) / "report.json").unlink()  # as if fold 3 had other files only
    again = cross_validate(cv_config(specimen_tiles, out, folds=2), overwrite=True, final=False)
    assert not again.cancelled and again.summary["folds"] == 2
    assert mine.read_text() == "the user's"  # a file of the user's stays
    assert not fold_folder(out, 3).exists()  # a fold of the old run does not
    assert not (out / "best.safetensors").exists()


def test_cli_cross_validation_and_its_errors(specimen_tiles, tmp_path, capsys, restore_logging):
    out = tmp_path / "run"
    common = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "20", "--epochs", "1"]
    args = ["train", str(specimen_tiles), "--out", str(out), *common, "--device", "cpu"]
    assert cli.main([*args, "--split-by", "specimen", "--folds", "2"]) == 0
    printed, err = capsys.readouterr()
    # Three trainings read the same tiles; their warning is given once.
    assert err.count("warning: The tiles' scale was not given") == 1
    assert "unseen specimens (2-fold cross-validation by specimen): accuracy" in printed
    assert "  fold 1: CRC-Prim-HE-" in printed and "  fold 2: CRC-Prim-HE-" in printed
    last = printed.strip().splitlines()[-2:]
    assert last[0].startswith("test split (specimens seen in training): accuracy ")
    assert last[1].startswith("unseen specimens (2-fold): accuracy ")

    code = cli.main(["evaluate", str(out / "best.safetensors"), str(specimen_tiles)])
    assert code == 0
    code = cli.main(
        ["evaluate", str(out / "best.safetensors"), str(specimen_tiles), "--split-by", "specimen"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    # (Warnings first: 70 tiles are too few for the canonical split; then the one error.)
    assert code == 1 and "cannot give an unseen-specimen figure" in err[-1]
    assert err[-1].startswith("histoviewer: error: ") and "Traceback" not in "".join(err)

    code = cli.main(
        [
            "evaluate",
            str(out / "fold-1" / "best.safetensors"),
            str(specimen_tiles),
            "--split-by",
            "specimen",
        ]
    )
    assert code == 0
    assert "on the specimens of" in capsys.readouterr().out

    for extra, expected in (
        (["--fold", "1"], "--fold holds out the specimens of one fold: add --split-by specimen"),
        (["--no-final"], "--no-final skips the final model"),
        (["--split-by", "specimen", "--folds", "2", "--fold", "3"], "fold=3"),
        (["--split-by", "specimen", "--folds", "9"], "9 folds need at least 9 specimens"),
    ):
        code = cli.main(
            ["-q", *args[:2], "--out", str(tmp_path / "x"), *common, "--device", "cpu", *extra]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and expected in err[0], (extra, err)


def test_cli_names_without_specimens(tmp_path, capsys, restore_logging):
    from training_support import make_tiles

    data = make_tiles(tmp_path / "plain", per_class=4, size=32)
    code = cli.main(
        [
            "-q",
            "train",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--split-by",
            "specimen",
            "--epochs",
            "1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert "no specimen can be read from the file names" in err[0] and "--group-pattern" in err[0]
