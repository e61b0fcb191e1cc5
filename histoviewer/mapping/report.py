"""The tissue map report (PDF) and the map picture with its legend (PNG), headless.

The report is what a pathologist or a reviewer keeps of a mapped slide. Its first
page is the summary to read: the slide beside the same slide with the class map laid
over it, the legend (patches, area and share of tissue per class) and the quantities
(tissue area, tumour-stroma ratio, lymphocyte share, each with the patches it rests
on and its definition), with a warning wherever a figure stands on weak ground: a
partial map, an assumed scale, the doubts found before mapping. Its second page is
the record of how the map was made: the model and its fingerprint, the slide and its
scale with where that came from, every mapping setting, the grid, the software
version, and the quantities of each region (a drawn selection, QuPath annotations).
Every page says that the report is for research use only.

Everything is drawn with matplotlib's object API (a ``Figure`` per page, saved by the
PDF backend; no pyplot and its global figures), so the viewer can write a report from
a worker thread. matplotlib is imported only when a picture is drawn: the command
line starts without it. Text is embedded as TrueType (``pdf.fonttype`` 42) with
Unicode maps, so the report's text can be searched and copied.

:func:`map_legend_image` is the map PNG with a legend beside it: the map's pixels
exactly as :func:`~histoviewer.mapping.export.map_image` gives them (each patch a
square block of whole pixels), then a white panel naming each colour.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from histoviewer import __version__
from histoviewer.classes import class_label
from histoviewer.fileio import atomic_write_bytes
from histoviewer.mapping.export import (
    BACKGROUND_COLOR,
    PENDING_COLOR,
    map_image,
    png_scale,
    scale_record,
)
from histoviewer.mapping.quantities import (
    LYMPHOCYTE_DEFINITION,
    TSR_DEFINITION,
    Quantities,
    patches_text,
    percent,
    quantities,
    quantity_lines,
)
from histoviewer.mapping.summary_text import format_area, totals_parts
from histoviewer.mapping.tissue_map import CLASSIFIED, TissueMap
from histoviewer.slide.mpp import DEFAULT_MPP, GIVEN, GIVEN_CLI, GIVEN_VIEWER

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: A region of a map: its name and a bool (rows, cols) mask over the map's grid.
Region = tuple[str, np.ndarray]

RESEARCH_ONLY = "For research use only. Not for diagnostic use."
TSR_CAVEAT = (
    "The clinical tumour-stroma ratio is scored by eye on the most stroma-rich field "
    "of the invasive front. The figure here is measured by patch classification over "
    "the whole slide (or a region): a measure of the same tissue, not that score."
)
#: Opacity of the class colours laid over the slide on page 1.
OVERLAY_ALPHA = 0.45

_A4 = (8.27, 11.69)  # inches, portrait
_LEFT, _RIGHT, _TOP, _BOTTOM = 0.6, 0.6, 0.55, 0.8  # page margins, inches
_FOOTER = 0.42  # the footer's baseline above the page's bottom edge, inches
_LINE = 1.38  # line height in font sizes
_INK = "#1a1a1a"
_MUTED = "#5a5a5a"
_RULE = "#b0b0b0"
_ALERT = "#a40020"
_ALERT_BG = "#fdecee"
_WARN_EDGE = "#c98a00"
_WARN_BG = "#fff5dc"
# The largest thumbnail side embedded (a bigger one is shrunk first) and the
# overlay's: whole-slide pictures about 3.5 inches wide need no more.
_THUMB_MAX = 1200
_OVERLAY_MAX = 2048
# The legend panel of the map PNG: pixels at 100 dpi.
_PANEL_DPI = 100
_PANEL_WIDTH = 460
_PANEL_PAD = 16


# --- words -----------------------------------------------------------------------------


def slide_name(tmap: TissueMap) -> str:
    """The slide's file name ("an in-memory slide" for one without a file)."""
    path = str((tmap.slide or {}).get("path") or "")
    return Path(path).name if path else "an in-memory slide"


def scale_text(tmap: TissueMap) -> str:
    """The slide's scale and where it came from: "0.499 µm/px, read from the file
    (Aperio MPP)", "0.25 µm/px, given by the user (given with --mpp)" or "0.495 µm/px,
    ASSUMED: the slide's file records no usable scale"."""
    record = scale_record(tmap)
    source = record["source"]
    head = f"{record['mpp']:g} µm/px"
    if record["assumed"]:
        return f"{head}, ASSUMED: the slide's file records no usable scale"
    if source in (GIVEN, GIVEN_CLI, GIVEN_VIEWER) or source.startswith("given"):
        return f"{head}, given by the user ({source})"
    if not source:
        return f"{head}, source not recorded"
    return f"{head}, read from the file ({source})"


def _date_text(when: datetime) -> str:
    text = when.strftime("%Y-%m-%d %H:%M")
    offset = when.strftime("%z")
    return f"{text} (UTC{offset[:3]}:{offset[3:5]})" if offset else text


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _partial_text(tmap: TissueMap) -> str | None:
    """The partial-map warning, None for a finished map."""
    if tmap.pending_count:
        return (
            f"Partial map: {totals_parts(tmap, area=False)[0]}. Areas, shares and "
            "ratios cover the classified patches only."
        )
    if not tmap.complete:
        return "Partial map: mapping was stopped before it had finished."
    return None


