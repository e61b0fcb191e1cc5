"""The model card: Markdown made from a run's report.json dict (no training here)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from histoviewer.model.describe import TILE_SPLIT_MEANING, UNSEEN_MEANING
from histoviewer.training.card import MODEL_CARD_FILE, model_card, write_model_card

NAMES = ["tumor", "stroma", "adipose", "empty"]
SPECIMENS = [f"CRC-Prim-HE-{i:02d}" for i in range(1, 7)]


def _entry(name: str, p: float | None, r: float | None, f1: float | None, n: int) -> dict:
    return {"name": name, "precision": p, "recall": r, "f1": f1, "support": n}


def _config(**changes: Any) -> dict[str, Any]:
    config = {
        "preset": "best",
        "data": "/data/kather tiles",
        "mpp": 0.495,
        "patch_size": None,
        "split_seed": 1234,
        "split_by": "tile",
        "folds": 3,
        "fold": 0,
        "arch": "resnet50",
        "image_size": 224,
        "batch_size": 64,
        "epochs": 12,
    }
    config.update(changes)
    return config


def _crossval_report() -> dict[str, Any]:
    """A final model with a 3-fold cross-validation by specimen beside it; "empty" has
    no test tile (not scored) and one fold could not test it."""
    per_class = [
        _entry("tumor", 0.9567, 0.9123, 0.93394, 1200),
        _entry("stroma", 0.8011, 0.8555, 0.82741, 950),
        _entry("adipose", 0.9901, 0.9888, 0.98945, 700),
        _entry("empty", None, None, None, 0),
    ]
    unseen_per_class = [
        _entry("tumor", 0.9, 0.8, 0.84706, 3000),
        _entry("stroma", 0.7, 0.6, 0.64615, 2500),
        _entry("adipose", 0.95, 0.97, 0.95989, 1800),
        _entry("empty", None, None, None, 0),
    ]
    folds = [
        {
            "fold": 1,
            "test_specimens": SPECIMENS[1:3],
            "test_tiles": 2456,
            "untested": [],
            "untrained": [],
            "accuracy": 0.80337,
            "macro_f1": 0.79,
        },
        {
            "fold": 2,
            "test_specimens": [SPECIMENS[3], SPECIMENS[5]],
            "test_tiles": 1082,
            "untested": ["empty"],
            "untrained": [],
            "accuracy": 0.88217,
            "macro_f1": 0.8,
        },
        {
            "fold": 3,
            "test_specimens": [SPECIMENS[0], SPECIMENS[4]],
            "test_tiles": 3762,
            "untested": [],
            "untrained": ["adipose"],
            "accuracy": 0.74466,
            "macro_f1": 0.7,
        },
    ]
    accuracies = [f["accuracy"] for f in folds]
    mean = sum(accuracies) / 3
    return {
        "config": _config(),
        "data": {
            "source": "/data/kather tiles",
            "class_names": NAMES,
            "images": 7300,
            "split_method": "sklearn",
        },
        "scale": {"patch_size": 150, "mpp": 0.495, "patch_microns": 74.25, "mpp_assumed": False},
        "notes": ["First note about the scale.", "Second note about the specimens."],
        "split_counts": {"train": 4100, "val": 350, "test": 2850},
        "best_epoch": 9,
        "best_val_loss": 0.31234,
        "test": {
            "n": 2850,
            "accuracy": 0.94137,
            "macro_f1": 0.91693,
            "class_names": NAMES,
            "per_class": per_class,
            "untested": ["empty"],
            "confusion_matrix": [
                [1095, 60, 45, 0],
                [70, 813, 67, 0],
                [3, 5, 692, 0],
                [0, 0, 0, 0],
            ],
        },
        "test_accuracy": 0.94137,
        "test_split": "tile",
        "specimens": {
            "train": SPECIMENS,
            "test": SPECIMENS,
            "test_tiles": 2850,
            "test_tiles_from_seen_specimens": 2850,
        },
        "unseen_specimens": {
            "status": "finished",
            "n": 7300,
            "accuracy": 0.82374,
            "macro_f1": 0.81777,
            "class_names": NAMES,
            "per_class": unseen_per_class,
            "folds": 3,
            "specimens": SPECIMENS,
            "fold_accuracy_mean": mean,
            "fold_accuracy_sd": math.sqrt(sum((a - mean) ** 2 for a in accuracies) / 2),
            "per_fold": folds,
        },
        "timings": {"train_images_per_s": 412.66, "elapsed_seconds": 3725.4},
        "device": "cuda (NVIDIA H200)",
        "files": {"best": "best.safetensors", "confusion": "confusion_matrix.png"},
    }


def _fold_report() -> dict[str, Any]:
    """One held-out fold: tested on two specimens that are not in training."""
    report = _crossval_report()
    held = [SPECIMENS[1], SPECIMENS[4]]
    report["config"] = _config(split_by="specimen", fold=2, mpp=None)
    report["test_split"] = "specimen"
    report["unseen_specimens"] = None
    report["specimens"] = {"test": held, "test_tiles": 2850, "test_tiles_from_seen_specimens": 0}
    return report


def _canonical_report() -> dict[str, Any]:
    """The canonical random split, no cross-validation: most test tiles share specimens."""
    report = _crossval_report()
    del report["unseen_specimens"]
    report["specimens"]["test_tiles"] = 2850
    report["specimens"]["test_tiles_from_seen_specimens"] = 2731
    return report


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"


def _cells(card: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in card.splitlines():
        if line.startswith(f"| {first} |"):
            return [c.strip() for c in line.strip("|").split(" | ")]
    raise AssertionError(f"no row {first!r} in:\n{card}")


def _section(card: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    start = card.index(f"\n## {title}\n") + 1
    end = card.find("\n## ", start)
    return card[start : end if end >= 0 else len(card)]


def _command(card: str) -> str:
    """The command line in the Training section's code block."""
    section = _section(card, "Training")
    return section.split("```\n")[1].strip()


