"""The model card: one Markdown page that says what a trained model is worth and for what.

A pathologist or an ML engineer reads it before trusting a model: what it classifies and
at which scale, how accurate it is on tiles of specimens it saw in training and on
specimens it never saw (and which of the two to expect on a new patient), how each class
and each cross-validation fold fared, how it was trained and how to train it again, and
what it must not be used for.

Everything comes from the run's ``report.json`` dict, so a card can be written for any
finished run, also an old one: a section whose data the report lacks is left out, and a
key figure that is missing reads "not recorded" (never "None" or "nan").

- :func:`model_card` - the card's Markdown text.
- :func:`write_model_card` - ``MODEL_CARD.md`` in the run folder, written atomically.

No Qt and no torch here: a card is text made from a dict.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from histoviewer.fileio import atomic_write_text
from histoviewer.model.describe import (
    TILE_SPLIT_MEANING,
    UNSEEN_MEANING,
    arch_label,
    finite_number,
)
from histoviewer.tasks import elapsed_duration

#: The card's file name in a run folder.
MODEL_CARD_FILE = "MODEL_CARD.md"

#: What a figure or a score the report lacks reads as.
NOT_RECORDED = "not recorded"

#: A score that was not computed (a class with no test tile).
NO_SCORE = "–"

_INTENDED_USE = (
    "- Made for: H&E-stained colorectal tissue scanned at about 20x (0.5 µm/px), sorted "
    "into the eight Kather 2016 tissue classes (tumour epithelium, simple stroma, complex "
    "stroma, lymphocytes, debris and mucus, normal mucosa, adipose tissue, background).",
    "- Not for: other organs, immunohistochemistry (IHC), fluorescence or frozen sections; "
    "on such images its classes mean nothing, however confident it looks.",
    "- Research use only: not for diagnosis, and not a substitute for a pathologist's "
    "reading of the slide.",
)


def model_card(report: dict[str, Any], *, model_file: str = "best.safetensors") -> str:
    """The Markdown model card of a finished training run, made from its ``report.json``
    dict alone; ``model_file`` is the weights file the card describes."""
    sections = [
        _title(report, model_file),
        _accuracy(report),
        _fine_tune(report),
        _per_class(report),
        _folds(report),
        _confusion(report),
        _training(report),
        _intended_use(report),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def write_model_card(folder: Path, report: dict[str, Any]) -> Path:
    """Write the card of ``report`` to ``folder/MODEL_CARD.md`` atomically; the path."""
    path = Path(folder) / MODEL_CARD_FILE
    best = _dict(report, "files").get("best")
    if isinstance(best, str) and best:
        atomic_write_text(path, model_card(report, model_file=best))
    else:
        atomic_write_text(path, model_card(report))
    return path


# --------------------------------------------------------------------------- formatting


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _percent(value: Any) -> str:
    """``0.8749`` -> ``"87.5 %"`` (one decimal, a space before %); "not recorded"."""
    number = finite_number(value)
    return f"{number * 100:.1f} %" if number is not None else NOT_RECORDED


def _score(value: Any, missing: str = NO_SCORE) -> str:
    """An F1, precision or recall with three decimals; ``missing`` when not computed."""
    number = finite_number(value)
    return f"{number:.3f}" if number is not None else missing


def _tiles(value: Any) -> str:
    count = _count(value)
    return f"{count:,}" if count is not None else NOT_RECORDED


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (no pipe or line break splits it)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """A Markdown table; the columns in ``numeric`` are right-aligned."""
    rule = ["---:" if i in numeric else "---" for i in range(len(header))]
    return ["| " + " | ".join(_cell(c) for c in cells) + " |" for cells in (header, rule, *rows)]


def _dict(report: dict[str, Any], key: str) -> dict[str, Any]:
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _unseen(report: dict[str, Any]) -> dict[str, Any] | None:
    """The cross-validation by specimen of the report, when one finished."""
    unseen = report.get("unseen_specimens")
    if not isinstance(unseen, dict) or unseen.get("status", "finished") != "finished":
        return None
    return unseen


def _class_names(report: dict[str, Any]) -> list[str]:
    return _names(_dict(report, "test").get("class_names")) or _names(
        _dict(report, "data").get("class_names")
    )


# --------------------------------------------------------------------------- the title


def _title(report: dict[str, Any], model_file: str) -> str:
    config = _dict(report, "config")
    arch = config.get("arch")
    label = arch_label(arch) if isinstance(arch, str) and arch else "Unknown network"
    names = _class_names(report)
    facts = [f"{len(names)} classes ({', '.join(names)})" if names else "classes not recorded"]
    size = _count(config.get("image_size"))
    facts.append(f"input {size} × {size} px" if size else f"input size {NOT_RECORDED}")
    facts.append(_scale(_dict(report, "scale")))
    device = report.get("device")
    facts.append(f"trained on {device}" if isinstance(device, str) and device else "")
    facts.append(f"model file `{model_file}`")
    line = " · ".join(f for f in facts if f)
    return f"# Model card: {label} tissue classifier\n\n{line}"


def _scale(scale: dict[str, Any]) -> str:
    patch = _count(scale.get("patch_size"))
    mpp = finite_number(scale.get("mpp"))
    if patch is None or mpp is None:
        return f"patch size and scale {NOT_RECORDED}"
    text = f"patches of {patch} px at {mpp:g} µm/px"
    microns = finite_number(scale.get("patch_microns"))
    if microns is not None:
        text += f" ({microns:.1f} µm)"
    if scale.get("mpp_assumed") is True:
        text += ", scale assumed"
    return text


# --------------------------------------------------------------------------- accuracy


_HEADLINE = ["Figure", "Accuracy", "Macro F1", "Tiles", "What it means"]


def _figure_row(label: str, figures: dict[str, Any], meaning: str) -> list[str]:
    return [
        label,
        _percent(figures.get("accuracy")),
        _score(figures.get("macro_f1"), NOT_RECORDED),
        _tiles(figures.get("n")),
        meaning,
    ]


def _accuracy(report: dict[str, Any]) -> str:
    test = _dict(report, "test")
    if "accuracy" not in test and "test_accuracy" in report:
        test = {
            "accuracy": report.get("test_accuracy"),
            "macro_f1": report.get("test_macro_f1"),
        }
    specimens = _dict(report, "specimens")
    unseen = _unseen(report)
    lines = ["## Accuracy", ""]
    if unseen is not None:
        folds = _count(unseen.get("folds"))
        k = f"{folds}-fold" if folds else "k-fold"
        rows = [
            _figure_row(
                "Test split (tiles of specimens seen in training)", test, TILE_SPLIT_MEANING
            ),
            _figure_row(
                f"Unseen specimens ({k} cross-validation by specimen)", unseen, UNSEEN_MEANING
            ),
        ]
        lines += _table(_HEADLINE, rows, {1, 2, 3})
        lines += ["", _fold_spread(unseen), ""]
        lines.append(
            "For a new patient's slide, expect the unseen-specimen figure: the test split "
            "shares specimens with training and flatters the model."
        )
    elif report.get("test_split") == "specimen":
        held = ", ".join(_names(specimens.get("test"))) or NOT_RECORDED
        label = f"Test (specimens never seen in training: {held})"
        lines += _table(_HEADLINE, [_figure_row(label, test, UNSEEN_MEANING)], {1, 2, 3})
    else:
        label = (
            "Test split (tiles of specimens seen in training)"
            if (_count(specimens.get("test_tiles_from_seen_specimens")) or 0) > 0
            else "Test split (random over tiles)"
        )
        lines += _table(_HEADLINE, [_figure_row(label, test, TILE_SPLIT_MEANING)], {1, 2, 3})
        seen_note = _seen_specimens_note(report, specimens)
        if seen_note:
            lines += ["", seen_note]
    return "\n".join(lines)


def _fold_spread(unseen: dict[str, Any]) -> str:
    mean = finite_number(unseen.get("fold_accuracy_mean"))
    sd = finite_number(unseen.get("fold_accuracy_sd"))
    if mean is None:
        return f"Accuracy per fold: {NOT_RECORDED}."
    spread = f" ± {sd * 100:.1f}" if sd is not None else ""
    folds = len(unseen["per_fold"]) if isinstance(unseen.get("per_fold"), list) else 0
    over = f" over {folds} folds" if folds else ""
    kind = "mean ± sd" if sd is not None else "mean"
    return f"Accuracy per fold: {mean * 100:.1f}{spread} % ({kind}{over})."


_MEASURE_UNSEEN = "histoviewer train DATA --out DIR --split-by specimen"


def _seen_specimens_note(report: dict[str, Any], specimens: dict[str, Any]) -> str:
    """Why a tile split's figure flatters the model, when the report tells or implies it."""
    seen = _count(specimens.get("test_tiles_from_seen_specimens"))
    if seen is not None and seen > 0:
        total = _tiles(specimens.get("test_tiles"))
        return (
            f"{seen:,} of {total} test tiles come from specimens also in training; no "
            f"unseen-specimen figure was measured ({_MEASURE_UNSEEN} measures one)."
        )
    if not specimens and report.get("test_split") != "specimen":
        return (
            "The test tiles are a random share of all tiles, so they most likely come from "
            "specimens also in training; no unseen-specimen figure was measured "
            f"({_MEASURE_UNSEEN} measures one)."
        )
    return ""


