"""The `extract-tiles` subcommand: labelled patches of slides -> a training dataset.

    histoviewer extract-tiles SLIDE... --model MODEL --out DIR
                              [--labels LABELS.geojson ...] [--mix TILES [--mix-per-class N]]

Labels come from ``--labels`` (QuPath GeoJSON, or a HistoViewer labels file; one per
slide, in the order of the slides) or, without it, from what the viewer stored for
each slide. ``histoviewer train DIR --init-from MODEL --out RUN`` then fine-tunes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from histoviewer.errors import HistoViewerError
from histoviewer.labels.store import FORMAT_NAME, LabelError, LabelSet, LabelStore


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``extract-tiles`` to the top-level parser's subcommands."""
    from histoviewer.mapping.commands import mpp_argument, positive_int

    cmd = subparsers.add_parser(
        "extract-tiles",
        help="cut labelled patches of slides into a class-folder dataset for training",
        description="Cut every labelled patch of each slide at the model's scale (its patch "
        "size and µm/px, with the resampling mapping uses) and write DIR/<class>/<slide>__x<X>"
        "_y<Y>.png and DIR/labels.csv. Fine-tune on them with 'histoviewer train DIR "
        "--init-from MODEL --out RUN'.",
    )
    cmd.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files")
    cmd.add_argument(
        "--model", required=True, metavar="CKPT", help="the model whose scale and classes to use"
    )
    cmd.add_argument("--out", required=True, metavar="DIR", help="folder for the dataset")
    cmd.add_argument(
        "--labels",
        action="append",
        metavar="FILE",
        help="QuPath GeoJSON (.geojson, .geojson.gz) or HistoViewer labels (.json) of a "
        "slide; once per slide, in the slides' order (default: the labels the viewer "
        "stored for each slide)",
    )
    cmd.add_argument(
        "--mix",
        metavar="TILES",
        help="also copy tiles of this class-folder dataset (folder or .zip), e.g. the "
        "model's training tiles, so that fine-tuning does not forget other classes",
    )
    cmd.add_argument(
        "--mix-per-class",
        type=positive_int,
        default=100,
        metavar="N",
        help="with --mix: at most N tiles per class (default 100)",
    )
    cmd.add_argument(
        "--mpp",
        type=mpp_argument,
        metavar="UM",
        help="the slides' scale in microns per pixel, overriding what their files say",
    )
    cmd.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier extraction in DIR (without this, a folder that holds "
        "files is refused)",
    )
    cmd.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from histoviewer.labels.extract import add_tiles, extract_tiles
    from histoviewer.model import load_model
    from histoviewer.slide import open_slide
    from histoviewer.slide.mpp import GIVEN_CLI

    files = list(args.labels or [])
    if files and len(files) != len(args.slides):
        raise HistoViewerError(
            f"{len(files)} --labels file(s) for {len(args.slides)} slide(s): give one per "
            "slide, in the same order, or none to use the labels stored by the viewer"
        )
    info = load_model(args.model).info
    readers = []
    try:
        jobs = []
        for i, path in enumerate(args.slides):
            reader = open_slide(path)
            readers.append(reader)
            if args.mpp is not None:
                reader.set_mpp(args.mpp, GIVEN_CLI)
            labels = (
                read_labels_file(files[i], reader, info)
                if files
                else LabelStore().load(reader.identity())
            )
            if not len(labels):
                where = files[i] if files else "the viewer's labels"
                raise LabelError(
                    f"{Path(path).name} has no labelled patches in {where}"
                    + ("" if files else "; label it in the viewer, or give --labels")
                )
            jobs.append((reader, labels))
        result = extract_tiles(jobs, info, args.out, overwrite=args.overwrite)
    finally:
        for reader in readers:
            reader.close()
    if args.mix:
        result.mixed = add_tiles(result.out, args.mix, info, per_class=args.mix_per_class)
    if not getattr(args, "quiet", False):
        print(f"extracted {result.summary()} into {result.out}")
        print(f"fine-tune with: histoviewer train {result.out} --init-from {args.model} --out RUN")
    return 0


def read_labels_file(path: str | Path, reader, info) -> LabelSet:
    """A slide's labels from QuPath GeoJSON or a HistoViewer labels file.

    GeoJSON shapes are tiled with the model's (``info``) patch at the slide's scale.
    """
    from histoviewer.labels.geojson import labels_on_slide, read_geojson

    data = read_geojson(path)
    if isinstance(data, dict) and data.get("format") == FORMAT_NAME:
        return LabelSet.from_dict(data, str(path))
    return LabelSet(reader.identity(), labels_on_slide(data, reader, info, str(path)).labels)