def _assumed_text(tmap: TissueMap) -> str | None:
    if not scale_record(tmap)["assumed"]:
        return None
    return (
        f"Assumed scale: the slide's file records no usable scale, so {tmap.mpp:g} µm/px "
        + ("(the Kather 2016 scale) " if math.isclose(tmap.mpp, DEFAULT_MPP) else "")
        + "was assumed. Every area and size in this report rests on that guess."
    )


def _warnings(tmap: TissueMap) -> list[str]:
    """Page 1's warnings, most important first."""
    out = [text for text in (_partial_text(tmap), _assumed_text(tmap)) if text]
    out += [f"Warning: {w.get('message', '')}" for w in tmap.warnings]
    return out


def _slide_size(tmap: TissueMap) -> tuple[int, int]:
    """The slide's level-0 width and height (the area the grid covers)."""
    w, h = tmap.extent
    if w > 0 and h > 0:
        return int(w), int(h)
    dims = (tmap.slide or {}).get("dimensions")
    if dims and len(dims) == 2 and min(int(dims[0]), int(dims[1])) > 0:
        return int(dims[0]), int(dims[1])
    cw, ch = tmap.covered
    return tmap.origin[0] + cw, tmap.origin[1] + ch


def _ratio_text(q: Quantities) -> str:
    tsr = q.tumour_stroma_ratio
    if tsr.value is None:
        return f"not measurable ({tsr.note})"
    return (
        f"{percent(tsr.value)} stroma, {q.stroma_category} "
        f"({tsr.patches:,} tumour and stroma patches)"
    )


def _lymphocyte_text(q: Quantities) -> str:
    lym = q.lymphocyte_share
    if lym.value is None:
        return f"not measurable ({lym.note})"
    return f"{percent(lym.value)} of tissue (of {patches_text(lym.patches, 'tissue ')})"


# --- the PDF ---------------------------------------------------------------------------


#: Every text of the report: DejaVu Sans (matplotlib's own font, embedded in the PDF),
#: and no math parsing of names holding a "$". Given to each text, never through
#: matplotlib's global rcParams: reports are drawn on the viewer's export thread while
#: other figures (training curves) may be drawn on another.
_TEXT = {"fontfamily": "DejaVu Sans", "parse_math": False}


def write_report(
    tmap: TissueMap,
    path: str | Path,
    *,
    thumbnail: np.ndarray | None = None,
    regions: Sequence[Region] | None = None,
    created: datetime | None = None,
) -> None:
    """Write the PDF report of ``tmap`` to ``path`` (A4, atomically: a failure leaves
    an existing file as it was).

    ``thumbnail``: RGB uint8 picture of the whole slide (any size, the slide's aspect),
    shown with the map laid over it; None says there is none. ``regions``: (name, bool
    (rows, cols) mask) pairs whose quantities are reported too. ``created``: the date
    printed and recorded (default: now, local time). See the module docstring for what
    the pages hold. Raises ValueError for a region mask that does not fit the map, and
    StorageError when the file cannot be written.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    created = created or datetime.now().astimezone()
    model = tmap.model or {}
    buffer = io.BytesIO()
    metadata = {
        "Title": f"HistoViewer tissue map report: {slide_name(tmap)}",
        "Author": f"HistoViewer {__version__}",
        "Subject": (
            f"Tissue classes of {slide_name(tmap)} mapped by the model "
            f"{model.get('name') or 'unnamed'}. {RESEARCH_ONLY}"
        ),
        "Keywords": "histology, tissue map, tumour-stroma ratio, lymphocytes, research use only",
        "Creator": f"HistoViewer {__version__}",
        # matplotlib writes a date's UTC offset with the sign turned round: give it UTC.
        "CreationDate": created.astimezone(timezone.utc) if created.tzinfo else created,
    }
    pages = render_pages(tmap, thumbnail=thumbnail, regions=regions, created=created)
    with PdfPages(buffer, metadata=metadata) as pdf:
        for page in pages:
            pdf.savefig(page)
    atomic_write_bytes(path, buffer.getvalue())


def preview_pages(
    tmap: TissueMap,
    *,
    thumbnail: np.ndarray | None = None,
    regions: Sequence[Region] | None = None,
    created: datetime | None = None,
    dpi: float = 100,
) -> list[np.ndarray]:
    """The report's pages as RGB uint8 pictures at ``dpi`` (a preview; the same
    figures as :func:`write_report`'s)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = []
    pages = render_pages(tmap, thumbnail=thumbnail, regions=regions, created=created)
    for page in pages:
        page.set_dpi(dpi)
        canvas = FigureCanvasAgg(page)
        canvas.draw()
        out.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return out