# --------------------------------------------------------------------------- per class


def _per_class(report: dict[str, Any]) -> str:
    entries = _dict(report, "test").get("per_class")
    if not isinstance(entries, list) or not entries:
        return ""
    unseen = _unseen(report)
    unseen_f1 = _unseen_f1(unseen) if unseen is not None else None
    header = ["Class", "Precision", "Recall", "F1", "Test tiles"]
    if unseen_f1 is not None:
        header.append("F1 on unseen specimens")
    rows = []
    for i, entry in enumerate(e for e in entries if isinstance(e, dict)):
        name = str(entry.get("name", f"class {i + 1}"))
        scored = finite_number(entry.get("f1")) is not None
        support = _tiles(entry.get("support"))
        row = [
            name,
            _score(entry.get("precision")),
            _score(entry.get("recall")),
            _score(entry.get("f1")),
            support if scored else f"{support} (no tiles: not scored)",
        ]
        if unseen_f1 is not None:
            row.append(_score(unseen_f1.get(name, unseen_f1.get(i))))
        rows.append(row)
    return "\n".join(["## Per class", "", *_table(header, rows, set(range(1, len(header))))])


def _unseen_f1(unseen: dict[str, Any]) -> dict[Any, Any] | None:
    """F1 on unseen specimens by class name and by position; None when not recorded."""
    entries = unseen.get("per_class")
    if not isinstance(entries, list) or not entries:
        return None
    f1: dict[Any, Any] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            f1[i] = entry.get("f1")
            if "name" in entry:
                f1[str(entry["name"])] = entry.get("f1")
    return f1


