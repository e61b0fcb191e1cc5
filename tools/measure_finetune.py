"""Measure the pathologist loop on a slide from "another lab": label, fine-tune, re-map.

    python tools/measure_finetune.py MODEL TILES OUT [--per-class 5] [--epochs 8]

1. Builds OUT/slide.tif (0.495 µm/px, JPEG-tiled pyramid): the canonical *test* tiles of
   TILES (split.csv beside them, 50 per class) laid out in eight bands, one class each,
   with a strong stain shift (more haematoxylin, less eosin, a darker scan) that the
   model never saw; the true class of every patch goes to OUT/truth.npy.
2. Maps it with MODEL (before).
3. Labels ``--per-class`` random patches of each class, as a pathologist correcting the
   map would, and writes them as QuPath GeoJSON (OUT/labels.geojson).
4. ``extract-tiles`` (mixing in 100 canonical *training* tiles per class), ``train
   --init-from``.
5. Maps it with the fine-tuned model (after) and prints the accuracy on the patches
   that were *not* labelled, before and after, per class.

Everything runs through the ``histoviewer`` command line, as a user would.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from histoviewer.slide.synthetic import write_pyramid_tiff

COLS, BAND_ROWS, TILE = 25, 2, 150
# Beer-Lambert stain vectors (Ruifrok & Johnston) for haematoxylin, eosin, DAB.
HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED /= np.linalg.norm(HED, axis=1, keepdims=True)


def shift_stain(
    image: np.ndarray, h: float = 1.35, e: float = 0.65, dim: float = 0.9
) -> np.ndarray:
    od = -np.log(np.clip(image.astype(np.float64), 1, 255) / 255.0)
    conc = od.reshape(-1, 3) @ np.linalg.inv(HED)
    conc[:, 0] *= h
    conc[:, 1] *= e
    rgb = 255.0 * np.exp(-(conc @ HED)) * dim
    return np.clip(rgb, 0, 255).reshape(image.shape).astype(np.uint8)


def build_slide(tiles: Path, out: Path, seed: int) -> np.ndarray:
    rows = list(csv.DictReader((tiles.parent / "split.csv").open()))
    test = [r for r in rows if r["split"] == "test"]
    classes = sorted({r["class"] for r in test})
    rng = np.random.default_rng(seed)
    image = np.zeros((BAND_ROWS * len(classes) * TILE, COLS * TILE, 3), np.uint8)
    truth = np.zeros((BAND_ROWS * len(classes), COLS), np.int64)
    for cid, folder in enumerate(classes):
        members = [r for r in test if r["class"] == folder]
        chosen = rng.choice(len(members), size=BAND_ROWS * COLS, replace=False)
        for k, i in enumerate(chosen):
            r, c = cid * BAND_ROWS + k // COLS, k % COLS
            path = next((tiles / folder).glob(members[i]["file"] + ".*"))
            tile = np.asarray(Image.open(path).convert("RGB"))
            image[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = tile
            truth[r, c] = cid
    image = shift_stain(image)
    write_pyramid_tiff(out / "slide.tif", image, mpp=0.495, quality=90)
    Image.fromarray(image[::8, ::8]).save(out / "slide-thumbnail.png")
    np.save(out / "truth.npy", truth)
    return truth


def geojson(
    truth: np.ndarray, per_class: int, seed: int, names: list[str]
) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    labelled = np.zeros(truth.shape, bool)
    features = []
    for cid in range(truth.max() + 1):
        cells = np.argwhere(truth == cid)
        for r, c in cells[rng.choice(len(cells), size=per_class, replace=False)]:
            labelled[r, c] = True
            x, y = int(c) * TILE, int(r) * TILE
            ring = [[x, y], [x + TILE, y], [x + TILE, y + TILE], [x, y + TILE], [x, y]]
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": names[cid]},
                    },
                }
            )
    return {"type": "FeatureCollection", "features": features}, labelled


def training_tiles(tiles: Path, out: Path) -> Path:
    """The canonical *training* tiles only, linked into OUT/train-tiles: the tiles mixed
    in must not include the test tiles the slide is made of."""
    folder = out / "train-tiles"
    for row in csv.DictReader((tiles.parent / "split.csv").open()):
        if row["split"] != "train":
            continue
        source = next((tiles / row["class"]).glob(row["file"] + ".*"))
        link = folder / row["class"] / source.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    return folder


def hv(*args: object) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "histoviewer", "-q", *map(str, args)], check=True)
    return time.perf_counter() - started


def predicted(maps: Path) -> np.ndarray:
    with np.load(maps / "slide.npz") as data:
        return data["labels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("tiles", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    truth = build_slide(args.tiles, out, args.seed)
    from histoviewer.model import load_model

    names = load_model(args.model).info.class_names
    data, labelled = geojson(truth, args.per_class, args.seed, names)
    (out / "labels.geojson").write_text(json.dumps(data))
    common = ["--device", "cpu", "--formats", "npz,png", "--no-skip-background"]
    times = {
        "map_before": hv(
            "map", out / "slide.tif", "--model", args.model, "--out", out / "before", *common
        )
    }
    times["extract"] = hv(
        "extract-tiles",
        out / "slide.tif",
        "--model",
        args.model,
        "--labels",
        out / "labels.geojson",
        "--mix",
        training_tiles(args.tiles, out),
        "--mix-per-class",
        100,
        "--out",
        out / "data",
        "--overwrite",
    )
    times["fine_tune"] = hv(
        "train",
        out / "data",
        "--init-from",
        args.model,
        "--out",
        out / "run",
        "--epochs",
        args.epochs,
        "--overwrite",
    )
    times["map_after"] = hv(
        "map",
        out / "slide.tif",
        "--model",
        out / "run" / "best.safetensors",
        "--out",
        out / "after",
        *common,
    )
    before, after = predicted(out / "before"), predicted(out / "after")
    rest = ~labelled
    result = {
        "patches": int(truth.size),
        "labelled": int(labelled.sum()),
        "accuracy_unlabelled_before": float((before[rest] == truth[rest]).mean()),
        "accuracy_unlabelled_after": float((after[rest] == truth[rest]).mean()),
        "per_class": {
            names[c]: [
                float((before[rest & (truth == c)] == c).mean()),
                float((after[rest & (truth == c)] == c).mean()),
            ]
            for c in range(truth.max() + 1)
        },
        "report_fine_tune": json.loads((out / "run" / "report.json").read_text())["fine_tune"][
            "compared"
        ],
        "seconds": times,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