def render_pages(
    tmap: TissueMap,
    *,
    thumbnail: np.ndarray | None = None,
    regions: Sequence[Region] | None = None,
    created: datetime | None = None,
) -> list[Figure]:
    """The report's pages as matplotlib figures (A4 portrait), footers included: what
    :func:`write_report` saves and :func:`preview_pages` rasterises."""
    created = created or datetime.now().astimezone()
    named = [(str(name), np.asarray(mask, dtype=bool)) for name, mask in regions or ()]
    region_q = [(name, quantities(tmap, mask)) for name, mask in named]
    q = quantities(tmap)
    flow = _Flow()
    _summary_page(flow, tmap, q, thumbnail, created, len(region_q))
    flow.new_page()
    _record_page(flow, tmap, created, region_q)
    total = len(flow.pages)
    for number, page in enumerate(flow.pages, start=1):
        _footer(page, number, total)
    return flow.pages


class _Flow:
    """Text, rules and tables laid top to bottom on A4 figures (positions in inches
    from the page's top-left corner), a new page begun when one is full. A dry flow
    draws nothing: it measures how much room the same calls take."""

    def __init__(self, *, dry: bool = False) -> None:
        self.dry = dry
        self.pages: list[Figure] = []
        self.fig: Figure | None = None
        self.y = 0.0
        self.new_page()

    width = _A4[0] - _LEFT - _RIGHT
    bottom = _A4[1] - _BOTTOM

    def new_page(self) -> None:
        if not self.dry:
            from matplotlib.figure import Figure

            self.fig = Figure(figsize=_A4)
            self.pages.append(self.fig)
        self.y = _TOP

    def room(self, height: float) -> None:
        """Begin a new page unless ``height`` inches fit on this one."""
        if self.y + height > self.bottom and self.y > _TOP:
            self.new_page()

    def gap(self, inches: float) -> None:
        self.y += inches

    def text(
        self,
        s: str,
        *,
        x: float = 0.0,
        size: float = 9,
        weight: str = "normal",
        color: str = _INK,
        style: str = "normal",
        ha: str = "left",
        advance: bool = True,
    ) -> None:
        """One line at ``x`` inches from the left margin, its top on the cursor."""
        if not self.dry:
            self.fig.text(
                (_LEFT + x) / _A4[0],
                1 - self.y / _A4[1],
                s,
                fontsize=size,
                fontweight=weight,
                fontstyle=style,
                color=color,
                ha=ha,
                va="top",
                **_TEXT,
            )
        if advance:
            self.y += size * _LINE / 72

    def para(
        self,
        s: str,
        *,
        x: float = 0.0,
        width: float | None = None,
        size: float = 9,
        weight: str = "normal",
        color: str = _INK,
        style: str = "normal",
    ) -> None:
        """``s`` wrapped to ``width`` inches (default: to the right margin)."""
        width = self.width - x if width is None else width
        for line in _wrap(s, width * 72, size, weight):
            self.room(size * _LINE / 72)
            self.text(line, x=x, size=size, weight=weight, color=color, style=style)

    def rect(
        self,
        x: float,
        top: float,
        w: float,
        h: float,
        *,
        face: Any = "none",
        edge: Any = "none",
        lw: float = 0.6,
    ) -> None:
        """A rectangle ``w`` x ``h`` inches, its top-left ``x`` from the margin."""
        if self.dry:
            return
        from matplotlib.patches import Rectangle

        self.fig.add_artist(
            Rectangle(
                ((_LEFT + x) / _A4[0], 1 - (top + h) / _A4[1]),
                w / _A4[0],
                h / _A4[1],
                transform=self.fig.transFigure,
                facecolor=face,
                edgecolor=edge,
                linewidth=lw,
            )
        )

    def rule(self, *, color: str = _RULE) -> None:
        self.rect(0, self.y, self.width, 0, edge=color, lw=0.6)

    def heading(self, s: str, size: float = 11) -> None:
        self.room(size * _LINE / 72 + 0.45)
        self.gap(0.1)
        self.text(s, size=size, weight="bold")
        self.rule()
        self.gap(0.06)

    def boxed(self, s: str, *, face: str, edge: str, color: str, size: float = 9) -> None:
        """``s`` wrapped in a coloured box as wide as the text column."""
        pad = 0.08
        lines = _wrap(s, (self.width - 2 * pad) * 72, size, "bold")
        # The last line's leading is left out, so that the text sits in the middle.
        h = (len(lines) - 1) * size * _LINE / 72 + 1.2 * size / 72 + 2 * pad
        self.room(h)
        top = self.y
        self.rect(0, top, self.width, h, face=face, edge=edge, lw=0.9)
        self.gap(pad)
        for line in lines:
            self.text(line, x=pad, size=size, weight="bold", color=color)
        self.y = top + h

    def fields(self, rows: Sequence[tuple[str, str]], *, key_width: float = 1.75) -> None:
        """Label and value pairs, the values wrapped in a column of their own."""
        size = 8.5
        line = size * _LINE / 72
        for key, value in rows:
            lines = _wrap(value, (self.width - key_width) * 72, size, "normal")
            self.room(line * len(lines))
            self.text(key, size=size, color=_MUTED, advance=False)
            for part in lines:
                self.text(part, x=key_width, size=size)


