"""Write the demo slide shipped in resources/demo/ from the Kather 2016 test tiles.

    python tools/make_demo_slide.py [--data ../shared/data/kather2016] [--out resources/demo]
                                    [--seed 2016] [--quality 85]

Writes ``demo-crc-kather2016.tif`` (a JPEG-tiled pyramid TIFF at 0.495 µm/px), its
true classes ``demo-crc-kather2016.truth.json`` and a README.md saying what they are
and how they were made (see histoviewer/slide/demo_slide.py for the layout). The same
data, seed and quality give the same picture and truth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from histoviewer.classes import class_label
from histoviewer.fileio import atomic_write_text
from histoviewer.slide import open_slide
from histoviewer.slide.demo_slide import (
    DEFAULT_QUALITY,
    DEFAULT_SEED,
    KATHER_2016_CREDIT,
    read_truth,
    write_demo_slide,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kather2016"
OUT = ROOT / "resources" / "demo"

README = """\
# Demo slide

`{slide}` is a small whole-slide image to try HistoViewer on:
Help > Open Demo Slide (or the button of the empty window), then Analysis > Map Tissue.
Its true classes are known, so the Map panel gives the map's agreement with them.

- {width} x {height} px at {mpp} µm/px ({mm_w:.2f} x {mm_h:.2f} mm), a pyramid of
  {levels} levels of 256 px JPEG tiles (quality {quality}), {size_mb:.1f} MB.
- A grid of {cols} x {rows} cells of {cell} px, exactly the patch grid HistoViewer maps
  at the recipe's scale and stride: every patch is one 150 x 150 px tile of the
  *test* split of Kather et al. 2016 (`split.csv`, split `test`), each used once, which
  no model trained with the recipe has seen. JPEG compression changes the pixels a
  little; the tiles' own (lossless) accuracy is the one training reports.
- The classes form tissue-like regions (a section of colon wall with glass above):
  normal mucosa with lymphoid aggregates at its base, an ulcerated tumour with debris
  at its surface and necrosis inside, complex stroma and lymphocytes at its invasive
  front, submucosa and muscle (simple stroma), subserosal fat with a lymph node, and
  empty glass around. The layout is `LAYOUT` in `histoviewer/slide/demo_slide.py`.
- `{truth}`: the true class of every cell (`grid`, row by row,
  indices into `classes`, the model's class order) and the source tile of each
  (`tiles`, `<CLASS>/<file>`).
  A file named `<slide stem>.truth.json` beside any slide makes the Map panel compare
  the map with it.

Cells per class:

{counts}

Made with

    {command}

## Credit

The tiles are from

> {credit}

They are used under the Creative Commons Attribution 4.0 licence
(https://creativecommons.org/licenses/by/4.0/): only cut out and laid side by side.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the Kather 2016 data folder")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the files")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="chooses the tiles")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality, 1-100")
    args = parser.parse_args(argv)
    try:
        slide_path, truth_path = write_demo_slide(
            args.out, args.data, seed=args.seed, quality=args.quality
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"make_demo_slide: error: {exc}", file=sys.stderr)
        return 1
    truth = read_truth(truth_path)
    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        levels, mpp = slide.level_count, slide.mpp
    counts = "\n".join(f"- {class_label(name)} ({name}): {n}" for name, n in truth.counts().items())
    command = "python tools/make_demo_slide.py"
    if args.seed != DEFAULT_SEED or args.quality != DEFAULT_QUALITY:
        command += f" --seed {args.seed} --quality {args.quality}"
    readme = README.format(
        slide=slide_path.name,
        truth=truth_path.name,
        width=width,
        height=height,
        mpp=f"{mpp:g}",
        mm_w=width * mpp / 1000,
        mm_h=height * mpp / 1000,
        levels=levels,
        quality=args.quality,
        size_mb=slide_path.stat().st_size / 1e6,
        cols=truth.cols,
        rows=truth.rows,
        cell=truth.cell_size,
        counts=counts,
        command=command,
        credit=KATHER_2016_CREDIT,
    )
    atomic_write_text(args.out / "README.md", readme)
    print(f"{slide_path} ({slide_path.stat().st_size / 1e6:.1f} MB, {width} x {height} px)")
    print(f"{truth_path} ({sum(truth.counts().values())} cells)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
