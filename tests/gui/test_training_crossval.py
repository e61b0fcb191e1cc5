"""Model > Train New Model with "Also test on unseen specimens": the form's choice, its
time estimate and question, a real cross-validation by specimen through the dialog
(progress by part, cancel, resume, the two figures side by side), and classes that
have no test tile (not scored: "–", never 0)."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import threading
import time
from pathlib import Path

import pytest

from histoviewer.gui import settings as config
from histoviewer.gui import training_dialog
from histoviewer.gui.training_dialog import TrainingDialog
from histoviewer.gui.training_form import (
    ERROR_STYLE,
    Estimate,
    Speed,
    fold_sizes,
    split_sizes,
)
from histoviewer.gui.training_results import (
    NOT_SCORED,
    NOT_SCORED_TIP,
    UNSEEN_VIEW,
    ResultsPanel,
)
from histoviewer.training import classification_metrics, preset
from histoviewer.training.checkpoint import save_last
from histoviewer.training.crossval import CROSSVAL_FILE, TILE_SPLIT_MEANING, UNSEEN_MEANING

TIMEOUT = 120_000


def _training_support():
    """tests/training/training_support.py (the specimen-named tiles), by its path: that
    folder is on sys.path only when its own tests run."""
    path = Path(__file__).resolve().parents[1] / "training" / "training_support.py"
    spec = importlib.util.spec_from_file_location("gui_training_support", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


support = _training_support()

pytestmark = pytest.mark.usefixtures("one_torch_thread", "start_questions")


@pytest.fixture
def make_dialog(qtbot, settings):
    made = []

    def make() -> TrainingDialog:
        dialog = TrainingDialog(settings)
        qtbot.addWidget(dialog)
        made.append(dialog)
        return dialog

    yield make
    for dialog in made:
        dialog.shutdown()


@pytest.fixture
def specimen_tiles(tmp_path):
    """6 specimens (CRC-Prim-HE-01..06) x 3 classes x 3 tiles of 32 px."""
    return support.make_specimen_tiles(tmp_path / "tiles", specimens=6, per_class=3)


def plain(label) -> str:
    """A rich-text label's text as it reads: tags dropped, entities decoded, lines by \\n."""
    return html.unescape(re.sub(r"<[^>]+>", "", label.text().replace("<br>", "\n")))


def wait_ready(qtbot, dialog):
    qtbot.waitUntil(lambda: not dialog.form.checking(), timeout=TIMEOUT)


def set_up_crossval(qtbot, dialog, data: Path, out: Path, *, folds=3, epochs=1) -> None:
    """resnet18 at 32 px, batch 20, ``epochs`` epochs, ``folds`` folds by specimen."""
    form = dialog.form
    form.data_edit.setText(str(data))
    form.out_edit.setText(str(out))
    form.arch_combo.setCurrentText("resnet18")
    form.epochs_spin.setValue(epochs)
    form.batch_spin.setValue(20)
    form.image_spin.setValue(32)
    form.unseen_check.setChecked(True)
    form.folds_spin.setValue(folds)
    wait_ready(qtbot, dialog)


class ProgressLog:
    """What the dialog shows after each event of the run (status, progress bar)."""

    def __init__(self, dialog: TrainingDialog) -> None:
        self.seen: list[tuple[str, str, int]] = []
        # Connected after the dialog's own slot: it sees what that slot showed.
        dialog.runner.progress.connect(
            lambda job, e: self.seen.append(
                (e.kind, dialog.status_label.text(), dialog.progress.value())
            )
        )

    def statuses(self, kind: str) -> list[str]:
        return [status for k, status, _ in self.seen if k == kind]


# --- the form -----------------------------------------------------------------------------