def _font(size: float, weight: str = "normal"):
    from matplotlib.font_manager import FontProperties

    return FontProperties(family="DejaVu Sans", size=size, weight=weight)


@functools.cache
def _measurer():
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, 72)  # 72 dpi: widths in points


@functools.lru_cache(maxsize=8192)
def _text_width(s: str, size: float, weight: str = "normal") -> float:
    """Width of ``s`` in points, as matplotlib draws it in the report's font."""
    if not s:
        return 0.0
    width, _, _ = _measurer().get_text_width_height_descent(s, _font(size, weight), ismath=False)
    return float(width)


def _wrap(s: str, width_pt: float, size: float, weight: str = "normal") -> list[str]:
    """``s`` broken at spaces into lines of at most ``width_pt`` points (a word longer
    than a line is cut). Lines are measured word by word (a space is as wide as
    the difference between "x x" and "xx"), with a little room to spare for the
    hinting of a preview."""
    width_pt *= 0.98
    space = _text_width("x x", size, weight) - _text_width("xx", size, weight)
    lines: list[str] = []
    current: list[str] = []
    used = 0.0
    for word in s.split():
        width = _text_width(word, size, weight)
        if current and used + space + width <= width_pt:
            current.append(word)
            used += space + width
            continue
        if current:
            lines.append(" ".join(current))
        while width > width_pt and len(word) > 1:
            cut = _fit(word, width_pt, size, weight, ellipsis="")
            lines.append(cut)
            word = word[len(cut) :]
            width = _text_width(word, size, weight)
        current, used = [word], width
    if current or not lines:
        lines.append(" ".join(current))
    return lines


def _fit(s: str, width_pt: float, size: float, weight: str = "normal", ellipsis: str = "…") -> str:
    """``s``, cut short (ending in ``ellipsis``) when wider than ``width_pt`` points."""
    if _text_width(s, size, weight) <= width_pt:
        return s
    lo, hi = 1, len(s)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if _text_width(s[:mid] + ellipsis, size, weight) <= width_pt:
            lo = mid
        else:
            hi = mid - 1
    return s[:lo] + ellipsis


def _rgb(color: Sequence[int]) -> tuple[float, float, float]:
    return (color[0] / 255, color[1] / 255, color[2] / 255)


# --- page 1: the summary ---------------------------------------------------------------


def _summary_page(
    flow: _Flow,
    tmap: TissueMap,
    q: Quantities,
    thumbnail: np.ndarray | None,
    created: datetime,
    region_count: int,
) -> None:
    model = tmap.model or {}
    flow.text("HistoViewer tissue map report", size=17, weight="bold")
    flow.gap(0.04)
    flow.text(_fit(slide_name(tmap), flow.width * 72, 12, "bold"), size=12, weight="bold")
    flow.text(
        _fit(
            f"Created {_date_text(created)} · model {model.get('name') or 'unnamed'} · "
            f"HistoViewer {__version__}",
            flow.width * 72,
            8.5,
        ),
        size=8.5,
        color=_MUTED,
    )
    flow.gap(0.08)
    flow.boxed(RESEARCH_ONLY, face=_ALERT_BG, edge=_ALERT, color=_ALERT, size=10)
    for warning in _warnings(tmap):
        flow.gap(0.05)
        flow.boxed(warning, face=_WARN_BG, edge=_WARN_EDGE, color="#6b4500", size=8.5)

    # The legend and the quantities take what they need; the pictures get the rest.
    dry = _Flow(dry=True)
    _summary_tables(dry, tmap, q, region_count)
    below = dry.y - _TOP
    room = flow.bottom - flow.y - below - 0.3
    _pictures(flow, tmap, thumbnail, max_height=min(4.8, max(1.8, room)))
    _summary_tables(flow, tmap, q, region_count)


