"""The demo slide: held-out Kather 2016 test tiles laid out like a section of colon.

The app ships a small pyramidal TIFF (``resources/demo/``) that anyone can open and map
without data of their own, and whose true classes are known, so that the map can be
scored (:mod:`histoviewer.mapping.agreement`). It is made of the canonical *test* tiles
of Kather et al. 2016 (``split.csv``, split ``test``: 100 per class), which no model
trained with the project's recipe has seen, each used at most once.

The tiles sit on a grid of 150 px cells at 0.495 µm/px starting at the slide's corner,
which is exactly the patch grid the app maps at the recipe's scale and stride
(:func:`histoviewer.mapping.grid.make_grid`: the slide is a whole number of cells, so no
patch is shifted inward): every patch the app classifies is one test tile. The classes
form tissue-like regions (:data:`LAYOUT`); the truth file beside the slide
(``<stem>.truth.json``) holds the class of each cell and the tile it came from.

Headless: the tool ``tools/make_demo_slide.py`` writes the shipped files, the viewer
reads the truth with :func:`truth_for_slide`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from histoviewer.classes import class_names, name_from_folder
from histoviewer.errors import SlideError
from histoviewer.fileio import atomic_write_text
from histoviewer.resources import resources_dir
from histoviewer.slide.mpp import DEFAULT_MPP

#: Where the demo slide lives under resources/, and its file name.
DEMO_FOLDER = "demo"
DEMO_SLIDE_NAME = "demo-crc-kather2016.tif"
#: What the viewer says when this installation has no demo slide.
DEMO_MISSING = (
    f"The demo slide is not installed with this copy of HistoViewer: "
    f"resources/{DEMO_FOLDER}/{DEMO_SLIDE_NAME} or its truth file is missing."
)
#: The truth file of ``X.tif`` is ``X.truth.json`` beside it.
TRUTH_SUFFIX = ".truth.json"
TRUTH_FORMAT = "histoviewer.demo-truth"
TRUTH_VERSION = 1
#: Side of a cell in pixels: one Kather tile, one patch of the recipe's model.
CELL = 150
#: The seed that chose the shipped slide's tiles.
DEFAULT_SEED = 2016
#: The JPEG quality of the shipped slide: 4.9 MB (90 gives 6.1 MB, 80 gives 4.2 MB).
DEFAULT_QUALITY = 85

KATHER_2016_CREDIT = (
    "Kather JN, Weis CA, Bianconi F, Melchers SM, Schad LR, Gaiser T, Marx A, Zöllner FG. "
    "Collection of textures in colorectal cancer histology. Zenodo, record 53169, "
    "doi:10.5281/zenodo.53169, licence CC BY 4.0. "
    "Kather JN et al. Multi-class texture analysis in colorectal cancer histology. "
    "Scientific Reports 6:27988 (2016)."
)

#: One letter per cell, one string per row: a section of colon wall with the lumen's
#: glass above. Normal mucosa on the left (lymphoid aggregates at its base); an
#: ulcerated tumour on the right, debris at its surface and necrosis in its centre,
#: complex stroma along its invasive front with lymphocytes outside it; submucosa and
#: muscle (simple stroma) below; subserosal fat with a lymph node at the bottom.
#: Each class is used at most 100 times: the test split has 100 tiles per class.
LAYOUT = (
    "..........................",
    "..MMMMMMMMMMMMMM..........",
    ".MMMMMMMMMMMMMDDDDDDDD....",
    ".MMMMMMMMMMMMTTTDDDTTTTD..",
    ".MMMMMMMMMMMTTTTTDDTTTTTC.",
    ".MMMMMMMMMMCTTTTTTTTTTTTTC",
    ".MMLLMMMMMCCTTTTDDDDTTTTTC",
    ".MLLLLMMMMCTTTTDDDDDDTTTTC",
    ".SLLLSSSSCCTTTDDDDDDDTTTCC",
    ".SSSSSSSSCTTTTTDDDDDTTTTCL",
    ".SSSLLSSLCCTTTTTDDDTTTTCCL",
    ".SSLLLSSLLCCTTTTTTTTTTCCLL",
    "SSSSLSSSSLLCCTTTTTTTTCCLLS",
    "SSSSSSSSSSLLCCCTTTTTCCCLLS",
    "SSSSSSSSSSSLLCCCTTTCCCLLSS",
    "ASSSSSSSSSSSLLCCCCCCCLLSSA",
    "AAAASSSSSSSSSSSLLLLLSSSAAA",
    "AAAAAAAAAASSSSSSSSAAAAAAAA",
    "AAAAAAAALLLLAAAAAAAAAAAAA.",
    ".AAAAAALLLLLLAAAAAAAAAAA..",
    "..AAAAAALLLLLAAAAAAAAAA...",
    "....AAAAAAAAAAAAAAAAA.....",
    "..........................",
)
LETTERS = {
    "T": "tumor",
    "S": "stroma",
    "C": "complex",
    "L": "lympho",
    "D": "debris",
    "M": "mucosa",
    "A": "adipose",
    ".": "empty",
}


@dataclass(frozen=True)
class DemoTruth:
    """The true class of every cell of a slide laid out from labelled tiles.

    ``grid`` is int16 (rows, cols) of indices into ``class_names``; cell (r, c) covers
    level-0 pixels ``[c * cell_size, (c + 1) * cell_size)`` x ``[r * cell_size, ...)``
    of a slide of ``mpp`` µm/px. ``tiles`` names the source tile of each cell
    (``"01_TUMOR/<name>"``; empty where not recorded), ``source`` where they come from.
    """

    grid: np.ndarray
    class_names: tuple[str, ...]
    cell_size: int = CELL
    mpp: float = DEFAULT_MPP
    tiles: tuple[tuple[str, ...], ...] = ()
    slide: str = ""
    source: str = ""

    @property
    def rows(self) -> int:
        return int(self.grid.shape[0])

    @property
    def cols(self) -> int:
        return int(self.grid.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in level-0 pixels of the slide the truth describes."""
        return self.cols * self.cell_size, self.rows * self.cell_size

    def counts(self) -> dict[str, int]:
        """Cells per class, in class order."""
        hist = np.bincount(self.grid.ravel(), minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, hist, strict=True)}

    def to_json(self) -> str:
        """The truth file's text: one line per grid row, so that a diff shows the picture."""
        head = {
            "format": TRUTH_FORMAT,
            "version": TRUTH_VERSION,
            "slide": self.slide,
            "rows": self.rows,
            "cols": self.cols,
            "cell_size": self.cell_size,
            "mpp": self.mpp,
            "classes": list(self.class_names),
            "source": self.source,
        }
        fields = [json.dumps(v, ensure_ascii=False) for v in head.values()]
        grid = ",\n".join(f"    {json.dumps(row)}" for row in self.grid.tolist())
        tiles = ",\n".join(f"    {json.dumps(list(row))}" for row in self.tiles)
        fields += [f"[\n{grid}\n  ]", f"[\n{tiles}\n  ]"]
        keys = [*head, "grid", "tiles"]
        body = ",\n".join(f"  {json.dumps(k)}: {v}" for k, v in zip(keys, fields, strict=True))
        return "{\n" + body + "\n}\n"