def test_the_unseen_specimens_choice(qtbot, make_dialog, specimen_tiles, tmp_path, monkeypatch):
    dialog = make_dialog()
    form = dialog.form
    assert form.unseen_check.text() == "Also test on unseen specimens"
    tip = form.unseen_check.toolTip()
    assert "CRC-Prim-HE-03" in tip and "K + 1 trainings" in tip
    assert not form.unseen_check.isChecked() and not form.folds_spin.isEnabled()
    assert form.folds_spin.value() == 5
    assert (form.folds_spin.minimum(), form.folds_spin.maximum()) == (2, 10)
    assert form.config().split_by == "tile"

    set_up_crossval(qtbot, dialog, specimen_tiles, tmp_path / "run", folds=3, epochs=2)
    assert form.folds_spin.isEnabled()
    cfg = form.config()
    assert (cfg.split_by, cfg.folds, cfg.fold) == ("specimen", 3, 0)
    assert form.specimen_label.text() == (
        "6 specimens in the file names (CRC-Prim-HE-01 to CRC-Prim-HE-06): each of the 3 "
        "folds tests 2 of them."
    )
    assert dialog.start_button.isEnabled()

    # The estimate counts the 3 fold trainings and the final model's.
    counts = [18, 18, 18]
    fold, final = fold_sizes(counts, cfg), split_sizes(counts, cfg)
    assert fold == (34, 2, 18) and final[0] == 43
    est = form.estimate()
    speed = est.speed

    def run(epochs, sizes):
        train, val, test = sizes
        return epochs * (train / speed.train + val / speed.eval) + test / speed.eval

    assert est.seconds == pytest.approx(3 * run(2, fold) + run(2, final))
    assert (est.folds, est.trainings, est.fold_train_images) == (3, 4, 34)
    label = form.estimate_label.text()
    assert (
        "4 trainings of 2 epochs (3 folds on about 34 training tiles each, then the final "
        "model on 43), resnet18 at 32 px, batch 20" in label
    )
    # A single run of the same settings takes about a quarter of that.
    single = form.estimate(cfg.replace(split_by="tile"))
    assert single.seconds == pytest.approx(run(2, final)) and single.folds == 0

    asked = []
    monkeypatch.setattr(dialog, "ask_start", lambda text: asked.append(text) or False)
    assert dialog.start() is None and not dialog.is_running()
    question = asked[0]
    assert question.startswith(
        "Train resnet18 4 times, 2 epochs each (32 px, batch 20) on this CPU (about 34 training "
        "tiles an epoch in a fold, 43 in the final model): once for each of 3 folds, tested on "
        "specimens it never saw, then the final model?"
    )
    assert f"\n\n{est.short} for all 4 trainings, plus reading the tiles" in question

    # More folds than specimens: refused before any tile is read.
    form.folds_spin.setValue(7)
    assert form.specimen_label.text() == (
        "7 folds need at least 7 specimens, but these tiles come from 6: set Folds to 6 or fewer."
    )
    assert form.specimen_label.styleSheet() == ERROR_STYLE
    assert not dialog.start_button.isEnabled()
    form.folds_spin.setValue(3)
    assert dialog.start_button.isEnabled()
    # A preset fills the training settings, not this choice.
    form.preset_combo.setCurrentText("best")
    assert form.unseen_check.isChecked() and form.config().folds == 3
    form.preset_combo.setCurrentText("recipe")
    form.arch_combo.setCurrentText("resnet18")
    wanted = form.config().replace(out="")

    # Remembered: a new dialog offers it again.
    again = make_dialog()
    wait_ready(qtbot, again)
    assert again.form.unseen_check.isChecked() and again.form.folds_spin.isEnabled()
    assert again.form.config().replace(out="") == wanted

    # Unchecked: an ordinary run, and the next dialog remembers that too.
    again.form.unseen_check.setChecked(False)
    assert not again.form.folds_spin.isEnabled() and again.form.config().split_by == "tile"
    assert not again.form.specimen_label.isVisibleTo(again.form)
    third = make_dialog()
    assert not third.form.unseen_check.isChecked() and third.form.folds_spin.value() == 3


def test_tiles_without_specimens_in_their_names_are_refused(qtbot, make_dialog, tmp_path):
    data = support.make_tiles(tmp_path / "plain")  # tile_000.png ...: no specimen
    dialog = make_dialog()
    form = dialog.form
    form.data_edit.setText(str(data))
    form.out_edit.setText(str(tmp_path / "run"))
    wait_ready(qtbot, dialog)
    assert dialog.start_button.isEnabled()
    form.unseen_check.setChecked(True)
    text = form.specimen_label.text()
    assert text.startswith("No specimen can be read from these file names (e.g. 'tile_000')")
    assert form.specimen_label.styleSheet() == ERROR_STYLE
    assert not dialog.start_button.isEnabled() and dialog.start() is None
    form.unseen_check.setChecked(False)
    assert dialog.start_button.isEnabled()


