"""The headless subcommands of the mapping layer: ``info``, ``map`` and ``benchmark``.

``register(subparsers)`` adds them to the ``histoviewer`` parser (cli.py); each sets
``func`` to a ``run_...(args) -> int`` function. Errors caused by the input are
raised as HistoViewerError for cli.py to print as one line.

``map`` with one slide file writes that slide's exports. With several slides, a folder
or ``--slides-from`` it maps a batch (mapping/batch.py): sidecars let a rerun skip
slides already mapped with the same model, a failing slide does not stop the others,
and DIR/summary.csv lists every slide. Launched by torchrun
(``torchrun --nproc_per_node N -m histoviewer map ...``) the batch is shared out over
the processes, one GPU each.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TextIO

from histoviewer.errors import HistoViewerError, SlideError
from histoviewer.fileio import ensure_writable_dir
from histoviewer.mapping.export import (
    DEFAULT_FORMATS,
    FORMAT_DESCRIPTIONS,
    parse_formats,
    summary_line,
)
from histoviewer.mapping.grid import make_grid

log = logging.getLogger(__name__)

#: The --backend choices of ``map`` (engine.BACKENDS, without importing torch here).
BACKENDS = ("auto", "torch", "onnxruntime")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``info``, ``map`` and ``benchmark`` to the top-level parser's subcommands."""
    info = subparsers.add_parser(
        "info",
        help="describe a slide: format, levels, sizes, µm/px",
        description="Print a slide's format, pyramid levels and sizes, and its scale in "
        "microns per pixel with where that value came from.",
    )
    info.add_argument("slide", help="the slide file")
    info.add_argument(
        "--mpp",
        type=mpp_argument,
        metavar="UM",
        help="the slide's scale in microns per pixel, overriding what its file says",
    )
    info.set_defaults(func=run_info)

    mapper = subparsers.add_parser(
        "map",
        help="map tissue classes across slides and export the maps",
        description="Classify every tissue patch of each slide and write "
        "DIR/<slide name>.<format> for each export format. A batch (several slides, a "
        "folder or --slides-from) also writes DIR/<slide name>.map.json per slide, skips "
        "slides already mapped with the same model and options, goes on past a failing "
        "slide (exit status 1 at the end) and writes DIR/summary.csv. Under torchrun the "
        "slides are shared out over the processes, one GPU each.",
    )
    mapper.add_argument(
        "slides",
        nargs="*",
        metavar="SLIDE",
        help="slide files, or folders whose slides are all mapped",
    )
    mapper.add_argument(
        "--slides-from",
        metavar="LIST",
        help="a text file naming one slide per line (relative to the file's folder; "
        "# starts a comment)",
    )
    mapper.add_argument(
        "--model",
        metavar="CKPT",
        help="model file (.safetensors, model folder, recipe .pth.tar, last.pt); "
        "default: the model shipped with HistoViewer",
    )
    mapper.add_argument("--out", required=True, metavar="DIR", help="folder for the exports")
    mapper.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        metavar="PX",
        help="patch stride in model pixels (default: the model's patch size, 150 for the "
        "Kather models: no overlap; smaller values overlap, larger ones leave gaps)",
    )
    mapper.add_argument(
        "--device",
        default="auto",
        help="auto (default), cpu, cuda, cuda:N, mps; under torchrun each process uses "
        "the GPU of its LOCAL_RANK",
    )
    mapper.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="N",
        help="most patches per batch (default 64; on the CPU batches hold about a second's "
        "work, at most N)",
    )
    mapper.add_argument(
        "--formats",
        type=_formats,
        default=list(DEFAULT_FORMATS),
        help="comma-separated export formats from "
        + "; ".join(f"{name} ({what})" for name, what in FORMAT_DESCRIPTIONS.items())
        + f" (default: {','.join(DEFAULT_FORMATS)})",
    )
    mapper.add_argument(
        "--report",
        action="store_true",
        help="also write DIR/<slide name>.report.pdf: the slide, its map and legend, tissue "
        "area, tumour-stroma ratio, lymphocyte share, model, scale and settings",
    )
    mapper.add_argument(
        "--regions",
        metavar="GEOJSON",
        help="annotations drawn on the slide (QuPath GeoJSON, .geojson or .geojson.gz, "
        "level-0 pixels): the summary and the report also give each one's tissue area, "
        "tumour-stroma ratio and lymphocyte share (one slide only)",
    )
    mapper.add_argument(
        "--no-skip-background",
        dest="skip_background",
        action="store_false",
        help="classify empty glass too",
    )
    mapper.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: classify each patch in its 8 flips and rotations "
        "(8x slower); the map gets their mean and, as an uncertainty, their spread",
    )
    mapper.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto (default): bf16/fp16 where the device is fast at it",
    )
    mapper.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference backend; auto (default): ONNX Runtime on a CPU without native "
        "bf16, PyTorch everywhere else",
    )
    mapper.add_argument(
        "--mpp",
        type=mpp_argument,
        metavar="UM",
        help="the slides' scale in microns per pixel, overriding what their files say "
        "(for scans whose files record none or a wrong one)",
    )
    mapper.add_argument(
        "--strict",
        action="store_true",
        help="refuse a slide that does not suit the model (not brightfield H&E, much "
        "coarser than the model's tiles, or of unknown scale) instead of warning",
    )
    mapper.set_defaults(func=run_map)

    bench = subparsers.add_parser(
        "benchmark",
        help="time the mapping engine against a recipe-style baseline",
        description="Write a synthetic slide, then classify the same patches with a "
        "baseline written as the recipe does it (PIL crops, torchvision transforms, a "
        "DataLoader, float32) and with HistoViewer's engine, once per inference backend "
        "(PyTorch; ONNX Runtime on the CPU); print each speed, the speed-ups, the "
        "agreement with the baseline and each backend's speed on the network alone.",
    )
    bench.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    bench.add_argument("--arch", default="resnet50", help="network architecture (default resnet50)")
    bench.add_argument(
        "--input-size",
        type=positive_int,
        default=224,
        metavar="PX",
        help="network input size (default 224)",
    )
    bench.add_argument("--batch-size", type=positive_int, default=64, metavar="N")
    bench.add_argument(
        "--patches",
        type=positive_int,
        default=None,
        metavar="N",
        help="classify only the first N patches (default: the whole slide)",
    )
    bench.add_argument(
        "--slide-size",
        type=positive_int,
        default=5000,
        metavar="PX",
        help="side of the synthetic square slide (default 5000)",
    )
    bench.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    bench.add_argument(
        "--backend",
        choices=("all", *BACKENDS),
        default="all",
        help="the engine's inference backends to time: all (default: torch, and "
        "onnxruntime on the CPU in float32), auto (the one map would use), torch, "
        "onnxruntime",
    )
    bench.set_defaults(func=run_benchmark_command)


