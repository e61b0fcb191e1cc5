"""Patch reading speed: HistoViewer's reader against OpenSlide on the same file.

Reads every 150 px patch of the mapping grid (model scale 0.495 µm/px) of a slide, one
read_region per patch, with HistoViewer's own reader and with openslide-python, in the
same process, alternating rounds; prints the median patches/s of each and the ratio,
cold (a newly opened slide each round: every tile decoded) and warm (the same open
slide again: both libraries keep decoded tiles in a cache).

    python tools/read_speed.py SLIDE [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import openslide

from histoviewer.mapping.grid import make_grid
from histoviewer.model.info import ModelInfo
from histoviewer.slide import open_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with open_slide(args.slide) as slide:
        grid = make_grid(slide, ModelInfo.recipe())
    boxes = [grid.patch_box(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    size = grid.read_size

    def read_ours(slide) -> None:
        for x, y, _, _ in boxes:
            slide.read_region(0, x, y, size, size)

    def read_theirs(slide) -> None:
        for x, y, _, _ in boxes:
            np.asarray(slide.read_region((x, y), 0, (size, size)))

    x, y, _, _ = boxes[len(boxes) // 2]
    with open_slide(args.slide) as ours:
        theirs = openslide.OpenSlide(args.slide)
        same = np.array_equal(
            ours.read_region(0, x, y, size, size),
            np.asarray(theirs.read_region((x, y), 0, (size, size)))[..., :3],
        )
        theirs.close()
    openers = {"histoviewer": open_slide, "openslide": openslide.OpenSlide}
    readers = {"histoviewer": read_ours, "openslide": read_theirs}
    print(f"{args.slide}: {len(boxes)} patches of {size} px per round, {args.rounds} rounds")
    for mode in ("cold", "warm"):
        rates: dict[str, list[float]] = {name: [] for name in openers}
        kept = {name: openers[name](args.slide) for name in openers}
        for name in openers:
            readers[name](kept[name])  # warm the caches
        for _ in range(args.rounds):
            for name in openers:
                slide = openers[name](args.slide) if mode == "cold" else kept[name]
                start = time.perf_counter()
                readers[name](slide)
                rates[name].append(len(boxes) / (time.perf_counter() - start))
                if mode == "cold":
                    slide.close()
        for slide in kept.values():
            slide.close()
        ours_rate = statistics.median(rates["histoviewer"])
        theirs_rate = statistics.median(rates["openslide"])
        print(
            f"  {mode}: HistoViewer {ours_rate:,.0f} patches/s, OpenSlide "
            f"{theirs_rate:,.0f} patches/s ({ours_rate / theirs_rate:.2f}x)"
        )
    print(f"  pixels identical: {same}")


if __name__ == "__main__":
    main()