def _pictures(
    flow: _Flow, tmap: TissueMap, thumbnail: np.ndarray | None, *, max_height: float
) -> None:
    """The slide and the slide with the map over it: side by side, or one above the
    other for a slide much wider than tall (whichever shows them larger), within
    ``max_height`` inches (titles included)."""
    W, H = _slide_size(tmap)
    gap = 0.25
    title = 9 * _LINE / 72 + 0.03
    side_w = min((flow.width - gap) / 2, (max_height - title) * W / H)
    stacked_w = min(flow.width, (max_height - 2 * title - gap) / 2 * W / H)
    stacked = stacked_w > 1.15 * side_w
    w = stacked_w if stacked else side_w
    h = w * H / W
    titles = ("Slide", "Tissue map over the slide" if thumbnail is not None else "Tissue map")
    flow.gap(0.12)
    if stacked:
        x0 = (flow.width - w) / 2
        places = [(x0, flow.y), (x0, flow.y + title + h + gap)]
    else:
        x0 = (flow.width - (2 * w + gap)) / 2
        places = [(x0, flow.y), (x0 + w + gap, flow.y)]
    thumb = overlay = None
    if not flow.dry:
        thumb = _prepare_thumbnail(thumbnail)
        overlay = _overlay(tmap, thumb, alpha=OVERLAY_ALPHA if thumb is not None else 1.0)
    for i, ((x, top), name) in enumerate(zip(places, titles, strict=True)):
        flow.y = top
        flow.text(name, x=x, size=9, weight="bold")
        flow.gap(0.03)
        if flow.dry:
            continue
        left = (_LEFT + x) / _A4[0]
        bottom = 1 - (flow.y + h) / _A4[1]
        ax = flow.fig.add_axes((left, bottom, w / _A4[0], h / _A4[1]))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(_RULE)
            spine.set_linewidth(0.6)
        if thumb is not None:
            ax.imshow(thumb, extent=(0, W, H, 0), interpolation="none", aspect="auto")
        elif i == 0:
            ax.set_facecolor("#f4f4f4")
            ax.text(
                0.5,
                0.5,
                "no slide thumbnail",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color=_MUTED,
                fontsize=9,
                **_TEXT,
            )
        if i == 1:
            ax.imshow(overlay, extent=(0, W, H, 0), interpolation="none", aspect="auto")
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        if thumb is not None or i == 1:
            _scale_bar(ax, W, tmap.mpp)
    flow.y = places[-1][1] + title + h + 0.1


def _prepare_thumbnail(thumbnail: np.ndarray | None) -> np.ndarray | None:
    """RGB uint8, at most :data:`_THUMB_MAX` pixels on its longest side."""
    if thumbnail is None:
        return None
    image = np.asarray(thumbnail)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if max(image.shape[:2]) > _THUMB_MAX:
        from PIL import Image

        f = _THUMB_MAX / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    return np.ascontiguousarray(image)


def _overlay(tmap: TissueMap, thumb: np.ndarray | None, *, alpha: float) -> np.ndarray:
    """RGBA uint8 of the class colours over the slide's whole level-0 area: each pixel
    the colour of the cell holding its centre (:meth:`TissueMap.cell_edges`), only
    classified patches opaque (``alpha``), background and pending clear.

    At least the thumbnail's resolution, and fine enough for each cell to span a few
    pixels (at most :data:`_OVERLAY_MAX` on the longest side).
    """
    W, H = _slide_size(tmap)
    want = max(4 * max(tmap.rows, tmap.cols), max(thumb.shape[:2]) if thumb is not None else 0)
    scale = min(max(want, 256), _OVERLAY_MAX) / max(W, H)
    w, h = max(1, round(W * scale)), max(1, round(H * scale))
    xs = (np.arange(w) + 0.5) * (W / w)
    ys = (np.arange(h) + 0.5) * (H / h)
    cols, rows = tmap.cells_at(xs, ys)
    inside_x, inside_y = cols >= 0, rows >= 0
    cols, rows = np.maximum(cols, 0), np.maximum(rows, 0)
    colors = map_image(tmap)
    shown = (tmap.state == CLASSIFIED).astype(np.uint8) * round(255 * alpha)
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., :3] = colors[rows[:, None], cols[None, :]]
    out[..., 3] = shown[rows[:, None], cols[None, :]]
    out[~inside_y, :, 3] = 0
    out[:, ~inside_x, 3] = 0
    return out


def _scale_bar(ax: Any, width_px: float, mpp: float) -> None:
    """A bar of a round length (about a fifth of the slide's width) at the bottom left."""
    from matplotlib import patheffects
    from matplotlib.transforms import blended_transform_factory

    width_mm = width_px * mpp / 1000
    steps = [0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100]
    fitting = [s for s in steps if s <= 0.3 * width_mm]
    if not fitting:
        return
    mm = fitting[-1]
    length = mm * 1000 / mpp
    label = f"{mm:g} mm" if mm >= 1 else f"{mm * 1000:g} µm"
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    x0 = 0.05 * width_px
    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    ax.plot(
        [x0, x0 + length],
        [0.05, 0.05],
        transform=trans,
        color="black",
        linewidth=2.5,
        solid_capstyle="butt",
        path_effects=[patheffects.withStroke(linewidth=4.5, foreground="white")],
    )
    ax.annotate(
        label,
        xy=(x0 + length / 2, 0.05),
        xycoords=trans,
        xytext=(0, 3),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=7.5,
        color="black",
        path_effects=halo,
        **_TEXT,
    )


