"""Mapping many slides: one process, or several launched by torchrun (one per GPU).

``histoviewer map`` hands its slides here when it maps a batch (several slides, a folder
or a list). Slides are sorted; each process takes the next slide nobody has taken
whenever it is free (:meth:`~histoviewer.distributed.DistContext.claims`), so a huge
slide holds back only the process mapping it. For every slide, after its exports (each
written atomically by :func:`~histoviewer.mapping.export.export_all`), a sidecar
``DIR/<stem>.map.json`` is written last, atomically: the model fingerprint and the
options that shape the result, the slide file's size and time stamp, and the outcome.
A slide whose sidecar says it was mapped with the same model, options and file, and
whose exports are all there, is skipped; so a killed batch resumes where it stopped and
another model remaps everything. A slide that fails records its error in its sidecar
and the batch goes on with the next one; so does a folder's broken symbolic link. At the
end every process hands its outcomes to rank 0 (through the job's store: the wait stops
at once if a process fails), which writes ``DIR/summary.csv``.

File names that are not valid UTF-8 (on Linux any bytes but ``/`` and NUL may name a
file) are mapped like any other; where a name is written as text (summary.csv, the CSV
and GeoJSON exports, messages) its undecodable bytes are shown backslash-escaped
(``slide-\\xff.tif``), see :func:`printable`. The sidecars keep the exact name.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histoviewer.distributed import DistContext
from histoviewer.errors import DeviceError, HistoViewerError, SlideError, StorageError
from histoviewer.fileio import atomic_write_text, ensure_free_space, storage_error
from histoviewer.mapping.engine import MapProgress, map_slide
from histoviewer.mapping.export import (
    DEFAULT_FORMATS,
    FORMATS,
    REPORT_THUMBNAIL,
    estimate_bytes,
    export_all,
    export_name,
    parse_formats,
)
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.model import Classifier

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.csv"
SIDECAR_SUFFIX = ".map.json"
SIDECAR_FORMAT = "histoviewer-map-sidecar"
MAPPED, SKIPPED, FAILED = "mapped", "skipped", "failed"
STATUSES = (MAPPED, SKIPPED, FAILED)
#: A sidecar's status while the slide's exports are being (re)written: a run killed
#: then leaves its set visibly incomplete.
WRITING = "writing"


@dataclass(frozen=True)
class BatchOptions:
    """The settings of a batch. Those in :meth:`key` decide whether an earlier result
    still stands; ``batch_size`` and ``backend`` do not change the result (the
    backends agree within float32 rounding)."""

    stride: int | None = None  # model pixels; None: the model's patch size
    batch_size: int = 64
    skip_background: bool = True
    precision: str = "auto"
    formats: tuple[str, ...] = DEFAULT_FORMATS
    mpp: float | None = None  # the slides' scale, overriding their files' (--mpp)
    strict: bool = False  # refuse a slide with a warning (see mapping/checks.py)
    backend: str = "auto"  # auto, torch, onnxruntime (engine.choose_backend)
    tta: bool = False  # test-time augmentation: 8 flips and rotations per patch

    def key(self) -> dict[str, Any]:
        key = {
            "mpp": self.mpp,
            "stride": self.stride,
            "skip_background": self.skip_background,
            "precision": self.precision,
            "formats": sorted(self.formats),
        }
        if self.tta:  # only then: results recorded before TTA existed still stand
            key["tta"] = True
        return key


@dataclass
class SlideOutcome:
    """What happened to one slide in this run. ``status``: mapped, skipped or failed;
    a skipped slide carries the figures of the run that mapped it."""

    slide: str
    status: str
    patches: int = 0
    background: int = 0
    seconds: float = 0.0
    patches_per_s: float = 0.0
    fractions: dict[str, float] = field(default_factory=dict)
    error: str = ""
    rank: int = 0


# --------------------------------------------------------------------------- slide lists


def expand_slides(
    inputs: Iterable[str | Path], slides_from: str | Path | None = None
) -> list[Path]:
    """The slides named by ``inputs`` (files, or folders: their files with a supported
    extension, not recursing) and by the list file ``slides_from`` (one path per line;
    blank lines and lines starting with ``#`` are ignored; relative paths are relative
    to the list's folder), sorted and without repeats.

    A named file is kept even if it is missing or unreadable: it fails as a slide. So is
    a folder's symbolic link with a slide's extension that leads nowhere (its target is
    missing, or a loop): opening it fails with a message saying so.
    Raises HistoViewerError for a missing list file or a folder without slides.
    """
    from histoviewer.slide import SUPPORTED_EXTENSIONS

    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = [
                p
                for p in path.iterdir()
                if (p.is_file() or p.is_symlink())
                and p.suffix.lower() in SUPPORTED_EXTENSIONS
                and not p.name.startswith(".")
            ]
            if not found:
                raise HistoViewerError(
                    f"the folder {path} holds no slides (looked for "
                    f"{', '.join(SUPPORTED_EXTENSIONS)})"
                )
            paths.extend(found)
        else:
            paths.append(path)
    if slides_from is not None:
        paths.extend(_read_list(Path(slides_from).expanduser()))
    unique: dict[str, Path] = {}
    for path in paths:
        unique.setdefault(os.path.abspath(path), path)
    return sorted(unique.values(), key=lambda p: str(p))


def _read_list(list_file: Path) -> list[Path]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HistoViewerError(f"the slide list {list_file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoViewerError(f"cannot read the slide list {list_file}: {exc}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line).expanduser()
            out.append(Path(os.path.normpath(list_file.parent / path)))
    if not out:
        raise HistoViewerError(f"the slide list {list_file} names no slides")
    return out


def check_stems(slides: Sequence[Path]) -> None:
    """Raise HistoViewerError if two slides would write the same export files."""
    stems: dict[str, Path] = {}
    for path in slides:
        other = stems.setdefault(path.stem, path)
        if other != path:
            raise HistoViewerError(
                f"{other} and {path} would both be exported as '{path.stem}.*' "
                "in the same folder; map them with separate --out folders"
            )


def check_exports_spare_slides(slides: Sequence[Path], out_dir: Path, formats) -> None:
    """Raise HistoViewerError if an export would overwrite one of the slides (a PNG
    slide whose map PNG would take its name in its own folder)."""
    inputs = {_real(p) for p in slides}
    for slide in slides:
        for fmt in formats:
            target = _real(out_dir / export_name(slide.stem, fmt))
            if target in inputs:
                raise HistoViewerError(
                    f"the {fmt} export of {slide.name} would overwrite the slide {target}; "
                    "choose another --out folder"
                )


def _real(path: Path) -> Path:
    """The path with links followed, as far as they go (a looping or broken link is
    the slide's own failure, reported when it is mapped)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def printable(text: str) -> str:
    """``text`` (a file name or a message naming one) as it can be written as UTF-8 text:
    bytes of the name that were not valid UTF-8 (which Python keeps as lone surrogates)
    become backslash escapes, ``b"slide-\\xff.tif"`` -> ``slide-\\xff.tif``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- one slide


def sidecar_path(out_dir: Path, slide: Path) -> Path:
    return out_dir / f"{slide.stem}{SIDECAR_SUFFIX}"


def _file_identity(slide: Path) -> dict[str, Any] | None:
    try:
        st = slide.stat()
    except OSError:
        return None
    return {"name": slide.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _job(classifier: Classifier, options: BatchOptions, slide: Path) -> dict[str, Any]:
    return {
        "model": classifier.fingerprint,
        "options": options.key(),
        "file": _file_identity(slide),
    }


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: the slide is mapped again
    return data if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT else None


def _exports(out_dir: Path, slide: Path, options: BatchOptions) -> list[Path]:
    return [out_dir / export_name(slide.stem, f) for f in options.formats]


def _recorded_files(record: dict[str, Any], slide: Path) -> list[str]:
    """The export file names a sidecar says belong to the slide's set."""
    files = record.get("files")
    if files is None:  # sidecars written before "files": the formats of their job
        formats = (record.get("job") or {}).get("options", {}).get("formats") or []
        files = [export_name(slide.stem, f) for f in formats if f in FORMATS]
    # Only plain names of this slide's exports: a record is never a licence to delete
    # anything else.
    ours = {export_name(slide.stem, f) for f in FORMATS}
    return [f for f in files if isinstance(f, str) and f in ours]


def begin_exports(out_dir: Path, slide: Path, formats: Sequence[str]) -> None:
    """Before a slide's exports are (re)written: its sidecar says ``writing``, so that a
    run killed among the exports leaves the set visibly incomplete (and a batch maps it
    again), and the files of its previous set that this run will not write are
    removed, so that the folder never holds a mix of two runs."""
    sidecar = sidecar_path(out_dir, slide)
    planned = [export_name(slide.stem, f) for f in formats]
    previous = _read_sidecar(sidecar)
    record = {
        "format": SIDECAR_FORMAT,
        "status": WRITING,
        "files": planned,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(sidecar, json.dumps(record, indent=2) + "\n")
    for name in _recorded_files(previous or {}, slide):
        if name not in planned:
            try:
                (out_dir / name).unlink(missing_ok=True)
            except OSError as exc:
                raise storage_error(out_dir / name, exc) from None
            log.info("removed %s of the previous run (not in this run's formats)", name)


def map_and_export(
    slide: Path,
    classifier: Classifier,
    options: BatchOptions,
    out_dir: Path,
    progress: Callable[[MapProgress], None] | None = None,
    *,
    rank: int = 0,
    regions: Any = None,
) -> tuple[TissueMap, SlideOutcome]:
    """Open, check, map and export one slide: what a single `map` and each batch slide share.

    The slide's warnings (:func:`~histoviewer.mapping.checks.check_slide`) are logged,
    one line each, and recorded in the map; with ``options.strict`` the first one
    refuses the slide (SlideError) before anything is classified. Before inference the
    free space is checked against what the exports will take (StorageError). The map
    records the slide's path as :func:`printable` gives it (the exports write it as
    text). The exports are one set: :func:`begin_exports` marks the sidecar
    ``writing`` before the first, and a ``mapped`` sidecar naming the set's files is
    written after the last. ``regions``: parsed GeoJSON of annotations drawn on the
    slide, whose quantities the summary and the report give too (checked before
    mapping). Returns the map and its outcome.
    """
    from histoviewer.labels.geojson import regions_from_geojson
    from histoviewer.mapping.checks import check_slide
    from histoviewer.mapping.grid import make_grid
    from histoviewer.slide import open_slide
    from histoviewer.slide.mpp import GIVEN_CLI

    job = _job(classifier, options, slide)
    with open_slide(slide) as reader:
        if options.mpp is not None:
            reader.set_mpp(options.mpp, GIVEN_CLI)
        warnings = check_slide(reader, classifier.info)
        if warnings and options.strict:
            raise SlideError(f"{slide.name} refused (--strict): {warnings[0].message}")
        for warning in warnings:
            log.warning("%s: %s", printable(slide.name), warning.message)
        grid = make_grid(reader, classifier.info, options.stride)
        cells = grid.count
        masks = [] if regions is None else regions_from_geojson(regions, grid, "--regions")
        need = estimate_bytes(cells, classifier.info.num_classes, options.formats)
        ensure_free_space(out_dir, need, f"the exports of {printable(slide.name)}")
        started = time.perf_counter()
        tmap = map_slide(
            reader,
            classifier,
            stride=options.stride,
            batch_size=options.batch_size,
            skip_background=options.skip_background,
            precision=options.precision,
            backend=options.backend,
            progress=progress,
            tta=options.tta,
        )
        # The report shows the slide; read while it is open (the smallest level that
        # gives 1024 px, band by band).
        thumbnail = reader.thumbnail(REPORT_THUMBNAIL) if "report" in options.formats else None
    tmap.warnings = [{"kind": w.kind, "message": printable(w.message)} for w in warnings]
    if isinstance(tmap.slide, dict) and isinstance(tmap.slide.get("path"), str):
        tmap.slide["path"] = printable(tmap.slide["path"])
    begin_exports(out_dir, slide, options.formats)
    export_all(tmap, out_dir, slide.stem, options.formats, thumbnail=thumbnail, regions=masks)
    seconds = time.perf_counter() - started
    patches = tmap.classified_count
    outcome = SlideOutcome(
        str(slide),
        MAPPED,
        patches=patches,
        background=tmap.background_count,
        seconds=seconds,
        patches_per_s=patches / seconds if seconds > 0 else 0.0,
        fractions={k: float(v) for k, v in tmap.fractions().items()},
        rank=rank,
    )
    _write_sidecar(
        sidecar_path(out_dir, slide),
        job,
        outcome,
        [p.name for p in _exports(out_dir, slide, options)],
    )
    return tmap, outcome


def map_one(
    slide: Path,
    classifier: Classifier,
    options: BatchOptions,
    out_dir: Path,
    *,
    rank: int = 0,
    progress: Callable[[MapProgress], None] | None = None,
) -> SlideOutcome:
    """Map one slide unless an up-to-date result exists; never raises for a bad slide.

    A slide that cannot be read or mapped gives a ``failed`` outcome (and sidecar).
    Disk and device problems (StorageError, DeviceError) are raised: they would fail
    every slide that follows.
    """
    sidecar = sidecar_path(out_dir, slide)
    job = _job(classifier, options, slide)
    done = _read_sidecar(sidecar)
    if (
        done is not None
        and done.get("status") == MAPPED
        and done.get("job") == job
        and all(p.is_file() for p in _exports(out_dir, slide, options))
    ):
        recorded = done.get("outcome", {})
        log.info("%s: already mapped with this model, skipped", slide)
        return SlideOutcome(
            **{**_outcome_fields(recorded), "slide": str(slide), "status": SKIPPED, "rank": rank}
        )

    started = time.perf_counter()
    try:
        _, outcome = map_and_export(slide, classifier, options, out_dir, progress, rank=rank)
    except (StorageError, DeviceError):
        raise
    except Exception as exc:  # any other failure is this slide's; the batch goes on
        message = str(exc) if isinstance(exc, HistoViewerError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, HistoViewerError):
            log.debug("mapping %s failed", slide, exc_info=True)
        outcome = SlideOutcome(
            str(slide), FAILED, seconds=time.perf_counter() - started, error=message, rank=rank
        )
        # The files of an earlier set stay listed, for a later run to replace.
        _write_sidecar(sidecar, job, outcome, _recorded_files(done or {}, slide))
        return outcome
    return outcome


def _outcome_fields(recorded: dict[str, Any]) -> dict[str, Any]:
    names = SlideOutcome.__dataclass_fields__
    return {k: v for k, v in recorded.items() if k in names}


def _write_sidecar(
    path: Path, job: dict[str, Any], outcome: SlideOutcome, files: Sequence[str] = ()
) -> None:
    record = {
        "format": SIDECAR_FORMAT,
        "status": outcome.status,
        "job": job,
        "outcome": asdict(outcome),
        "files": list(files),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------- the batch


def map_batch(
    slides: Sequence[Path],
    classifier: Classifier,
    options: BatchOptions,
    out_dir: str | Path,
    ctx: DistContext,
    *,
    on_slide: Callable[[SlideOutcome], None] | None = None,
    progress_for: Callable[[Path], Callable[[MapProgress], None] | None] | None = None,
) -> list[SlideOutcome]:
    """Map ``slides`` (the same sorted list on every process), each process taking the
    next slide nobody has taken whenever it is free, then collect every process's
    outcomes; rank 0 writes ``out_dir/summary.csv``.

    Returns the outcomes of all slides, in ``slides`` order, on every process, once the
    summary is written. ``on_slide`` is called after each of this process's slides;
    ``progress_for(slide)`` gives a progress callback for map_slide. Raises StorageError
    / DeviceError (see :func:`map_one`), and PeerError as soon as another process of the
    job fails (checked between slides and between batches of patches).
    """
    out_dir = Path(out_dir)
    options = BatchOptions(**{**asdict(options), "formats": tuple(parse_formats(options.formats))})
    mine: list[tuple[int, dict[str, Any]]] = []
    for index in ctx.claims(len(slides), "slides"):
        slide = slides[index]
        outcome = map_one(
            slide,
            classifier,
            options,
            out_dir,
            rank=ctx.rank,
            progress=_checked(ctx, progress_for(slide) if progress_for else None),
        )
        mine.append((index, asdict(outcome)))
        if on_slide is not None:
            on_slide(outcome)
    parts = ctx.collect("outcomes", mine)
    records = None
    if parts is not None:  # rank 0
        by_index = dict(pair for part in parts for pair in part)
        records = [by_index[i] for i in range(len(slides))]
        outcomes = [SlideOutcome(**r) for r in records]
        atomic_write_text(
            out_dir / SUMMARY_FILE, summary_csv(outcomes, classifier.info.class_names)
        )
        log.info("summary of %d slides written to %s", len(outcomes), out_dir / SUMMARY_FILE)
    # The others wait for the summary: if rank 0 cannot write it, they fail with it.
    return [SlideOutcome(**r) for r in ctx.share("outcomes", records)]


def _checked(
    ctx: DistContext, progress: Callable[[MapProgress], None] | None
) -> Callable[[MapProgress], None] | None:
    """``progress``, first stopping the slide if another process has failed."""
    if not ctx.is_distributed:
        return progress

    def report(p: MapProgress) -> None:
        ctx.check()
        if progress is not None:
            progress(p)

    return report


def summary_csv(outcomes: Sequence[SlideOutcome], class_names: Sequence[str]) -> str:
    """One row per slide: slide, status, patches (classified), seconds, patches_per_s,
    ``<class>_fraction`` per class (of the classified patches), error. Names that are
    not valid UTF-8 are written as :func:`printable` gives them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["slide", "status", "patches", "seconds", "patches_per_s"]
        + [f"{name}_fraction" for name in class_names]
        + ["error"]
    )
    for o in outcomes:
        failed = o.status == FAILED
        fractions = ["" if failed else f"{o.fractions.get(n, 0.0):.6f}" for n in class_names]
        writer.writerow(
            [
                printable(o.slide),
                o.status,
                "" if failed else o.patches,
                f"{o.seconds:.3f}",
                "" if failed else f"{o.patches_per_s:.2f}",
                *fractions,
                printable(o.error),
            ]
        )
    return buffer.getvalue()
