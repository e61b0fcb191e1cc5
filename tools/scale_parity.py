"""Scale parity: does a 40x scan map like a 20x scan of the same tissue?

For each sharp source at 0.2475 µm/px (the synthetic H&E renderer sampled at twice
the Kather resolution, and any slides given, declared at 0.2475 µm/px), an
antialiased 2x-downsampled copy at 0.495 µm/px stands for a 20x scan of the same
tissue. Both are mapped with the same model through the real engine; printed per
source: how close the network inputs of corresponding patches are, and how many
patches get the same class, beside what resizing the 40x patches straight to the
network's input size (the old path) gives.

    python tools/scale_parity.py MODEL [SLIDE ...] [--size 3000]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from PIL import Image

from histoviewer.mapping import map_slide
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.patches import read_patches
from histoviewer.mapping.tissue_map import CLASSIFIED
from histoviewer.model import load_model, preprocess
from histoviewer.slide import ArraySlide, open_slide
from histoviewer.slide.synthetic_he import he_region

SHARP_MPP = 0.2475
COARSE_MPP = 0.495


FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}


def pair(sharp: np.ndarray, copy_filter: str = "box") -> tuple[ArraySlide, ArraySlide]:
    """The sharp image at 0.2475 µm/px and its antialiased half-size copy at 0.495,
    reduced with PIL's ``copy_filter`` (box: the mean of each 2 x 2 block)."""
    h, w = sharp.shape[0] // 2 * 2, sharp.shape[1] // 2 * 2
    half = Image.fromarray(sharp[:h, :w]).resize((w // 2, h // 2), FILTERS[copy_filter])
    return ArraySlide(sharp[:h, :w], mpp=SHARP_MPP), ArraySlide(np.asarray(half), mpp=COARSE_MPP)


def inputs(slide, clf, rows, cols, *, direct: bool) -> torch.Tensor:
    grid = make_grid(slide, clf.info)
    pixels = read_patches(slide, grid, rows, cols)
    info = clf.info
    if direct:  # the old path: the slide's patch straight to the input size
        info = dataclasses.replace(info, patch_size=grid.read_size)
    return preprocess(torch.from_numpy(pixels), info, channels_last=False)


@torch.inference_mode()
def compare(name: str, sharp_slide, coarse_slide, clf) -> dict:
    fine = map_slide(sharp_slide, clf, device="cpu", precision="fp32")
    rough = map_slide(coarse_slide, clf, device="cpu", precision="fp32")
    assert (fine.rows, fine.cols) == (rough.rows, rough.cols)
    both = (fine.state == CLASSIFIED) & (rough.state == CLASSIFIED)
    rows, cols = (v.tolist() for v in np.nonzero(both))
    target = inputs(coarse_slide, clf, rows, cols, direct=False)
    new = inputs(sharp_slide, clf, rows, cols, direct=False)
    old = inputs(sharp_slide, clf, rows, cols, direct=True)
    net = clf.network.eval()
    old_labels = net(old).argmax(1).numpy()
    result = {
        "slide": name,
        "patches": len(rows),
        "input_diff_new": float((new - target).abs().mean()),
        "input_diff_old": float((old - target).abs().mean()),
        "agree_new": float((fine.labels[both] == rough.labels[both]).mean()),
        "agree_old": float((old_labels == rough.labels[both]).mean()),
    }
    print(
        f"{name}: {result['patches']} patches; input mean abs diff {result['input_diff_new']:.4f}"
        f" (straight resize: {result['input_diff_old']:.4f}); same class "
        f"{100 * result['agree_new']:.1f} % (straight resize: {100 * result['agree_old']:.1f} %)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("slides", nargs="*", help="sharp slides, read as 0.2475 µm/px")
    parser.add_argument("--size", type=int, default=3000, help="synthetic slide side (px)")
    parser.add_argument(
        "--copy-filter",
        choices=sorted(FILTERS),
        action="append",
        help="how the 20x copy is reduced (repeatable; default: box)",
    )
    args = parser.parse_args()
    clf = load_model(args.model, device="cpu")
    sources = [
        (
            f"synthetic H&E {args.size} px",
            he_region(0, 0, args.size, args.size, downsample=0.5, seed=3),
        )
    ]
    for path in args.slides:
        with open_slide(path) as slide:
            w, h = slide.dimensions
            sources.append((path, slide.read_region(0, 0, 0, w, h)))
    for copy_filter in args.copy_filter or ["box"]:
        for name, image in sources:
            compare(f"{name} [{copy_filter} copy]", *pair(image, copy_filter), clf)


if __name__ == "__main__":
    main()