def _summary_tables(flow: _Flow, tmap: TissueMap, q: Quantities, region_count: int) -> None:
    """The legend and the quantities (page 1, below the pictures)."""
    size = 8.5
    line = size * _LINE / 72
    flow.heading("Tissue classes")
    # Column right edges, inches from the left margin.
    patches_x, area_x, share_x = 3.9, 5.35, flow.width
    flow.text("Class", x=0.3, size=size, weight="bold", advance=False)
    flow.text("Patches", x=patches_x, size=size, weight="bold", ha="right", advance=False)
    flow.text("Area (mm²)", x=area_x, size=size, weight="bold", ha="right", advance=False)
    flow.text("Share of tissue", x=share_x, size=size, weight="bold", ha="right")
    flow.gap(0.03)

    def row(color, label, patches, area, share, *, weight="normal") -> None:
        if color is not None:
            flow.rect(0, flow.y + 0.005, 0.2, 0.11, face=_rgb(color), edge="#444444", lw=0.4)
        flow.text(label, x=0.3, size=size, weight=weight, advance=False)
        flow.text(patches, x=patches_x, size=size, weight=weight, ha="right", advance=False)
        flow.text(area, x=area_x, size=size, weight=weight, ha="right", advance=False)
        flow.text(share, x=share_x, size=size, weight=weight, ha="right", advance=False)
        flow.gap(line + 0.02)

    for c in q.classes:
        share = percent(c.share) if c.tissue else "not tissue"
        row(c.color, class_label(c.name), f"{c.patches:,}", f"{c.area_mm2:.3f}", share)
    row(
        None,
        "Tissue, all classes",
        f"{q.tissue_patches:,}",
        f"{q.tissue_area_mm2:.3f}",
        "100 %",
        weight="bold",
    )
    row(BACKGROUND_COLOR, "Background (glass, skipped)", f"{q.background_patches:,}", "", "")
    if q.pending_patches:
        row(PENDING_COLOR, "Not mapped (pending)", f"{q.pending_patches:,}", "", "")

    flow.heading("Quantities")
    key = 1.75
    tissue = f"{format_area(q.tissue_area_mm2)} ({patches_text(q.tissue_patches)})"
    items = [
        ("Tissue area", tissue, None),
        ("Tumour-stroma ratio", _ratio_text(q), TSR_DEFINITION),
        ("Lymphocyte share", _lymphocyte_text(q), LYMPHOCYTE_DEFINITION),
    ]
    for label, value, definition in items:
        flow.text(label, size=9, weight="bold", advance=False)
        flow.para(value, x=key, size=9)
        if definition:
            flow.para(f"Definition: {definition}.", x=key, size=7.5, color=_MUTED)
        flow.gap(0.04)
    flow.gap(0.04)
    flow.para(TSR_CAVEAT, size=7.5, color=_MUTED)
    if region_count:
        flow.gap(0.04)
        flow.para(
            f"{region_count} region{'s' if region_count != 1 else ''} measured as well: "
            "see page 2.",
            size=8.5,
        )


# --- page 2: the record ----------------------------------------------------------------


def _record_page(
    flow: _Flow, tmap: TissueMap, created: datetime, regions: list[tuple[str, Quantities]]
) -> None:
    model = tmap.model or {}
    slide = tmap.slide or {}
    settings = tmap.settings or {}
    flow.text("How this map was made", size=15, weight="bold")
    flow.text(_fit(slide_name(tmap), flow.width * 72, 10, "bold"), size=10, weight="bold")

    flow.heading("Model")
    accuracy = model.get("test_accuracy")
    patch, model_mpp = model.get("patch_size"), model.get("mpp")
    if patch and model_mpp:
        patch_text = f"{patch} px at {model_mpp:g} µm/px ({patch * model_mpp:.0f} µm square)"
        if model.get("input_size") and model["input_size"] != patch:
            patch_text += f", resized to {model['input_size']} px for the network"
    else:
        patch_text = "not recorded"
    flow.fields(
        [
            ("Name", str(model.get("name") or "not recorded")),
            ("Architecture", str(model.get("arch") or "not recorded")),
            ("Fingerprint", str(model.get("fingerprint") or "not recorded")[:16]),
            (
                "Test accuracy",
                f"{100 * float(accuracy):.1f} %" if accuracy is not None else "not recorded",
            ),
            ("Patches", patch_text),
        ]
    )

    flow.heading("Slide")
    W, H = _slide_size(tmap)
    mm = tmap.mpp / 1000
    flow.fields(
        [
            ("File", str(slide.get("path") or "an in-memory slide (no file)")),
            *([("Format", str(slide["format"]))] if slide.get("format") else []),
            ("Level-0 size", f"{W:,} x {H:,} px"),
            ("Physical size", f"{W * mm:.2f} x {H * mm:.2f} mm"),
            ("Scale", scale_text(tmap)),
        ]
    )

    flow.heading("Mapping settings")
    stride_model = int(settings.get("stride_model_px", tmap.stride_model))
    overlap = ""
    if patch:
        overlap = (
            ", no overlap"
            if stride_model == patch
            else (", patches overlap" if stride_model < patch else ", gaps between patches")
        )
    rows = [("Stride", f"{stride_model} model px = {tmap.stride} level-0 px{overlap}")]
    if "skip_background" in settings:
        if settings["skip_background"]:
            threshold = settings.get("min_tissue")
            skip = "on" + (
                f": patches under {100 * float(threshold):g} % tissue skipped as glass"
                if threshold is not None
                else ""
            )
        else:
            skip = "off: every patch classified, glass included"
    else:
        skip = "not recorded"
    tta = settings.get("tta")
    rows += [
        ("Background skipping", skip),
        (
            "Test-time augmentation",
            "not recorded"
            if tta is None
            else ("on: the mean of 8 flips and rotations" if tta else "off"),
        ),
        ("Precision", str(settings.get("precision", "not recorded"))),
        ("Backend", str(settings.get("backend", "not recorded"))),
    ]
    if "ran_with" in settings:  # what "auto" came to
        rows.append(("Ran with", f"{settings['ran_with']} on {settings.get('device', '?')}"))
    if not settings:
        rows.append(("", "This map was made before HistoViewer recorded its settings."))
    flow.fields(rows)

    flow.heading("Grid and run")
    flow.fields(
        [
            (
                "Grid",
                f"{tmap.rows:,} x {tmap.cols:,} = {patches_text(tmap.rows * tmap.cols)} of "
                f"{tmap.patch_size} level-0 px",
            ),
            (
                "Patches",
                f"{tmap.classified_count:,} classified, {tmap.background_count:,} background "
                f"(glass), {tmap.pending_count:,} not mapped",
            ),
            ("Complete", "yes" if tmap.complete and not tmap.pending_count else "no (partial map)"),
            ("Mapping time", _duration(tmap.elapsed)),
            ("Software", f"HistoViewer {__version__}"),
            ("Report created", _date_text(created)),
        ]
    )
    if tmap.warnings:
        flow.heading("Warnings")
        for w in tmap.warnings:
            flow.text("•", size=8.5, advance=False)
            flow.para(str(w.get("message", "")), x=0.15, size=8.5)
    if regions:
        _regions_table(flow, regions)


