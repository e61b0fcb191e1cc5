"""The headless subcommands of the mapping layer: ``info``, ``map`` and ``benchmark``.

``register(subparsers)`` adds them to the ``histoviewer`` parser (cli.py); each sets
``func`` to a ``run_...(args) -> int`` function. Errors caused by the input are
raised as HistoViewerError for cli.py to print as one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TextIO

from histoviewer.errors import HistoViewerError, SlideError
from histoviewer.mapping.export import DEFAULT_FORMATS, export_all, parse_formats, summary_line
from histoviewer.mapping.grid import make_grid

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``info``, ``map`` and ``benchmark`` to the top-level parser's subcommands."""
    info = subparsers.add_parser(
        "info",
        help="describe a slide: format, levels, sizes, um/px",
        description="Print a slide's format, pyramid levels and sizes, and its scale in "
        "microns per pixel with where that value came from.",
    )
    info.add_argument("slide", help="the slide file")
    info.set_defaults(func=run_info)

    mapper = subparsers.add_parser(
        "map",
        help="map tissue classes across slides and export the maps",
        description="Classify every tissue patch of each slide and write "
        "DIR/<slide name>.<format> for each export format.",
    )
    mapper.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files")
    mapper.add_argument(
        "--model",
        required=True,
        metavar="CKPT",
        help="model file (.safetensors, model folder, recipe .pth.tar, last.pt)",
    )
    mapper.add_argument("--out", required=True, metavar="DIR", help="folder for the exports")
    mapper.add_argument(
        "--stride",
        type=_positive_int,
        default=150,
        metavar="PX",
        help="patch stride in model pixels (default 150: no overlap; smaller values overlap)",
    )
    mapper.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    mapper.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        metavar="N",
        help="patches per batch (default 64)",
    )
    mapper.add_argument(
        "--formats",
        type=_formats,
        default=list(DEFAULT_FORMATS),
        help="comma-separated export formats from geojson, csv, png, npz, summary (default: all)",
    )
    mapper.add_argument(
        "--no-skip-background",
        dest="skip_background",
        action="store_false",
        help="classify empty glass too",
    )
    mapper.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto (default): bf16/fp16 where the device is fast at it",
    )
    mapper.set_defaults(func=run_map)

    bench = subparsers.add_parser(
        "benchmark",
        help="time the mapping engine against a recipe-style baseline",
        description="Write a synthetic slide, then classify the same patches with a "
        "baseline written as the recipe does it (PIL crops, torchvision transforms, a "
        "DataLoader, float32) and with HistoViewer's engine; print both speeds.",
    )
    bench.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    bench.add_argument("--arch", default="resnet50", help="network architecture (default resnet50)")
    bench.add_argument(
        "--input-size",
        type=_positive_int,
        default=224,
        metavar="PX",
        help="network input size (default 224)",
    )
    bench.add_argument("--batch-size", type=_positive_int, default=64, metavar="N")
    bench.add_argument(
        "--patches",
        type=_positive_int,
        default=None,
        metavar="N",
        help="classify only the first N patches (default: the whole slide)",
    )
    bench.add_argument(
        "--slide-size",
        type=_positive_int,
        default=5000,
        metavar="PX",
        help="side of the synthetic square slide (default 5000)",
    )
    bench.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    bench.set_defaults(func=run_benchmark_command)


# --- info --------------------------------------------------------------------------------