def test_the_estimate_of_a_resumed_crossval_counts_what_is_left():
    cfg = preset("recipe", split_by="specimen", folds=5, epochs=10)
    counts = [12_500] * 8
    speed = Speed(100.0, 300.0, "typical")
    whole = Estimate.of(cfg, 10, counts, speed, "this CPU")
    train, val, test = fold_sizes(counts, cfg)
    assert (train, val, test) == (76_000, 4_000, 20_000)
    fold = 10 * (train / 100 + val / 300) + test / 300
    final = 10 * (80_000 / 100 + 4_000 / 300) + 16_000 / 300
    assert whole.seconds == pytest.approx(5 * fold + final)
    # Stopped in fold 4 after 6 epochs: 4 epochs of it, fold 5 and the final model left.
    left = Estimate.of(cfg, 10, counts, speed, "this CPU", from_part=4, part_epochs_done=6)
    part = 4 * (train / 100 + val / 300) + test / 300
    assert left.seconds == pytest.approx(part + fold + final) and left.trainings == 3
    assert left.work.startswith("3 of 6 trainings left, 10 epochs each (the folds on about")
    last = Estimate.of(cfg, 10, counts, speed, "this CPU", from_part=6, part_epochs_done=9)
    assert last.seconds == pytest.approx(1 * (80_000 / 100 + 4_000 / 300) + 16_000 / 300)
    assert last.work.startswith("the final model left, 10 epochs × 80,000 training tiles")


# --- a cross-validation by specimen through the dialog ------------------------------------


