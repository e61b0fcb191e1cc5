"""The `train` and `evaluate` subcommands.

    histoviewer train DATA --out DIR [--mpp UM] [--patch-size PX] [--preset recipe|best]
                      [--init-from MODEL]
                      [--epochs N] [--resume | --overwrite]
                      [--split-by tile|specimen [--folds K] [--fold I] [--no-final]] ...
    histoviewer evaluate DATA [--model MODEL] [--split test|val|train|all | --split-by specimen]
                         [--robustness] [--json]
    histoviewer evaluate MODEL DATA ...      (the older form, still accepted)

cli.py turns a HistoViewerError into one line on stderr. A first Ctrl-C during
training stops at the next batch and leaves a resumable checkpoint.

Launched by torchrun (``torchrun --nproc_per_node N -m histoviewer train ...``),
`train` runs one process per GPU with DistributedDataParallel; only rank 0 prints and
writes files. Ctrl-C is then handled by torchrun, which stops every process; the run
resumes with ``--resume`` from the last completed epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histoviewer.errors import HistoViewerError
from histoviewer.slide.mpp import plausible
from histoviewer.tasks import CancelToken, count_bar, format_duration
from histoviewer.training.config import OPTIMIZERS, PRESETS, preset
from histoviewer.training.split import SPLITS

if TYPE_CHECKING:
    from histoviewer.training.crossval import CrossValResult
    from histoviewer.training.trainer import FitResult, TrainEvent

# torch, torch.distributed and scikit-learn load inside the run functions, so that
# building the parser (every `histoviewer` start, `--help`) stays fast.

# Command-line option -> TrainConfig field, for the options that override a preset.
_OVERRIDES = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "image_size": "image_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "device": "device",
    "limit_per_class": "limit_per_class",
    "arch": "arch",
    "workers": "workers",
    "seed": "seed",
    "threads": "num_threads",
    "compile": "compile",
    "sync_batchnorm": "sync_batchnorm",
    "patch_size": "patch_size",
    "split_by": "split_by",
    "group_pattern": "group_pattern",
    "folds": "folds",
    "fold": "fold",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` and `evaluate` to the top-level parser."""
    train = subparsers.add_parser(
        "train",
        help="train a classifier on labelled tiles",
        description="Train a tissue classifier on a folder or zip with one sub-folder per "
        "class. Writes DIR/split.csv, DIR/last.pt (resumable), DIR/best.safetensors (the "
        "model the viewer loads), DIR/report.json, DIR/curves.png and "
        "DIR/confusion_matrix.png.",
    )
    train.add_argument("data", help="folder or .zip of tiles, one sub-folder per class")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder")
    # A string, checked in run_train: a bad value is then one line, not a usage message.
    train.add_argument(
        "--mpp",
        metavar="UM",
        help="microns per pixel of the tiles as scanned (default: 0.495, the Kather 2016 "
        "scale, assumed and noted in the report); the model maps slides at this scale",
    )
    train.add_argument(
        "--patch-size",
        type=int,
        metavar="PX",
        help="resize every tile to PX x PX pixels (non-square ones centre-cropped first); "
        "default: the tiles' own size, which must be one square size for all",
    )
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="settings to start from (default: recipe; finetune with --init-from)",
    )
    train.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune this model: start from its weights, with its architecture, input "
        "size, scale and classes (a dataset may cover only some of them); default preset "
        "finetune, a short schedule",
    )
    train.add_argument(
        "--epochs", type=int, help="epochs (0: only load the data and write the split)"
    )
    _add_specimen_options(train)
    train.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="with --split-by specimen: how many folds the specimens are dealt into (default 5)",
    )
    train.add_argument(
        "--fold",
        type=int,
        metavar="I",
        help="with --split-by specimen: train one model, tested on the specimens of fold I "
        "(1 to K), instead of the whole cross-validation",
    )
    train.add_argument(
        "--no-final",
        action="store_true",
        help="with --split-by specimen: stop after the cross-validation, without training "
        "the final model on the canonical split",
    )
    train.add_argument("--batch-size", type=int, help="images per training batch")
    train.add_argument("--image-size", type=int, metavar="PX", help="network input size")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="adam, adamw or sgd")
    train.add_argument("--arch", help="network (resnet18, resnet34, resnet50, resnet101)")
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    train.add_argument(
        "--limit-per-class",
        type=int,
        metavar="N",
        help="use at most N images per class (quick trials)",
    )
    train.add_argument("--seed", type=int, help="seed for weights, order and augmentation")
    train.add_argument("--workers", type=int, help="image decoding threads (0: auto)")
    train.add_argument("--threads", type=int, help="torch CPU threads (0: default)")
    train.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the network (faster on GPUs after a warm-up)",
    )
    train.add_argument(
        "--sync-batchnorm",
        action="store_true",
        default=None,
        help="under torchrun on GPUs: BatchNorm statistics over the whole batch instead of "
        "each process's share",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in DIR from its last.pt; with more --epochs than it was "
        "started with, extend it (the learning-rate schedule is recomputed for the new length)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the earlier run in DIR: its files are removed once the tiles are loaded "
        "(without this, a folder that holds a run is refused)",
    )
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="score a model on labelled tiles",
        description="Accuracy, macro F1, per-class scores and the confusion matrix of a model "
        "on one split of a dataset (rebuilt with the split settings it was trained with). "
        "Without --model, the model shipped with HistoViewer. The older form "
        "'evaluate MODEL DATA' still works.",
    )
    evaluate.add_argument(
        "data", metavar="DATA", help="folder or .zip of tiles, one sub-folder per class"
    )
    # The older form `evaluate MODEL DATA`: then the first positional is the model.
    evaluate.add_argument("legacy_data", nargs="?", help=argparse.SUPPRESS)
    evaluate.add_argument(
        "--model",
        metavar="MODEL",
        help="model file (.safetensors, last.pt, .pth.tar) or model folder (default: the "
        "model shipped with HistoViewer)",
    )
    evaluate.add_argument(
        "--split",
        choices=[*SPLITS, "all"],
        default=None,
        help="the part of DATA to score, rebuilt as the model was trained (default: test)",
    )
    _add_specimen_options(evaluate)
    evaluate.add_argument(
        "--robustness",
        action="store_true",
        help="also score the tiles rotated and flipped, JPEG-compressed at quality 60, "
        "blurred (sigma 1 px) and with the stains of other labs, against the clean figure",
    )
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--workers", type=int, default=0, help="image decoding threads")
    evaluate.set_defaults(func=run_evaluate)