# --------------------------------------------------------------------------- folds


def _folds(report: dict[str, Any]) -> str:
    unseen = _unseen(report)
    folds = unseen.get("per_fold") if unseen is not None else None
    if not isinstance(folds, list) or not folds:
        return ""
    lines = ["## Cross-validation by specimen", ""]
    lines.append(
        "Each fold's model was trained without the fold's specimens and tested on all their tiles:"
    )
    lines.append("")
    lines += [_fold_line(i, fold) for i, fold in enumerate(folds, 1) if isinstance(fold, dict)]
    return "\n".join(lines)


def _fold_line(position: int, fold: dict[str, Any]) -> str:
    number = _count(fold.get("fold")) or position
    held = ", ".join(_names(fold.get("test_specimens"))) or f"specimens {NOT_RECORDED}"
    line = f"- Fold {number}: {held} — {_percent(fold.get('accuracy'))}"
    line += f" on {_tiles(fold.get('test_tiles'))} tiles"
    untested = _names(fold.get("untested"))
    if untested:
        line += f"; cannot test: {', '.join(untested)}"
    untrained = _names(fold.get("untrained"))
    if untrained:
        line += f"; never trained on: {', '.join(untrained)}"
    thin = _names(fold.get("one_training_specimen"))
    if thin:
        line += f"; learnt from one specimen only: {', '.join(thin)}"
    return line