def test_a_crossval_runs_through_the_dialog_and_shows_both_figures(
    qtbot, make_dialog, specimen_tiles, tmp_path, start_questions
):
    dialog = make_dialog()
    out = tmp_path / "run"
    set_up_crossval(qtbot, dialog, specimen_tiles, out, folds=3, epochs=1)
    progress = ProgressLog(dialog)
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        assert dialog.start() is not None
    assert start_questions[-1].startswith("Train resnet18 4 times, 1 epoch each")
    result = blocker.args[0]
    assert not result.cancelled and result.out == out  # the final model's run
    crossval = dialog.crossval
    assert crossval is not None and crossval.summary is not None
    assert [f.out for f in crossval.folds] == [out / f"fold-{i}" for i in (1, 2, 3)]

    # The status named each part; the bar went through every part once, in order.
    batches = progress.statuses("batch")
    for part in ("Fold 1 of 3", "Fold 2 of 3", "Fold 3 of 3", "Final model"):
        assert any(s.startswith(f"{part} · Epoch 1 / 1 · training batch") for s in batches), part
    values = [value for kind, _, value in progress.seen if kind in ("batch", "epoch")]
    assert values == sorted(values) and values[0] < 400 < values[-1]
    log = dialog.log_text()
    assert "Fold 2 of 3 · Test accuracy on its unseen specimens" in log
    assert log.count("Note (fold 1 of 3): The tiles' scale was not given") == 1
    assert "Note (fold 2 of 3): The tiles' scale" not in log  # once is enough
    assert "Note (fold 2 of 3): The test tiles are fold 2 of 3" in log

    report = result.report
    unseen = report["unseen_specimens"]
    test = report["test"]
    assert unseen["folds"] == 3 and report["test_split"] == "tile"
    panel = dialog.results
    assert dialog.tabs.currentWidget() is panel
    test_text, unseen_text = plain(panel.test_figure), plain(panel.unseen_figure)
    assert f"Test accuracy {test['accuracy'] * 100:.1f} %" in test_text
    assert "(tiles of specimens seen in training)" in test_text
    spread = f"{unseen['fold_accuracy_mean'] * 100:.1f} ± {unseen['fold_accuracy_sd'] * 100:.1f} %"
    assert f"Unseen specimens {unseen['accuracy'] * 100:.1f} %" in unseen_text
    assert f"(3-fold cross-validation by specimen, per fold {spread})" in unseen_text
    assert plain(panel.test_meaning).startswith(TILE_SPLIT_MEANING)
    assert plain(panel.unseen_meaning).startswith(UNSEEN_MEANING)
    assert f"{unseen['n']:,} tiles of 6 specimens" in plain(panel.unseen_meaning)
    status = dialog.status_label.text()
    assert status.endswith(
        f": test accuracy {test['accuracy'] * 100:.1f} % on specimens seen in training, "
        f"{unseen['accuracy'] * 100:.1f} % on unseen ones."
    )

    # The tables show the test split first, then the unseen specimens, pooled.
    assert panel.confusion_values() == test["confusion_matrix"]
    assert not panel.per_fold_box.isVisibleTo(panel)
    panel.unseen_button.click()
    assert panel.view() == UNSEEN_VIEW
    assert panel.confusion_values() == unseen["confusion_matrix"]
    assert sum(map(sum, panel.confusion_values())) == unseen["n"] == 54
    assert [r[3] for r in panel.per_class_rows()] == [f"{c['f1']:.3f}" for c in unseen["per_class"]]
    assert panel.per_fold_box.isVisibleTo(panel)
    assert panel.per_fold_rows() == [
        (
            str(f["fold"]),
            ", ".join(f["test_specimens"]),
            str(f["test_tiles"]),
            f"{f['accuracy'] * 100:.1f} %",
            "none",
        )
        for f in unseen["per_fold"]
    ]
    panel.test_button.click()
    assert panel.confusion_values() == test["confusion_matrix"]

    # The final model is the one to use.
    assert dialog.use_button.isEnabled()
    with qtbot.waitSignal(dialog.use_model, timeout=TIMEOUT) as used:
        assert dialog.use_trained_model()
    assert used.args[1] == str(out / "best.safetensors")

    # Its folder is taken: the form recognises the finished cross-validation there.
    assert Path(dialog.form.out_folder) != out
    dialog.form.out_edit.setText(str(out))
    qtbot.waitUntil(lambda: dialog.form.earlier_run is not None, timeout=TIMEOUT)
    run = dialog.form.earlier_run
    assert run.crossval and run.finished and run.parts == 4
    assert dialog.form.run_label.text().startswith(
        "A finished 3-fold cross-validation by specimen and its final model are in this folder"
    )
    assert not dialog.start_button.isEnabled() and not dialog.resume_button.isEnabled()
    dialog.form.epochs_spin.setValue(3)  # no Extend for a cross-validation
    assert not dialog.resume_button.isEnabled() and dialog.resume_button.text() == "Resume"


class CrossValGate:
    """Wraps the real cross_validate(): after the first event ``when`` picks, the worker
    waits until the run is cancelled, so the test can act mid-run without timing guesses."""

    def __init__(self, monkeypatch, when) -> None:
        self.reached = threading.Event()
        self.real = real = training_dialog.cross_validate

        def gated(cfg, progress, cancel, **kwargs):
            def report(event):
                progress(event)
                if not self.reached.is_set() and when(event):
                    self.reached.set()
                    while not cancel.cancelled:
                        time.sleep(0.02)

            return real(cfg, report, cancel, **kwargs)

        monkeypatch.setattr(training_dialog, "cross_validate", gated)