def run_info(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print what ``histoviewer info SLIDE`` shows."""
    from histoviewer.model import ModelInfo
    from histoviewer.slide import open_slide

    out = out or sys.stdout
    with open_slide(args.slide) as slide:
        w, h = slide.dimensions
        print(f"file:       {slide.path or args.slide}", file=out)
        print(f"format:     {slide.format_name}", file=out)
        print(
            f"size:       {w} x {h} px "
            f"({w * slide.mpp / 1000:.2f} x {h * slide.mpp / 1000:.2f} mm)",
            file=out,
        )
        print(f"resolution: {slide.mpp:.4g} um/px ({slide.mpp_source})", file=out)
        print(f"levels:     {slide.level_count}", file=out)
        for i, ((lw, lh), ds) in enumerate(
            zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ):
            print(f"  level {i}: {lw} x {lh} px, downsample {ds:.4g}", file=out)
        info = ModelInfo.recipe()
        try:
            grid = make_grid(slide, info, 150)
            print(
                f"patches:    {grid.rows} x {grid.cols} = {grid.count} of "
                f"{info.patch_microns:.2f} um ({grid.patch_size} px, read from level "
                f"{grid.level}) at the default stride",
                file=out,
            )
        except SlideError as exc:
            print(f"patches:    none ({exc})", file=out)
    return 0


# --- map ---------------------------------------------------------------------------------


def run_map(args: argparse.Namespace) -> int:
    """Map each slide, write its exports and print one summary line per slide.

    With several slides, a slide that cannot be read is reported and skipped (exit
    status 1 at the end); a model, device or disk problem stops everything.
    """
    from histoviewer.mapping.engine import map_slide
    from histoviewer.model import load_model
    from histoviewer.slide import open_slide

    slides = [Path(s) for s in args.slides]
    stems: dict[str, Path] = {}
    for path in slides:
        if path.stem in stems and stems[path.stem] != path:
            raise HistoViewerError(
                f"{stems[path.stem]} and {path} would both be exported as '{path.stem}.*' "
                "in the same folder; map them with separate --out folders"
            )
        stems[path.stem] = path
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise HistoViewerError(f"--out {out_dir} exists and is not a folder")
    formats = args.formats if isinstance(args.formats, list) else _formats(args.formats)
    quiet = bool(getattr(args, "quiet", False))

    started = time.perf_counter()
    classifier = load_model(args.model, device=args.device)
    log.info("loaded %r in %.1f s", classifier, time.perf_counter() - started)

    failures = 0
    for path in dict.fromkeys(slides):
        try:
            reporter = _ProgressReporter(path.name, enabled=not quiet)
            with open_slide(path) as slide, reporter:
                tmap = map_slide(
                    slide,
                    classifier,
                    stride=args.stride,
                    batch_size=args.batch_size,
                    skip_background=args.skip_background,
                    precision=getattr(args, "precision", "auto"),
                    progress=reporter,
                )
        except SlideError as exc:
            if len(slides) == 1:
                raise
            failures += 1
            print(f"histoviewer: error: {exc}", file=sys.stderr)
            continue
        export_all(tmap, out_dir, path.stem, formats)
        n = tmap.classified_count
        rate = n / tmap.elapsed if tmap.elapsed > 0 else 0.0
        print(
            f"{path.name}: {n} patches classified, {tmap.background_count} background, "
            f"{tmap.elapsed:.1f} s, {rate:.1f} patches/s; {summary_line(tmap)}"
        )
    return 1 if failures else 0


class _ProgressReporter:
    """A tqdm bar on a terminal, otherwise a plain line on stderr every few seconds."""

    def __init__(self, name: str, *, enabled: bool = True, every: float = 10.0) -> None:
        self.name = name
        self.enabled = enabled
        self.every = every
        self.bar = None
        self.last = 0.0

    def __enter__(self) -> _ProgressReporter:
        return self

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        if sys.stderr.isatty() and self._tqdm(p):
            return
        now = time.monotonic()
        if p.done == p.total or now - self.last >= self.every:
            self.last = now
            eta = f", {p.eta:.0f} s left" if p.eta is not None and p.done < p.total else ""
            print(
                f"{self.name}: {p.done}/{p.total} patches ({p.skipped} background), "
                f"{p.rate:.1f} patches/s{eta}",
                file=sys.stderr,
                flush=True,
            )

    def _tqdm(self, p) -> bool:
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # optional: plain lines instead
                return False
            self.bar = tqdm(
                total=p.total, desc=self.name, unit="patch", file=sys.stderr, leave=False
            )
        self.bar.update(p.done - self.bar.n)
        return True

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


# --- benchmark ---------------------------------------------------------------------------


def run_benchmark_command(args: argparse.Namespace) -> int:
    """Run the benchmark and print its report."""
    from histoviewer.mapping.benchmark import run_benchmark

    result = run_benchmark(
        device=args.device,
        arch=args.arch,
        input_size=args.input_size,
        batch_size=args.batch_size,
        patches=args.patches,
        slide_size=args.slide_size,
        precision=getattr(args, "precision", "auto"),
        say=None if getattr(args, "quiet", False) else _say,
    )
    print(result.report())
    return 0


def _say(line: str) -> None:
    print(f"benchmark: {line}", file=sys.stderr, flush=True)


# --- argument types ----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _formats(text: str) -> list[str]:
    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