def _regions_table(flow: _Flow, regions: list[tuple[str, Quantities]]) -> None:
    size = 8
    line = size * _LINE / 72
    cols = [
        (2.75, "Patches"),
        (3.75, "Tissue area"),
        (5.6, "Tumour-stroma ratio"),
        (flow.width, "Lymphocytes"),
    ]

    def header() -> None:
        flow.text("Region", size=size, weight="bold", advance=False)
        for x, title in cols:
            flow.text(title, x=x, size=size, weight="bold", ha="right", advance=False)
        flow.gap(line + 0.02)

    flow.heading("Regions")
    flow.para(
        "Patches: tissue patches in the region (of all its patches). Ratios as on page 1, "
        "counted over the region's patches only.",
        size=7.5,
        color=_MUTED,
    )
    flow.gap(0.04)
    header()
    for name, q in regions:
        if flow.y + line > flow.bottom:
            flow.new_page()
            header()
        tsr = q.tumour_stroma_ratio
        lym = q.lymphocyte_share
        label = name + (" (partial)" if q.pending_patches else "")
        cells = [
            f"{q.tissue_patches:,} of {q.patches:,}",
            format_area(q.tissue_area_mm2),
            f"{percent(tsr.value)} {q.stroma_category}" if tsr.value is not None else "–",
            percent(lym.value),
        ]
        flow.text(_fit(label, 2.0 * 72, size), size=size, advance=False)
        for (x, _), cell in zip(cols, cells, strict=True):
            flow.text(cell, x=x, size=size, ha="right", advance=False)
        flow.gap(line + 0.02)


def _footer(page: Figure, number: int, total: int) -> None:
    y = _FOOTER / _A4[1]
    page.add_artist(_footer_rule(page))
    page.text(_LEFT / _A4[0], y, RESEARCH_ONLY, fontsize=7.5, color=_ALERT, va="baseline")
    page.text(
        0.6,
        y,
        f"HistoViewer {__version__}",
        fontsize=7.5,
        color=_MUTED,
        ha="center",
        va="baseline",
    )
    page.text(
        1 - _RIGHT / _A4[0],
        y,
        f"page {number} of {total}",
        fontsize=7.5,
        color=_MUTED,
        ha="right",
        va="baseline",
    )


def _footer_rule(page: Figure):
    from matplotlib.lines import Line2D

    y = (_FOOTER + 0.16) / _A4[1]
    return Line2D(
        [_LEFT / _A4[0], 1 - _RIGHT / _A4[0]],
        [y, y],
        transform=page.transFigure,
        color=_RULE,
        linewidth=0.6,
    )


# --- the map picture with its legend ---------------------------------------------------


def map_legend_image(tmap: TissueMap) -> np.ndarray:
    """RGB uint8: the map picture with a legend panel on its right (below it when the
    map is much wider than tall).

    The map keeps the top-left corner, pixel for pixel as the map PNG draws it: each
    patch a :func:`~histoviewer.mapping.export.png_scale` square of its colour
    (:func:`~histoviewer.mapping.export.map_image`). The panel (white) names the slide,
    gives each class's colour, label, share of tissue and patches, the background and
    any patches not mapped, the quantities, the model and the scale.
    """
    k = png_scale(tmap.rows, tmap.cols)
    picture = np.repeat(np.repeat(map_image(tmap), k, axis=0), k, axis=1)
    mh, mw = picture.shape[:2]
    below = mw > 2 * mh
    width = max(_PANEL_WIDTH, mw) if below else _PANEL_WIDTH
    panel = _legend_panel(tmap, width, 0 if below else mh)
    ph, pw = panel.shape[:2]
    if below:
        out = np.full((mh + ph, max(mw, pw), 3), 255, dtype=np.uint8)
        out[mh:, :pw] = panel
    else:
        out = np.full((max(mh, ph), mw + pw, 3), 255, dtype=np.uint8)
        out[:ph, mw:] = panel
    out[:mh, :mw] = picture
    return out