def test_a_cancelled_crossval_resumes_where_it_stopped(
    qtbot, make_dialog, specimen_tiles, tmp_path, monkeypatch, start_questions
):
    gate = CrossValGate(monkeypatch, lambda e: e.kind == "epoch" and e.part_no == 2)
    dialog = make_dialog()
    out = tmp_path / "run"
    set_up_crossval(qtbot, dialog, specimen_tiles, out, folds=3, epochs=2)
    dialog.start()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    # A folder with a cross-validation under way is not free (for another dialog's Start).
    assert (out / CROSSVAL_FILE).is_file()
    assert dialog.progress.value() > 50 + 950 * 1 / 4  # fold 1 of the 4 parts is done
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.cancel_button.click()
    stopped = blocker.args[0]
    assert stopped.cancelled and stopped.epochs_done == 1 and stopped.out == out / "fold-2"
    assert dialog.crossval.cancelled and dialog.crossval.summary is None
    assert dialog.status_label.text() == (
        "Cancelled in fold 2 of the 3-fold cross-validation after epoch 1 of 2 (1 of 4 "
        "trainings finished). Resume continues from there."
    )
    assert not dialog.use_button.isEnabled()

    qtbot.waitUntil(dialog.resume_button.isEnabled, timeout=TIMEOUT)
    form = dialog.form
    run = form.earlier_run
    assert (run.part_no, run.parts, run.epoch, run.epochs) == (2, 4, 1, 2)
    assert form.run_label.text() == (
        "An interrupted 3-fold cross-validation by specimen was found in fold 2 of 3 after "
        "epoch 1 of 2 (1 of 4 trainings finished): Resume continues it (a new run needs "
        "another folder)."
    )
    assert not dialog.start_button.isEnabled()
    assert form.estimate_label.text().startswith("Resuming: about ")
    assert "3 of 4 trainings left, 2 epochs each" in form.estimate_label.text()

    monkeypatch.setattr(training_dialog, "cross_validate", gate.real)
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT) as blocker:
        dialog.resume_button.click()
    assert start_questions[-1].startswith(
        f"Resume the 3-fold cross-validation by specimen in {out} at fold 2 of 3 on this CPU "
        "(about 34 training tiles an epoch in a fold, 43 in the final model): 3 of 4 trainings "
        "left, 2 epochs each (resnet18, 32 px, batch 20)?"
    )
    result = blocker.args[0]
    assert not result.cancelled and result.out == out
    assert "Fold 2 of 3 · Continuing after epoch 1 of 2." in dialog.log_text()
    assert [f.epochs_done for f in dialog.crossval.folds] == [2, 2, 2]
    unseen = result.report["unseen_specimens"]
    assert f"Unseen specimens {unseen['accuracy'] * 100:.1f} %" in plain(
        dialog.results.unseen_figure
    )
    assert dialog.use_button.isEnabled()


def test_an_interrupted_crossval_is_offered_again_in_a_new_dialog(
    qtbot, make_dialog, settings, tmp_path
):
    # What a cross-validation stopped in fold 2 leaves (the app was closed): its
    # crossval.json, a finished fold 1 and fold 2's checkpoint.
    out = tmp_path / "run"
    cfg = preset("recipe", data=str(tmp_path / "tiles"), out=str(out), split_by="specimen")
    cfg = cfg.replace(folds=3, epochs=4, arch="resnet18")
    (out / "fold-1").mkdir(parents=True)
    (out / "fold-2").mkdir()
    (out / CROSSVAL_FILE).write_text(json.dumps({"status": "running", "config": cfg.to_dict()}))
    (out / "fold-1" / "report.json").write_text("{}")
    save_last(out / "fold-2" / "last.pt", {"epoch": 3, "config": cfg.replace(fold=2).to_dict()})
    config.set_training_value(settings, "last_run", str(out))

    dialog = make_dialog()
    form = dialog.form
    assert form.out_folder == str(out)
    qtbot.waitUntil(lambda: form.earlier_run is not None, timeout=TIMEOUT)
    run = form.earlier_run
    assert (run.crossval, run.part_no, run.parts, run.epoch, run.finished) == (
        True,
        2,
        4,
        3,
        False,
    )
    assert "found in fold 2 of 3 after epoch 3 of 4 (1 of 4 trainings finished)" in (
        form.run_label.text()
    )
    # Its settings are shown: the check box on, its folds and epochs.
    assert form.unseen_check.isChecked() and form.folds == 3 and form.epochs == 4
    assert form.resume_config().replace(device="auto") == cfg.replace(device="auto")
    assert dialog.resume_button.isEnabled() and not dialog.start_button.isEnabled()

    # Fold files without crossval.json or last.pt: nothing to resume, and not free.
    (out / CROSSVAL_FILE).unlink()
    form.inspect_output()
    qtbot.waitUntil(lambda: not form.checking(), timeout=TIMEOUT)
    assert form.run_label.text() == (
        f"{out} holds files of an earlier run (fold-1/report.json, fold-2/last.pt) but no "
        "last.pt to resume it. Choose another folder."
    )
    assert form.run_label.styleSheet() == ERROR_STYLE
    assert not dialog.start_button.isEnabled() and not dialog.resume_button.isEnabled()