def _add_specimen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split-by",
        choices=("tile", "specimen"),
        default=None,
        help="tile (default): the canonical random split, whose test tiles come from the "
        "training specimens; specimen: test on specimens never seen in training (read from "
        "the file names, e.g. CRC-Prim-HE-03)",
    )
    parser.add_argument(
        "--group-pattern",
        metavar="REGEX",
        help="regular expression whose first group is the specimen in a file name "
        "(default: Kather 2016 'CRC-Prim-HE-NN' and TCGA 'TCGA-XX-XXXX' names)",
    )


def _parse_mpp(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # The same check as TrainConfig's, with a message that names the option typed.
    if not plausible(value):
        raise HistoViewerError(
            f"--mpp {text} is not a tile scale: give the microns per pixel the tiles were "
            "scanned at, from 0.05 to 40 (about 0.25 at 40x, 0.5 at 20x)"
        )
    return value


def _config_from_args(args: argparse.Namespace):
    overrides: dict[str, Any] = {
        field: getattr(args, opt)
        for opt, field in _OVERRIDES.items()
        if getattr(args, opt, None) is not None
    }
    if getattr(args, "mpp", None) is not None:
        overrides["mpp"] = _parse_mpp(args.mpp)
    if args.resume and getattr(args, "overwrite", False):
        raise HistoViewerError(
            "--resume continues the run in the output folder and --overwrite replaces it: "
            "give one of them, not both"
        )
    if args.resume:
        from histoviewer.training.crossval import resume_any_config

        if args.preset is not None:
            overrides["preset"] = args.preset
        return resume_any_config(args.out, data=args.data, **overrides)
    if overrides.get("fold") and overrides.get("split_by") != "specimen":
        raise HistoViewerError(
            "--fold holds out the specimens of one fold: add --split-by specimen"
        )
    if getattr(args, "init_from", None):
        from histoviewer.training.config import finetune_config

        return finetune_config(
            args.init_from, args.preset or "finetune", data=args.data, out=args.out, **overrides
        )
    return preset(args.preset or "recipe", data=args.data, out=args.out, **overrides)


def run_train(args: argparse.Namespace) -> int:
    from histoviewer import distributed
    from histoviewer.training.crossval import cross_validate, is_crossval
    from histoviewer.training.trainer import fit

    config = _config_from_args(args)
    if getattr(args, "no_final", False) and not is_crossval(config):
        raise HistoViewerError(
            "--no-final skips the final model of a cross-validation: it needs --split-by "
            "specimen (without --fold)"
        )
    cancel = CancelToken()
    with distributed.session(config.device) as ctx:
        if not ctx.is_main:
            # The other processes would repeat rank 0's log lines; keep only their errors.
            logging.getLogger("histoviewer").setLevel(logging.ERROR)
        bar = _ProgressBar(enabled=ctx.is_main and not getattr(args, "quiet", False))
        # Under torchrun, Ctrl-C reaches torchrun, which stops all processes together.
        previous = None if ctx.is_distributed else _install_sigint(cancel)
        try:
            if is_crossval(config):
                crossval = cross_validate(
                    config,
                    bar,
                    cancel,
                    resume=args.resume,
                    overwrite=getattr(args, "overwrite", False),
                    final=not getattr(args, "no_final", False),
                    dist=ctx,
                )
            else:
                result = fit(
                    config,
                    bar,
                    cancel,
                    resume=args.resume,
                    dist=ctx,
                    overwrite=getattr(args, "overwrite", False),
                )
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    if is_crossval(config):
        return _report_crossval(crossval, ctx.is_main)
    if not ctx.is_main:
        return 130 if result.cancelled else 0
    return _report_fit(result)


def _report_crossval(crossval: CrossValResult, is_main: bool) -> int:
    from histoviewer.training.crossval import CROSSVAL_FILE, format_unseen, side_by_side

    if not is_main:
        return 130 if crossval.cancelled else 0
    if crossval.summary is not None:
        print(format_unseen(crossval.summary))
        print(f"cross-validation: {crossval.out / CROSSVAL_FILE}")
    if crossval.cancelled:
        resume = f"histoviewer train {crossval.config.data} --out {crossval.out} --resume"
        print(f"{crossval.message}; continue with: {resume}", file=sys.stderr)
        return 130
    if crossval.final is None:
        return 0
    print("final model (canonical split):")
    code = _report_fit(crossval.final)
    for line in side_by_side(crossval.final.report or {}):
        print(line)
    return code


def _report_fit(result: FitResult) -> int:
    out = result.out
    if result.cancelled:
        print(
            stopped_text(result.epochs_done, result.config.epochs, result.config.data, out),
            file=sys.stderr,
        )
        return 130
    counts = ", ".join(f"{k} {v}" for k, v in result.split_counts.items())
    if result.test_metrics is None:
        print(f"split ({counts}) written to {out / 'split.csv'}")
        _print_scale(result)
        return 0
    metrics = result.test_metrics
    specimens = (result.report or {}).get("specimens") or {}
    which = ""
    if result.config.split_by == "specimen":
        which = f" (unseen specimens {', '.join(specimens.get('test', []))})"
    print(
        f"best epoch {result.best_epoch} (validation loss {result.best_val_loss:.4f}); "
        f"test accuracy{which} {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}"
    )
    print(f"model: {result.best_path}\nreport: {out / 'report.json'}")
    fine_tune = (result.report or {}).get("fine_tune")
    if fine_tune:
        from histoviewer.training.finetune import comparison_lines

        for line in comparison_lines(fine_tune["compared"]):
            print(line)
    for extension in result.extensions:
        print(
            f"extended from {extension['from_epochs']} to {extension['to_epochs']} epochs "
            f"after epoch {extension['after_epoch']} (learning-rate schedule recomputed for "
            f"{extension['to_epochs']} epochs)"
        )
    _print_scale(result)
    return 0


def _print_scale(result: FitResult) -> None:
    """The model's patch scale and the notes about it, the last lines a user reads."""
    scale = result.scale
    if scale:
        assumed = " (assumed)" if scale["mpp_assumed"] else ""
        print(
            f"patches: {scale['patch_size']} px at {scale['mpp']:.4g} µm/px "
            f"({scale['patch_microns']:.4g} µm); tiles at {scale['tile_mpp']:g} µm/px{assumed}"
        )
    for note in result.notes:
        print(f"note: {note}")


def _model_and_data(args: argparse.Namespace) -> tuple[str, str]:
    """The model and the data `evaluate` was given: ``DATA [--model MODEL]``, the older
    ``MODEL DATA``, or DATA alone for the model shipped with HistoViewer."""
    if args.legacy_data is not None:
        if args.model is not None:
            raise HistoViewerError(
                f"two models given ({args.data} and --model {args.model}): use "
                "'evaluate DATA --model MODEL' or the older 'evaluate MODEL DATA'"
            )
        return args.data, args.legacy_data
    if args.model is not None:
        return args.model, args.data
    from histoviewer.model import default_model

    return str(default_model()), args.data


def run_evaluate(args: argparse.Namespace) -> int:
    from histoviewer.training.evaluation import evaluate_model, format_metrics

    model, data = _model_and_data(args)
    by_specimen = args.split_by == "specimen"
    if by_specimen and args.split is not None:
        raise HistoViewerError(
            "--split-by specimen scores every tile of the specimens the model never saw: "
            "leave out --split"
        )
    if args.group_pattern is not None and not by_specimen:
        raise HistoViewerError("--group-pattern reads specimens: add --split-by specimen")
    robustness = getattr(args, "robustness", False)
    # Scoring every condition takes 15 times as long as the clean figure: show how far.
    bar = _CountBar(enabled=robustness and not getattr(args, "quiet", False))
    try:
        metrics = evaluate_model(
            model,
            data,
            split=args.split or "test",
            split_by=args.split_by or "tile",
            group_pattern=args.group_pattern,
            device=args.device,
            batch_size=max(1, args.batch_size),
            workers=args.workers,
            robustness=robustness,
            progress=bar if bar.enabled else None,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        if metrics["specimens"] is not None:
            print(
                f"{model} on the specimens of {metrics['data']} it never saw: "
                f"{', '.join(metrics['specimens'])}"
            )
        else:
            print(f"{model} on the {metrics['split']} split of {metrics['data']}")
        print(format_metrics(metrics))
        if metrics["skipped"]:
            print(f"({len(metrics['skipped'])} unreadable file(s) skipped)")
        if robustness:
            from histoviewer.training.robustness import format_robustness

            print()
            print(format_robustness(metrics["robustness"]))
    return 0


class _CountBar:
    """A tqdm bar on stderr fed ``(done, total)`` images, created at the first report."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = count_bar(total, "scoring", "images", remaining=True)
            if self.bar is None:  # no tqdm (optional)
                self.enabled = False
                return
        self.bar.n = int(done)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _install_sigint(cancel: CancelToken):
    """First Ctrl-C: stop at the next batch (resumable); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if cancel.cancelled:
            raise KeyboardInterrupt
        print("\nstopping after this batch (Ctrl-C again to abort)", file=sys.stderr)
        cancel.cancel()

    return signal.signal(signal.SIGINT, handler)


class _ProgressBar:
    """tqdm bars on stderr fed by TrainEvents: one for loading, one per epoch."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.key: tuple[str, int] | None = None

    def __call__(self, event: TrainEvent) -> None:
        if not self.enabled:
            return
        if event.kind == "note":
            self.close()  # the loading bar is done; the log's warnings follow on their own lines
        elif event.kind in ("load", "batch"):
            key = (event.phase, event.epoch)
            if key != self.key:
                self.close()
                if event.phase == "load":
                    desc, noun = "loading", "tiles"
                else:
                    desc, noun = f"epoch {event.epoch}/{event.epochs} {event.phase}", "batches"
                    if event.part:
                        desc = f"{event.part}: {desc}"
                # Created at the first report, after the first chunk or batch is done.
                self.bar = count_bar(
                    event.batches,
                    desc,
                    noun,
                    initial=event.batch,
                    leave=event.phase != "val",
                    remaining=event.phase == "load",
                )
                self.key = key
            if self.bar is None:  # no tqdm (optional): the epoch lines still print
                return
            self.bar.n = int(event.batch)
            if event.kind == "batch":
                post = {
                    "loss": f"{event.loss:.4f}",
                    "acc": f"{event.acc:.3f}",
                    "img/s": f"{event.images_per_s:.0f}",
                }
                if event.eta_s is not None:
                    post["eta"] = format_duration(event.eta_s)
                self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
        elif event.kind == "epoch":
            self.close()
            last = event.history[-1]
            sys.stderr.write(
                (f"{event.part}: " if event.part else "")
                + f"epoch {last['epoch']}/{event.epochs}: train loss {last['train_loss']:.4f} "
                f"acc {last['train_acc']:.4f} | val loss {last['val_loss']:.4f} "
                f"acc {last['val_acc']:.4f} | {last['images_per_s']:.0f} img/s\n"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.key = None


def stopped_text(epochs_done: int, epochs: int, data: object, out: Path) -> str:
    """What to tell the user whose training run was stopped (Ctrl-C), and how to go on."""
    from histoviewer.training.checkpoint import LAST_FILE

    resume = f"histoviewer train {data} --out {out} --resume"
    if epochs_done:
        return f"stopped after epoch {epochs_done} of {epochs}; continue with: {resume}"
    if (Path(out) / LAST_FILE).is_file():
        return f"stopped before the first epoch ended; start it again with: {resume}"
    return "stopped before anything was saved; run the same command to start again"