def _assert_clean(card: str) -> None:
    for word in ("None", "nan", "NaN", "null"):
        assert word not in card


# --------------------------------------------------------------------------- tests


def test_crossval_card_puts_both_figures_side_by_side():
    report = _crossval_report()
    card = model_card(report)
    test, unseen = report["test"], report["unseen_specimens"]

    assert card.startswith("# Model card: ResNet-50 tissue classifier\n")
    header = card.splitlines()[2]
    for part in ("4 classes", "224 × 224 px", "150 px", "0.495 µm/px", "cuda (NVIDIA H200)"):
        assert part in header
    accuracy = _section(card, "Accuracy")
    assert "| Figure | Accuracy | Macro F1 | Tiles | What it means |" in accuracy
    assert _cells(accuracy, "Test split (tiles of specimens seen in training)") == [
        "Test split (tiles of specimens seen in training)",
        _pct(test["accuracy"]),
        f"{test['macro_f1']:.3f}",
        f"{test['n']:,}",
        TILE_SPLIT_MEANING,
    ]
    label = "Unseen specimens (3-fold cross-validation by specimen)"
    assert _cells(accuracy, label) == [
        label,
        _pct(unseen["accuracy"]),
        f"{unseen['macro_f1']:.3f}",
        f"{unseen['n']:,}",
        UNSEEN_MEANING,
    ]
    mean, sd = unseen["fold_accuracy_mean"] * 100, unseen["fold_accuracy_sd"] * 100
    assert f"{mean:.1f} ± {sd:.1f} %" in accuracy
    _assert_clean(card)


def test_sections_come_in_order():
    card = model_card(_crossval_report())
    titles = [line for line in card.splitlines() if line.startswith("## ")]
    assert titles == [
        "## Accuracy",
        "## Per class",
        "## Cross-validation by specimen",
        "## Confusion matrix",
        "## Training",
        "## Intended use",
    ]


def test_a_class_without_test_tiles_is_not_scored():
    report = _crossval_report()
    card = model_card(report)
    per_class = _section(card, "Per class")
    assert "F1 on unseen specimens" in per_class.splitlines()[2]
    empty = _cells(per_class, "empty")
    assert empty[1:4] == ["–", "–", "–"]
    assert "(no tiles: not scored)" in empty[4]
    assert empty[5] == "–"
    assert "0.000" not in " ".join(empty)
    tumor = _cells(per_class, "tumor")
    scored = report["test"]["per_class"][0]
    assert tumor[1:4] == [f"{scored[k]:.3f}" for k in ("precision", "recall", "f1")]
    assert tumor[4] == f"{scored['support']:,}"
    assert tumor[5] == f"{report['unseen_specimens']['per_class'][0]['f1']:.3f}"


def test_fold_lines_list_each_folds_specimens():
    report = _crossval_report()
    section = _section(model_card(report), "Cross-validation by specimen")
    lines = [line for line in section.splitlines() if line.startswith("- Fold")]
    assert len(lines) == 3
    for line, fold in zip(lines, report["unseen_specimens"]["per_fold"], strict=True):
        assert line.startswith(f"- Fold {fold['fold']}: {', '.join(fold['test_specimens'])} — ")
        assert f"{_pct(fold['accuracy'])} on {fold['test_tiles']:,} tiles" in line
    assert lines[1].endswith("; cannot test: empty")
    assert lines[2].endswith("; never trained on: adipose")


def test_held_out_fold_headline_names_its_specimens():
    report = _fold_report()
    card = model_card(report)
    accuracy = _section(card, "Accuracy")
    label = f"Test (specimens never seen in training: {SPECIMENS[1]}, {SPECIMENS[4]})"
    assert _cells(accuracy, label)[1:] == [
        _pct(report["test"]["accuracy"]),
        f"{report['test']['macro_f1']:.3f}",
        f"{report['test']['n']:,}",
        UNSEEN_MEANING,
    ]
    assert TILE_SPLIT_MEANING not in card
    assert "no unseen-specimen figure" not in card
    assert "## Cross-validation by specimen" not in card
    command = _command(card)
    assert command.endswith("--split-by specimen --folds 3 --fold 2")
    assert "--mpp" not in command  # the scale was not given: the command invents none
    _assert_clean(card)


