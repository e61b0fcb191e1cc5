"""Render resources/icons/histoviewer.svg into the icon files each desktop wants.

    python packaging/render_icons.py [--out packaging/icons]

Writes ``hicolor/<N>x<N>/apps/histoviewer.png`` for the Linux icon theme (16 to 512 px),
``histoviewer.ico`` (Windows, 16 to 256 px) and ``histoviewer.icns`` (macOS, 32 to 1024 px).
The SVG is drawn with Qt's SVG renderer on an offscreen platform, so no display is needed;
Pillow packs the PNGs into .ico and .icns. Run it again after the SVG changes.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
SVG = PACKAGING.parent / "resources" / "icons" / "histoviewer.svg"
OUT = PACKAGING / "icons"
NAME = "histoviewer"

#: The hicolor theme's usual application sizes.
LINUX_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # 256 is the largest an .ico holds
# Pillow writes the PNG entries of .icns: 16 px at 2x (32) up to 512 px at 2x (1024).
ICNS_SIZES = (32, 64, 128, 256, 512, 1024)

log = logging.getLogger("render_icons")


def render_png(svg: Path, size: int) -> bytes:
    """The SVG drawn on a transparent ``size`` x ``size`` canvas, as PNG bytes."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not an SVG file Qt can draw")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise RuntimeError(f"Qt could not encode the {size} px icon as PNG")
    return bytes(data.data())


def render_all(svg: Path = SVG, out: Path = OUT) -> list[Path]:
    """Write every icon file under ``out``; returns the paths written."""
    from PIL import Image
    from PySide6.QtGui import QGuiApplication

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # QImage needs one
    sizes = sorted(set(LINUX_SIZES) | set(ICO_SIZES) | set(ICNS_SIZES))
    pngs = {size: render_png(svg, size) for size in sizes}
    written = []
    for size in LINUX_SIZES:
        path = out / "hicolor" / f"{size}x{size}" / "apps" / f"{NAME}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pngs[size])
        written.append(path)
    images = {size: Image.open(io.BytesIO(pngs[size])).convert("RGBA") for size in sizes}
    largest = images[max(ICO_SIZES)]
    ico = out / f"{NAME}.ico"
    # Each size comes from its own rendering, not a downscaled 256 px one, so small icons stay
    # sharp; Pillow takes the extra frames from append_images when their sizes are listed.
    largest.save(
        ico,
        format="ICO",
        sizes=[(s, s) for s in ICO_SIZES],
        append_images=[images[s] for s in ICO_SIZES if s != max(ICO_SIZES)],
    )
    icns = out / f"{NAME}.icns"
    images[max(ICNS_SIZES)].save(
        icns,
        format="ICNS",
        append_images=[images[s] for s in ICNS_SIZES if s != max(ICNS_SIZES)],
    )
    written += [ico, icns]
    log.info("wrote %d icon files under %s", len(written), out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=SVG, help="the source SVG")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the icon files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    render_all(args.svg, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