def layout_classes(layout: Sequence[str] = LAYOUT) -> list[list[str]]:
    """The class name of every cell of ``layout`` (rows of :data:`LETTERS`)."""
    widths = {len(row) for row in layout}
    if len(widths) != 1:
        raise ValueError(f"layout rows differ in length: {sorted(widths)}")
    unknown = set("".join(layout)) - set(LETTERS)
    if unknown:
        raise ValueError(f"layout letters {sorted(unknown)} name no class (see LETTERS)")
    return [[LETTERS[ch] for ch in row] for row in layout]


def truth_path(slide_path: str | os.PathLike) -> Path:
    """Where the truth file of ``slide_path`` lies: ``X.tif`` -> ``X.truth.json``."""
    path = Path(slide_path)
    return path.with_name(path.stem + TRUTH_SUFFIX)


def demo_slide_path() -> Path | None:
    """The shipped demo slide, or None when this installation lacks it (or its truth)."""
    try:
        path = resources_dir() / DEMO_FOLDER / DEMO_SLIDE_NAME
    except FileNotFoundError:
        return None
    return path if path.is_file() and truth_path(path).is_file() else None


def truth_for_slide(slide_path: str | os.PathLike | None) -> DemoTruth | None:
    """The truth stored beside ``slide_path``; None when there is none.

    Raises SlideError when the file is there but cannot be used.
    """
    if slide_path is None:
        return None
    path = truth_path(slide_path)
    return read_truth(path) if path.is_file() else None