# --------------------------------------------------------------------------- confusion


def _confusion(report: dict[str, Any]) -> str:
    test = _dict(report, "test")
    matrix = test.get("confusion_matrix")
    names = _class_names(report)
    if not isinstance(matrix, list) or not matrix or len(matrix) != len(names):
        return ""
    header = ["True ↓ · predicted →", *names]
    rows = []
    for i, (name, counts) in enumerate(zip(names, matrix, strict=True)):
        if not isinstance(counts, list) or len(counts) != len(names):
            return ""
        cells = [_matrix_cell(c) for c in counts]
        cells[i] = f"**{cells[i]}**"
        rows.append([name, *cells])
    lines = ["## Confusion matrix", ""]
    lines.append(
        "Test tiles: rows are the true class, columns the predicted one; the diagonal "
        "(bold) is right."
    )
    lines += ["", *_table(header, rows, set(range(1, len(header))))]
    figure = _dict(report, "files").get("confusion")
    if isinstance(figure, str) and figure:
        lines += ["", f"![Confusion matrix]({figure})"]
    return "\n".join(lines)


def _matrix_cell(value: Any) -> str:
    count = _count(value)
    if count is not None:
        return f"{count:,}"
    number = finite_number(value)
    return f"{number:g}" if number is not None else NO_SCORE


# --------------------------------------------------------------------------- training


def _training(report: dict[str, Any]) -> str:
    config = _dict(report, "config")
    data = _dict(report, "data")
    timings = _dict(report, "timings")
    source = data.get("source") or config.get("data")
    lines = ["## Training", ""]
    lines.append(f"- Data: `{source}`" if source else f"- Data: {NOT_RECORDED}")
    lines.append(f"- Images: {_images(report, data)}")
    lines.append(f"- Split: {_split(data, config)}")
    lines.append(f"- Best epoch: {_best_epoch(report, config)}")
    speed = finite_number(timings.get("train_images_per_s"))
    lines.append(
        f"- Training speed: {speed:.1f} images/s"
        if speed is not None
        else f"- Training speed: {NOT_RECORDED}"
    )
    elapsed = _time(timings)
    if _unseen(report) is not None and elapsed != NOT_RECORDED:
        elapsed += " (this model alone, without the cross-validation's folds)"
    lines.append(f"- Elapsed time: {elapsed}")
    command = _command(report, config, source)
    if command:
        lines += ["", "Train it again (other settings as in report.json's `config`):", ""]
        lines += ["```", command, "```"]
    return "\n".join(lines)


def _images(report: dict[str, Any], data: dict[str, Any]) -> str:
    total = _count(data.get("images"))
    counts = report.get("split_counts") or data.get("split_counts")
    parts = []
    if isinstance(counts, dict):
        words = {"train": "training", "val": "validation", "test": "test"}
        known = [(k, w) for k, w in words.items() if _count(counts.get(k)) is not None]
        parts = [f"{counts[k]:,} {w}" for k, w in known]
    text = f"{total:,}" if total is not None else NOT_RECORDED
    return text + (f" ({', '.join(parts)})" if parts else "")


def _split(data: dict[str, Any], config: dict[str, Any]) -> str:
    method = data.get("split_method")
    seed = _count(config.get("split_seed"))
    parts = [str(method)] if isinstance(method, str) and method else []
    parts += [f"seed {seed}"] if seed is not None else []
    return ", ".join(parts) or NOT_RECORDED