# --- classes without test tiles -----------------------------------------------------------


def test_a_class_without_test_tiles_is_not_scored(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    names = ["tumor", "stroma", "adipose"]
    metrics = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], names)
    assert metrics["untested"] == ["adipose"]
    panel.set_results(metrics)
    rows = panel.per_class_rows()
    assert rows[2][1:] == (NOT_SCORED, NOT_SCORED, NOT_SCORED, "0")
    assert panel.per_class_tooltips()[2] == (NOT_SCORED_TIP,) * 3
    assert rows[1][1:4] == ("0.667", "1.000", "0.800") and "0.000" not in rows[2]

    # A run that held one fold's specimens out says which, in its headline.
    panel.set_results(
        metrics, test_split="specimen", test_specimens=["CRC-Prim-HE-03", "CRC-Prim-HE-09"]
    )
    assert "Test accuracy on unseen specimens (CRC-Prim-HE-03, CRC-Prim-HE-09): 75.0 %" in plain(
        panel.summary
    )

    # Pooled unseen specimens where no fold had an adipose tile.
    unseen = {
        **classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], names),
        "folds": 2,
        "specimens": ["A", "B", "C"],
        "fold_accuracy_mean": 0.75,
        "fold_accuracy_sd": 0.25,
        "per_fold": [
            {"fold": 1, "test_specimens": ["A"], "test_tiles": 2, "accuracy": 1.0,
             "untested": ["adipose"], "untrained": []},
            {"fold": 2, "test_specimens": ["B", "C"], "test_tiles": 2, "accuracy": 0.5,
             "untested": ["adipose"], "untrained": ["adipose"]},
        ],
    }  # fmt: skip
    panel.set_results(classification_metrics([0, 1, 2], [0, 1, 2], names), unseen=unseen)
    assert (
        "Unseen specimens 75.0 % (2-fold cross-validation by specimen, per fold 75.0 ± 25.0 %)"
        in (plain(panel.unseen_figure))
    )
    assert "No tile of adipose: not tested." in plain(panel.unseen_meaning)
    assert panel.per_class_rows()[2][1:4] == ("1.000",) * 3  # the test split: all scored
    panel.show_view(UNSEEN_VIEW)
    assert panel.per_class_rows()[2][1:] == (NOT_SCORED, NOT_SCORED, NOT_SCORED, "0")
    assert [r[4] for r in panel.per_fold_rows()] == [
        "adipose",
        "adipose; never trained on adipose",
    ]
    panel.clear()
    assert not panel.figures.isVisibleTo(panel) and panel.per_class.rowCount() == 0


def test_the_main_window_is_told_how_a_run_or_a_fold_ended(tmp_path):
    from histoviewer.training import FitResult

    def result(config, **values):
        return FitResult(tmp_path, config, 2, [], 2, 0.5, {}, **values)

    plain = preset("recipe", out=str(tmp_path))
    fold = preset("recipe", out=str(tmp_path), split_by="specimen", folds=4, fold=3)
    test = {"accuracy": 0.9}
    text = training_dialog.training_outcome_text(result(plain, test_metrics=test, report={}))
    assert text.startswith("Training finished: test accuracy 90.0 %. ")
    both = result(plain, test_metrics=test, report={"unseen_specimens": {"accuracy": 0.625}})
    assert "90.0 % on specimens seen in training, 62.5 % on specimens it never saw" in (
        training_dialog.training_outcome_text(both)
    )
    held_out = result(fold, test_metrics=test, report={})
    assert "90.0 % on specimens it never saw" in training_dialog.training_outcome_text(held_out)
    stopped = training_dialog.training_outcome_text(result(fold, cancelled=True))
    assert stopped == "Training stopped in fold 3 of 4; it can be resumed."