def read_truth(path: str | os.PathLike) -> DemoTruth:
    """Read a truth file; SlideError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SlideError(f"cannot read the true classes in {path.name}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SlideError(f"{path.name} is damaged: it is not a JSON file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != TRUTH_FORMAT:
        raise SlideError(f"{path.name} is not a HistoViewer truth file")
    if data.get("version") != TRUTH_VERSION:
        raise SlideError(
            f"{path.name} is version {data.get('version')!r} of the truth format; "
            f"this HistoViewer reads version {TRUTH_VERSION}"
        )
    try:
        names = tuple(str(n) for n in data["classes"])
        grid = np.asarray(data["grid"], dtype=np.int64)
        rows, cols = int(data["rows"]), int(data["cols"])
        cell, mpp = int(data["cell_size"]), float(data["mpp"])
        tiles = tuple(tuple(str(t) for t in row) for row in data.get("tiles", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise SlideError(f"{path.name} is damaged: {exc!r} is missing or malformed") from exc
    problem = ""
    if grid.shape != (rows, cols):
        problem = f"its grid is {grid.shape}, not {rows} x {cols} cells"
    elif grid.size and (grid.min() < 0 or grid.max() >= len(names)):
        problem = f"its grid holds class numbers outside 0-{len(names) - 1}"
    elif cell < 1 or not mpp > 0:
        problem = f"its cell size ({cell} px) or scale ({mpp} µm/px) is not positive"
    elif tiles and (len(tiles), {len(r) for r in tiles}) != (rows, {cols}):
        problem = "its tile names do not form the grid"
    if problem:
        raise SlideError(f"{path.name} is damaged: {problem}")
    return DemoTruth(
        grid.astype(np.int16),
        names,
        cell,
        mpp,
        tiles,
        slide=str(data.get("slide", "")),
        source=str(data.get("source", "")),
    )


# --- making the demo slide ------------------------------------------------------------


def held_out_tiles(data_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """The Kather 2016 test tiles per class name, sorted by file name.

    ``data_dir`` holds ``split.csv`` and ``tiles/<CLASS>/<name>.webp`` (see the data's
    README). Raises FileNotFoundError naming what is missing.
    """
    root = Path(data_dir)
    split = root / "split.csv"
    if not split.is_file():
        raise FileNotFoundError(f"{split} not found: the Kather 2016 data with its split.csv")
    tiles: dict[str, list[Path]] = {}
    with split.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != "test":
                continue
            path = root / "tiles" / row["class"] / f"{row['file']}.webp"
            if not path.is_file():
                raise FileNotFoundError(f"test tile {path} not found")
            tiles.setdefault(name_from_folder(row["class"]), []).append(path)
    return {name: sorted(paths) for name, paths in tiles.items()}


def compose(
    data_dir: str | os.PathLike,
    *,
    seed: int = DEFAULT_SEED,
    layout: Sequence[str] = LAYOUT,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, DemoTruth]:
    """The demo picture (uint8 (rows * 150, cols * 150, 3)) and its truth.

    Each cell gets a test tile of its class, drawn without replacement in an order
    fixed by ``seed``. ``names``: the classes in the model's order (default: the
    eight of classes.json). Raises ValueError when the layout asks for more tiles of a
    class than the test split holds.
    """
    from PIL import Image

    names = tuple(names or class_names())
    cells = layout_classes(layout)
    rows, cols = len(cells), len(cells[0])
    available = held_out_tiles(data_dir)
    rng = np.random.default_rng(seed)
    queues: dict[str, list[Path]] = {}
    for name in names:  # one permutation per class, in class order: reproducible
        paths = available.get(name, [])
        queues[name] = [paths[i] for i in rng.permutation(len(paths))]
    wanted = {n: sum(row.count(n) for row in cells) for n in names}
    short = {n: (k, len(queues[n])) for n, k in wanted.items() if k > len(queues[n])}
    if short:
        raise ValueError(
            "the layout needs more test tiles than there are: "
            + ", ".join(f"{n} {k} of {have}" for n, (k, have) in short.items())
        )
    image = np.empty((rows * CELL, cols * CELL, 3), dtype=np.uint8)
    grid = np.empty((rows, cols), dtype=np.int16)
    tiles = []
    for r, row in enumerate(cells):
        tile_row = []
        for c, name in enumerate(row):
            path = queues[name].pop(0)
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB"))
            if pixels.shape != (CELL, CELL, 3):
                raise ValueError(f"{path} is {pixels.shape[1]} x {pixels.shape[0]}, not {CELL} px")
            image[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = pixels
            grid[r, c] = names.index(name)
            tile_row.append(f"{path.parent.name}/{path.stem}")
        tiles.append(tuple(tile_row))
    return image, DemoTruth(grid, names, CELL, DEFAULT_MPP, tuple(tiles), source=KATHER_2016_CREDIT)


def write_demo_slide(
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    name: str = DEMO_SLIDE_NAME,
    seed: int = DEFAULT_SEED,
    quality: int = DEFAULT_QUALITY,
    layout: Sequence[str] = LAYOUT,
) -> tuple[Path, Path]:
    """Write the demo slide (a JPEG-tiled pyramid TIFF at 0.495 µm/px) and its truth
    file into ``out_dir``; returns both paths. Each is written under a temporary name
    and then renamed, so a failed run leaves no half-written slide behind (the
    slide's writer takes a path, hence its own temporary name)."""
    from histoviewer.slide.synthetic import write_pyramid_tiff

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, truth = compose(data_dir, seed=seed, layout=layout)
    slide = out / name
    truth = replace(truth, slide=name)
    partial = slide.with_name(f".{name}.partial")
    write_pyramid_tiff(partial, image, mpp=truth.mpp, tile=256, compression="jpeg", quality=quality)
    os.replace(partial, slide)
    truth_file = truth_path(slide)
    atomic_write_text(truth_file, truth.to_json())
    return slide, truth_file