def _best_epoch(report: dict[str, Any], config: dict[str, Any]) -> str:
    best = _count(report.get("best_epoch"))
    if best is None:
        return NOT_RECORDED
    epochs = _count(config.get("epochs"))
    text = f"{best} of {epochs}" if epochs else str(best)
    loss = finite_number(report.get("best_val_loss"))
    return text + (f" (validation loss {loss:.4f})" if loss is not None else "")


def _time(timings: dict[str, Any]) -> str:
    elapsed = finite_number(timings.get("elapsed_seconds"))
    if elapsed is not None:
        return elapsed_duration(elapsed)
    train = finite_number(timings.get("train_seconds"))
    if train is not None:
        return f"{NOT_RECORDED} ({elapsed_duration(train)} of training)"
    return NOT_RECORDED


def _command(report: dict[str, Any], config: dict[str, Any], source: Any) -> str:
    """The ``histoviewer train`` line that trains this model again."""
    if not source or not config:
        return ""
    parts = ["histoviewer", "train", shlex.quote(str(source)), "--out", "DIR"]
    if config.get("init_from"):
        parts += ["--init-from", shlex.quote(str(config["init_from"]))]
    for flag, key in (
        ("--preset", "preset"),
        ("--arch", "arch"),
        ("--epochs", "epochs"),
        ("--image-size", "image_size"),
    ):
        value = config.get(key)
        if value is not None and value != "":
            parts += [flag, shlex.quote(str(value))]
    mpp = finite_number(config.get("mpp"))
    if mpp is not None:
        parts += ["--mpp", f"{mpp:g}"]
    patch = _count(config.get("patch_size"))
    if patch is not None:
        parts += ["--patch-size", str(patch)]
    unseen = _unseen(report)
    if unseen is not None:
        folds = _count(unseen.get("folds")) or _count(config.get("folds"))
        parts += ["--split-by", "specimen"] + (["--folds", str(folds)] if folds else [])
    elif config.get("split_by") == "specimen":
        parts += ["--split-by", "specimen"]
        folds, fold = _count(config.get("folds")), _count(config.get("fold"))
        parts += ["--folds", str(folds)] if folds else []
        parts += ["--fold", str(fold)] if fold else []
    return " ".join(parts)


def _fine_tune(report: dict[str, Any]) -> str:
    """Before and after on the held-out labels, for a model fine-tuned from another."""
    fine = _dict(report, "fine_tune")
    if not fine:
        return ""
    start = fine.get("start_model") or {}
    lines = [
        "## Fine-tuning",
        "",
        f"Fine-tuned from {_cell(start.get('name') or fine.get('init_from') or 'a model')} "
        f"(weights fingerprint {_cell(str(start.get('fingerprint') or '')[:12])}) on the "
        "labels in the data above.",
        "",
    ]
    what = {"labels": "Held-out labelled patches", "tiles": "Held-out tiles mixed in"}
    rows = []
    for key, c in (fine.get("compared") or {}).items():
        if isinstance(c, dict):
            rows.append(
                [
                    what.get(key, key),
                    _tiles(c.get("n")),
                    _percent(c.get("before_accuracy")),
                    _percent(c.get("after_accuracy")),
                    _score(c.get("before_macro_f1")),
                    _score(c.get("after_macro_f1")),
                ]
            )
    header = ["Scored on", "Tiles", "Accuracy before", "after", "Macro F1 before", "after"]
    lines += _table(header, rows, {1, 2, 3, 4, 5})
    untrained = _names(fine.get("untrained_classes"))
    if untrained:
        lines += ["", f"Not trained on (no tiles): {', '.join(untrained)}."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- intended use


def _intended_use(report: dict[str, Any]) -> str:
    lines = ["## Intended use", "", *_INTENDED_USE]
    notes = [n for n in _names(report.get("notes")) if n.strip()]
    if notes:
        lines += ["", "### Notes", ""]
        lines += [f"- {note.strip()}" for note in notes]
    return "\n".join(lines)