def test_tile_split_without_unseen_figure_says_none_was_measured():
    report = _canonical_report()
    card = model_card(report)
    accuracy = _section(card, "Accuracy")
    row = _cells(accuracy, "Test split (tiles of specimens seen in training)")
    assert row[1] == _pct(report["test"]["accuracy"])
    assert row[4] == TILE_SPLIT_MEANING
    specimens = report["specimens"]
    assert (
        f"{specimens['test_tiles_from_seen_specimens']:,} of {specimens['test_tiles']:,} test "
        "tiles come from specimens also in training; no unseen-specimen figure was measured "
        "(histoviewer train DATA --out DIR --split-by specimen measures one)."
    ) in accuracy
    assert "Unseen specimens" not in card
    assert "F1 on unseen specimens" not in card
    assert "## Cross-validation by specimen" not in card
    assert "--split-by" not in _command(card)


def test_report_older_than_specimens_still_warns_of_the_tile_split():
    report = _canonical_report()
    del report["specimens"]
    del report["test_split"]
    accuracy = _section(model_card(report), "Accuracy")
    assert "Test split (random over tiles)" in accuracy
    assert "no unseen-specimen figure was measured" in accuracy


def test_confusion_matrix_rows_are_true_classes():
    report = _crossval_report()
    section = _section(model_card(report), "Confusion matrix")
    header = section.splitlines()[4]
    assert header.endswith("| " + " | ".join(NAMES) + " |")
    for i, (name, counts) in enumerate(zip(NAMES, report["test"]["confusion_matrix"], strict=True)):
        expected = [f"{c:,}" for c in counts]
        expected[i] = f"**{expected[i]}**"
        assert _cells(section, name)[1:] == expected
    assert "![Confusion matrix](confusion_matrix.png)" in section


def test_training_section_reproduces_the_run():
    report = _crossval_report()
    section = _section(model_card(report), "Training")
    config = report["config"]
    assert "/data/kather tiles" in section
    assert "7,300" in section and "4,100 training" in section and "2,850 test" in section
    assert f"sklearn, seed {config['split_seed']}" in section
    assert f"Best epoch: {report['best_epoch']} of {config['epochs']}" in section
    assert f"{report['timings']['train_images_per_s']:.1f} images/s" in section
    assert "1 h 2 min" in section  # 3725 s
    assert _command(model_card(report)) == (
        "histoviewer train '/data/kather tiles' --out DIR --preset best --arch resnet50 "
        "--epochs 12 --image-size 224 --mpp 0.495 --split-by specimen --folds 3"
    )


def test_intended_use_and_notes():
    report = _crossval_report()
    section = _section(model_card(report), "Intended use")
    for words in ("H&E", "colorectal", "0.5 µm/px", "Kather 2016", "IHC", "frozen", "diagnosis"):
        assert words in section
    assert "### Notes" in section
    for note in report["notes"]:
        assert f"- {note}" in section
    report["notes"] = []
    assert "### Notes" not in model_card(report)


def test_missing_figures_read_not_recorded():
    report = _crossval_report()
    report["test"]["accuracy"] = None
    report["test"]["macro_f1"] = float("nan")
    report["unseen_specimens"]["fold_accuracy_sd"] = None
    del report["timings"]
    del report["best_epoch"]
    del report["device"]
    card = model_card(report)
    row = _cells(card, "Test split (tiles of specimens seen in training)")
    assert row[1:3] == ["not recorded", "not recorded"]
    assert "Best epoch: not recorded" in card
    assert "Training speed: not recorded" in card
    assert "trained on" not in card.splitlines()[2]
    _assert_clean(card)


def test_a_bare_report_still_makes_a_card():
    card = model_card({})
    assert card.startswith("# Model card:")
    assert "## Intended use" in card
    _assert_clean(card)


def test_write_model_card_writes_the_file(tmp_path: Path):
    report = _crossval_report()
    report["files"]["best"] = "fold-model.safetensors"
    path = write_model_card(tmp_path, report)
    assert path == tmp_path / MODEL_CARD_FILE == tmp_path / "MODEL_CARD.md"
    text = path.read_text(encoding="utf-8")
    assert text == model_card(report, model_file="fold-model.safetensors")
    assert "`fold-model.safetensors`" in text
    assert [p.name for p in tmp_path.iterdir()] == ["MODEL_CARD.md"]  # no temporary left
    copy_of = copy.deepcopy(report)
    write_model_card(tmp_path, report)  # written again over the first: same text
    assert path.read_text(encoding="utf-8") == text
    assert report == copy_of  # the report is not changed


def test_a_card_from_report_json_round_trips(tmp_path: Path):
    report = _crossval_report()
    report["test"]["macro_f1"] = float("nan")  # report.json holds null for it
    text = json.dumps(report, allow_nan=True).replace("NaN", "null")
    card = model_card(json.loads(text))
    _assert_clean(card)


def test_module_is_light():
    code = (
        "import sys, histoviewer.training.card; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'PySide6', 'numpy', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