# --- info --------------------------------------------------------------------------------


def run_info(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print what ``histoviewer info SLIDE`` shows."""
    from histoviewer.mapping.checks import check_slide
    from histoviewer.model import ModelInfo
    from histoviewer.slide import open_slide
    from histoviewer.slide.mpp import GIVEN_CLI

    out = out or sys.stdout
    with open_slide(args.slide) as slide:
        if getattr(args, "mpp", None) is not None:
            slide.set_mpp(args.mpp, GIVEN_CLI)
        w, h = slide.dimensions
        print(f"file:       {slide.path or args.slide}", file=out)
        print(f"format:     {slide.format_name}", file=out)
        print(
            f"size:       {w} x {h} px "
            f"({w * slide.mpp / 1000:.2f} x {h * slide.mpp / 1000:.2f} mm)",
            file=out,
        )
        note = f": {slide.mpp_note}" if slide.mpp_note else ""
        print(f"resolution: {slide.mpp:.4g} µm/px ({slide.mpp_source}{note})", file=out)
        print(f"levels:     {slide.level_count}", file=out)
        for i, ((lw, lh), ds) in enumerate(
            zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ):
            print(f"  level {i}: {lw} x {lh} px, downsample {ds:.4g}", file=out)
        info = ModelInfo.recipe()
        try:
            grid = make_grid(slide, info)
            print(
                f"patches:    {grid.rows} x {grid.cols} = {grid.count} of "
                f"{info.patch_microns:.2f} µm ({grid.patch_size} px, read from level "
                f"{grid.level}) at the default stride",
                file=out,
            )
        except SlideError as exc:
            print(f"patches:    none ({exc})", file=out)
        warnings = check_slide(slide, info)
        for warning in warnings:
            print(f"warning:    {warning.message}", file=out)
        if not warnings:
            print(f"checks:     scale {slide.mpp_source}; looks like brightfield H&E", file=out)
    return 0


# --- map ---------------------------------------------------------------------------------


def run_map(args: argparse.Namespace) -> int:
    """Map the slides, write their exports and print one line per slide.

    One slide file: its exports, and a slide that cannot be read is an error. A batch
    (several slides, a folder, ``--slides-from`` or torchrun): see mapping/batch.py;
    exit status 1 if any slide failed. A model, device or disk problem stops everything.
    """
    from histoviewer import distributed
    from histoviewer.mapping import batch

    inputs = list(args.slides or [])
    slides_from = getattr(args, "slides_from", None)
    if not inputs and slides_from is None:
        raise HistoViewerError("no slides to map: name slide files or folders, or --slides-from")
    slides = batch.expand_slides(inputs, slides_from)
    batch.check_stems(slides)
    formats = args.formats if isinstance(args.formats, list) else _formats(args.formats)
    if getattr(args, "report", False) and "report" not in formats:
        formats = [*formats, "report"]
    batch.check_exports_spare_slides(slides, Path(args.out), formats)
    single = len(inputs) == 1 and slides_from is None and not Path(inputs[0]).is_dir()
    regions = None
    if getattr(args, "regions", None):
        if not single or distributed.launched_by_torchrun():
            raise HistoViewerError(
                "--regions is for one slide mapped by one process: its annotations are "
                "drawn in that slide's pixels"
            )
        from histoviewer.labels.geojson import read_geojson

        regions = read_geojson(args.regions)
    if single and not distributed.launched_by_torchrun():
        # Checked before the mapping, not after it.
        return _map_one_slide(
            args, slides[0], ensure_writable_dir(args.out), formats, regions=regions
        )
    if "csv" in formats and any(p.stem == Path(batch.SUMMARY_FILE).stem for p in slides):
        raise HistoViewerError(
            f"a slide named 'summary' would overwrite the batch's {batch.SUMMARY_FILE}; "
            "rename it or map it with another --out folder"
        )
    out_dir = ensure_writable_dir(args.out)
    # The processes only exchange a few small objects (gloo, on the CPU whatever they
    # compute on), and through the job's store, which also tells them when one fails:
    # no collective waits for the slowest process.
    with distributed.session(args.device, backend="gloo") as ctx:
        return _map_batch(args, slides, out_dir, formats, ctx)


def _load(args: argparse.Namespace, device):
    from histoviewer.mapping.engine import choose_backend
    from histoviewer.model import default_model, load_model

    started = time.perf_counter()
    classifier = load_model(args.model or default_model(), device=device)
    log.info("loaded %r in %.1f s", classifier, time.perf_counter() - started)
    # A backend that cannot run here (onnxruntime on a GPU, in bf16, not installed) is
    # refused before the first slide is read.
    backend = choose_backend(
        getattr(args, "backend", "auto"), classifier.device, getattr(args, "precision", "auto")
    )
    log.info("inference backend: %s", backend)
    return classifier


def _options(args: argparse.Namespace, formats):
    from histoviewer.mapping import batch

    return batch.BatchOptions(
        stride=args.stride,
        batch_size=args.batch_size,
        skip_background=args.skip_background,
        precision=getattr(args, "precision", "auto"),
        formats=tuple(formats),
        mpp=getattr(args, "mpp", None),
        strict=bool(getattr(args, "strict", False)),
        backend=getattr(args, "backend", "auto"),
        tta=bool(getattr(args, "tta", False)),
    )


def _map_one_slide(
    args: argparse.Namespace, path: Path, out_dir: Path, formats, *, regions=None
) -> int:
    from histoviewer.mapping import batch

    classifier = _load(args, args.device)
    reporter = _ProgressReporter(path.name, enabled=not getattr(args, "quiet", False))
    with reporter:
        tmap, _ = batch.map_and_export(
            path, classifier, _options(args, formats), out_dir, reporter, regions=regions
        )
    n = tmap.classified_count
    rate = n / tmap.elapsed if tmap.elapsed > 0 else 0.0
    print(
        f"{path.name}: {n} patches classified, {tmap.background_count} background, "
        f"{tmap.elapsed:.1f} s, {rate:.1f} patches/s; {summary_line(tmap)}"
    )
    return 0


def _map_batch(args: argparse.Namespace, slides, out_dir: Path, formats, ctx) -> int:
    from histoviewer.mapping import batch

    classifier = _load(args, ctx.device)
    quiet = bool(getattr(args, "quiet", False))
    options = _options(args, formats)
    prefix = f"[{ctx.rank}] " if ctx.is_distributed else ""
    reporters: list[_ProgressReporter] = []

    def progress_for(slide: Path) -> _ProgressReporter:
        # Bars from several processes would overwrite each other on one terminal.
        reporter = _ProgressReporter(
            prefix + batch.printable(slide.name), enabled=not quiet, bars=not ctx.is_distributed
        )
        reporters.append(reporter)
        return reporter

    def on_slide(o: batch.SlideOutcome) -> None:
        while reporters:
            reporters.pop().__exit__(None, None, None)
        name = batch.printable(Path(o.slide).name)
        if o.status == batch.MAPPED:
            shown = sorted(o.fractions.items(), key=lambda kv: -kv[1])
            classes = ", ".join(f"{k} {100 * v:.1f} %" for k, v in shown if v > 0)
            print(
                f"{name}: {o.patches} patches classified, {o.background} background, "
                f"{o.seconds:.1f} s, {o.patches_per_s:.1f} patches/s; "
                f"{classes or 'no tissue classified'}",
                flush=True,
            )
        elif o.status == batch.SKIPPED and not quiet:
            print(f"{name}: skipped, already mapped with this model", flush=True)

    outcomes = batch.map_batch(
        slides, classifier, options, out_dir, ctx, on_slide=on_slide, progress_for=progress_for
    )
    failed = [o for o in outcomes if o.status == batch.FAILED]
    if ctx.is_main:
        for o in failed:
            name = batch.printable(Path(o.slide).name)
            print(f"histoviewer: error: {name} failed: {batch.printable(o.error)}", file=sys.stderr)
        if not quiet:
            counts = {s: sum(o.status == s for o in outcomes) for s in batch.STATUSES}
            print(
                f"{len(outcomes)} slide(s): {counts[batch.MAPPED]} mapped, "
                f"{counts[batch.SKIPPED]} skipped, {counts[batch.FAILED]} failed; "
                f"summary in {out_dir / batch.SUMMARY_FILE}"
            )
    return 1 if failed else 0


class _ProgressReporter:
    """A tqdm bar on a terminal (unless ``bars`` is off), otherwise a plain line on stderr
    every few seconds."""

    def __init__(
        self, name: str, *, enabled: bool = True, every: float = 10.0, bars: bool = True
    ) -> None:
        self.name = name
        self.enabled = enabled
        self.bars = bars
        self.every = every
        self.bar = None
        self.last = 0.0

    def __enter__(self) -> _ProgressReporter:
        return self

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        if self.bars and sys.stderr.isatty() and self._tqdm(p):
            return
        now = time.monotonic()
        if p.done == p.total or now - self.last >= self.every:
            self.last = now
            print(
                f"{self.name}: {p.done}/{p.total} patches ({p.skipped} background), "
                f"{_rate_and_eta(p)}",
                file=sys.stderr,
                flush=True,
            )

    def _tqdm(self, p) -> bool:
        if self.bar is None:
            from histoviewer.tasks import count_bar

            # initial: patches of a partial map being continued are not this run's work.
            self.bar = count_bar(p.total, self.name, "patches", initial=p.done, leave=False)
            if self.bar is None:  # no tqdm (optional): plain lines instead
                return False
        self.bar.set_postfix_str(_rate_and_eta(p), refresh=False)
        self.bar.update(int(p.done) - self.bar.n)
        return True

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _rate_and_eta(p) -> str:
    eta = f", {p.eta:.0f} s left" if p.eta is not None and p.done < p.total else ""
    return f"{p.rate:.1f} patches/s{eta}"


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
        backend=getattr(args, "backend", "all"),
        say=None if getattr(args, "quiet", False) else _say,
    )
    print(result.report())
    return 0


def _say(line: str) -> None:
    print(f"benchmark: {line}", file=sys.stderr, flush=True)


# --- argument types ----------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def mpp_argument(text: str) -> float:
    from histoviewer.slide.mpp import plausible

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected microns per pixel, got {text!r}") from None
    if not plausible(value):
        raise argparse.ArgumentTypeError(
            f"{text} µm/px is not a slide scale (expected 0.05 to 40; 40x scans are about "
            "0.25, 20x about 0.5)"
        )
    return value


def _formats(text: str) -> list[str]:
    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