def _legend_panel(tmap: TissueMap, width: int, min_height: int) -> np.ndarray:
    """The legend of :func:`map_legend_image`: RGB uint8, ``width`` wide, at least
    ``min_height`` tall. Laid out in pixels; text drawn by matplotlib (Agg), swatches
    painted afterwards so that they hold their colours exactly."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    q = quantities(tmap)
    px = _PANEL_DPI / 72  # pixels per point
    pad = _PANEL_PAD
    inner = width - 2 * pad
    texts: list[tuple[float, float, str, dict[str, Any]]] = []  # x, top y (px), text, style
    swatches: list[tuple[int, int, tuple[int, int, int]]] = []  # x, y, colour
    y = float(pad)

    def put(x, s, size, *, advance=True, **style) -> None:
        nonlocal y
        texts.append((x, y, s, {"fontsize": size, **style}))
        if advance:
            y += size * px * 1.4

    def wrapped(s, size, **style) -> None:
        for part in _wrap(s, inner / px, size, style.get("fontweight", "normal")):
            put(pad, part, size, **style)

    put(pad, _fit(slide_name(tmap), inner / px, 12, "bold"), 12, fontweight="bold")
    put(pad, "HistoViewer tissue map", 9, color=_MUTED)
    y += 6
    swatch = 16
    row = 22
    table = min(inner, _PANEL_WIDTH - 2 * pad)  # a wide panel keeps the columns close
    share_x, patches_x = pad + table * 0.62, pad + table
    label_x = pad + swatch + 8
    put(share_x, "of tissue", 8.5, advance=False, color=_MUTED, ha="right")
    put(patches_x, "patches", 8.5, color=_MUTED, ha="right")
    y += 2
    entries = [
        (c.color, class_label(c.name), percent(c.share) if c.tissue else "not tissue", c.patches)
        for c in q.classes
    ]
    entries.append((BACKGROUND_COLOR, "Background (glass)", "", q.background_patches))
    if q.pending_patches:
        entries.append((PENDING_COLOR, "Not mapped", "", q.pending_patches))
    for color, label, share, patches in entries:
        swatches.append((pad, round(y), tuple(color)))
        top = y + (swatch - 10 * px) / 2 - 1
        texts.append(
            (label_x, top, _fit(label, (share_x - label_x - 70) / px, 10), {"fontsize": 10})
        )
        texts.append((share_x, top, share, {"fontsize": 10, "ha": "right"}))
        texts.append((patches_x, top, f"{patches:,}", {"fontsize": 10, "ha": "right"}))
        y += row
    y += 8
    for line in quantity_lines(q):
        wrapped(line[:1].upper() + line[1:], 9.5)
    y += 6
    wrapped(f"Model: {(tmap.model or {}).get('name') or 'not recorded'}", 9.5, color=_MUTED)
    record = scale_record(tmap)
    if record["assumed"]:
        wrapped(
            f"Scale: {tmap.mpp:g} µm/px ASSUMED (no scale in the slide's file)",
            9.5,
            color=_ALERT,
            fontweight="bold",
        )
    else:
        source = f" ({record['source']})" if record["source"] else ""
        wrapped(f"Scale: {tmap.mpp:g} µm/px{source}", 9.5, color=_MUTED)
    height = max(min_height, math.ceil(y + pad))

    fig = Figure(figsize=(width / _PANEL_DPI, height / _PANEL_DPI), dpi=_PANEL_DPI)
    fig.patch.set_facecolor("white")
    for x, top, s, style in texts:
        color = style.pop("color", _INK)
        fig.text(x / width, 1 - top / height, s, va="top", color=color, **style, **_TEXT)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rendered = np.asarray(canvas.buffer_rgba())[..., :3]
    panel = np.full((height, width, 3), 255, dtype=np.uint8)
    h, w = min(height, rendered.shape[0]), min(width, rendered.shape[1])
    panel[:h, :w] = rendered[:h, :w]
    edge = np.array((68, 68, 68), dtype=np.uint8)
    for x, top, color in swatches:
        panel[top : top + swatch, x : x + swatch] = edge
        panel[top + 1 : top + swatch - 1, x + 1 : x + swatch - 1] = color
    return panel


__all__ = [
    "OVERLAY_ALPHA",
    "RESEARCH_ONLY",
    "TSR_CAVEAT",
    "Region",
    "class_label",
    "map_legend_image",
    "preview_pages",
    "render_pages",
    "scale_text",
    "slide_name",
    "write_report",
]
