"""In what order, and in batches of what size, the engine classifies a slide's patches.

:class:`PatchQueue` hands out the patches still to classify: in row-major order, or,
given a *focus* (the slide rectangle a viewer shows), those in view first and then
ring by ring outward; when the focus moves, the order follows it from the next batch
on. :class:`BatchSizer` keeps one batch to about a second on a slow device, so that
progress and the first painted patches come soon even on a laptop CPU, while a GPU
gets full batches. Pure numpy; no Qt, no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from histoviewer.mapping.grid import GridLayout

log = logging.getLogger(__name__)

Rect = tuple[float, float, float, float]  # x, y, width, height in level-0 pixels


def region_mask(grid: GridLayout, region: Rect) -> np.ndarray:
    """bool (rows, cols): the patches whose box overlaps ``region`` (level-0 x, y, w, h).

    Raises ValueError for a region of no area or one that misses the grid.
    """
    x, y, w, h = (float(v) for v in region)
    if not (w > 0 and h > 0):
        raise ValueError(f"the region must have a width and a height, not {w:g} x {h:g}")
    xs, ys = grid.patch_starts()
    size = grid.patch_size
    cols = (xs < x + w) & (xs + size > x)
    rows = (ys < y + h) & (ys + size > y)
    mask = rows[:, None] & cols[None, :]
    if not mask.any():
        cw, ch = grid.covered
        raise ValueError(
            f"the region ({x:.0f}, {y:.0f}, {w:.0f} x {h:.0f} px) lies outside the "
            f"slide ({cw} x {ch} px)"
        )
    return mask


class PatchQueue:
    """The patches of ``todo`` (bool rows x cols) not yet handed out.

    ``focus`` is called by :meth:`take` (on the engine's thread) and returns the
    rectangle to classify first, or None for row-major order; it must be cheap and
    thread-safe. Within the focus patches go in row-major order (rows are read as
    bands); outside it by distance to it, in rings one grid step wide.
    """

    def __init__(
        self,
        grid: GridLayout,
        todo: np.ndarray,
        focus: Callable[[], Rect | None] | None = None,
    ) -> None:
        self.rows, self.cols = (a.astype(np.int64) for a in np.nonzero(todo))
        self._taken = np.zeros(len(self.rows), dtype=bool)
        self._left = len(self.rows)
        xs, ys = grid.patch_starts()
        half = grid.patch_size / 2.0
        self._cx = xs[self.cols] + half
        self._cy = ys[self.rows] + half
        self._step = float(max(1, grid.stride))
        self._focus = focus
        self._rect: Rect | None = None
        self._order = np.arange(len(self.rows))
        self._pos = 0
        self._focus_failed = False

    def __len__(self) -> int:
        return self._left

    def take(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` (row, col) patches, the most wanted first; [] when none are left."""
        if self._left == 0 or n < 1:
            return []
        rect = self._current_focus()
        if rect != self._rect:
            self._reorder(rect)
        picked: list[int] = []
        order, taken = self._order, self._taken
        pos = self._pos
        while pos < len(order) and len(picked) < n:
            i = order[pos]
            pos += 1
            if not taken[i]:
                taken[i] = True
                picked.append(int(i))
        self._pos = pos
        self._left -= len(picked)
        return [(int(self.rows[i]), int(self.cols[i])) for i in picked]

    def _current_focus(self) -> Rect | None:
        if self._focus is None or self._focus_failed:
            return None
        try:
            rect = self._focus()
            if rect is None:
                return None
            x, y, w, h = (float(v) for v in rect)
        except Exception as exc:  # a viewer closing under us: fall back to row order
            log.warning("mapping order: the view cannot be read (%s); going row by row", exc)
            self._focus_failed = True
            return None
        return (x, y, w, h) if w > 0 and h > 0 else None

    def _reorder(self, rect: Rect | None) -> None:
        self._rect = rect
        left = np.flatnonzero(~self._taken)
        if rect is not None and len(left):
            x, y, w, h = rect
            cx, cy = self._cx[left], self._cy[left]
            dx = np.maximum(np.maximum(x - cx, cx - (x + w)), 0.0)
            dy = np.maximum(np.maximum(y - cy, cy - (y + h)), 0.0)
            ring = np.ceil(np.maximum(dx, dy) / self._step)
            left = left[np.argsort(ring, kind="stable")]
        self._order = left
        self._pos = 0


class BatchSizer:
    """Batch sizes for the engine: ``limit`` each on a fast device; on a slow one
    (``adaptive``) the first batches hold ``first`` patches and later ones as many as
    take about ``target`` seconds, growing at most twofold from one to the next and
    rounded down to a few sizes (1, 2, 3, 4, 6, 8, 12, 16, 24, ...)."""

    def __init__(self, limit: int, *, adaptive: bool, first: int = 4, target: float = 1.0) -> None:
        self.limit = max(1, int(limit))
        self.adaptive = adaptive
        self.target = target
        self._size = min(self.limit, max(1, first)) if adaptive else self.limit

    def next(self) -> int:
        return self._size

    def record(self, patches: int, seconds: float) -> None:
        """A batch of ``patches`` took ``seconds`` to classify."""
        if not self.adaptive or patches < 1 or seconds <= 0:
            return
        fits = int(self.target * patches / seconds)
        self._size = _step_down(min(self.limit, fits, 2 * max(self._size, patches)), self.limit)


def _step_down(n: int, limit: int) -> int:
    """The largest of 1, 2, 3, 4, 6, 8, 12, 16, 24... (or ``limit``) not above ``n``: few
    distinct batch shapes, so kernels prepared for one shape are reused."""
    if n >= limit:
        return limit
    size, power = 1, 1
    while True:
        for step in (power, power + power // 2):
            if step > n:
                return size
            size = step
        power *= 2
