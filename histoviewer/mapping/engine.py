"""The inference engine: classify every tissue patch of a slide into a TissueMap.

:func:`map_slide` is a plain function (no Qt, no global state) that a GUI worker
thread or the command line calls. How it is fast:

- background glass is found once on a thumbnail and never read or classified;
- patches are read in row bands by a small thread pool that prepares the next
  batches (into pinned memory on CUDA) while the network runs the current one;
- uint8 pixels travel to the device (a quarter of float32's bytes) and are resized
  and normalised there by :func:`histoviewer.model.preprocess`;
- the network runs channels-last under ``torch.inference_mode`` and, where the
  device supports it, ``torch.autocast`` in bf16/fp16
  (:func:`histoviewer.device.autocast_dtype`).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from histoviewer.device import autocast_dtype, resolve_device
from histoviewer.errors import DeviceError
from histoviewer.mapping.background import DEFAULT_MIN_TISSUE, background_patches
from histoviewer.mapping.grid import PatchGrid, make_grid
from histoviewer.mapping.patches import batches, read_patches
from histoviewer.mapping.tissue_map import (
    BACKGROUND,
    CLASSIFIED,
    PENDING,
    TissueMap,
    slide_identity,
)
from histoviewer.model import Classifier, preprocess
from histoviewer.tasks import CancelToken

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Batches read ahead of the one being classified.
_PREFETCH = 2
# Networks prepared for inference, per source network (one device each).
_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


@dataclass(frozen=True)
class MapProgress:
    """Where a mapping job stands.

    ``done`` of ``total`` patches to classify are classified; ``skipped`` background
    patches are not counted in ``total``. ``rate`` is patches per second since
    classification began, ``eta`` the seconds left (None before the first batch),
    ``elapsed`` the seconds since the job began (background detection included).
    """

    done: int
    total: int
    skipped: int
    rate: float
    eta: float | None
    elapsed: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class BatchResult:
    """Patches just classified: ``probs[i]`` (C,) belongs to (``rows[i]``, ``cols[i]``)."""

    rows: np.ndarray
    cols: np.ndarray
    probs: np.ndarray


def map_slide(
    slide,
    classifier: Classifier,
    *,
    stride: int | None = None,
    batch_size: int = 64,
    skip_background: bool = True,
    device: str | torch.device | None = None,
    progress: Callable[[MapProgress], None] | None = None,
    cancel: CancelToken | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    precision: str = "auto",
    min_tissue: float = DEFAULT_MIN_TISSUE,
    max_patches: int | None = None,
    read_workers: int | None = None,
) -> TissueMap:
    """Classify the patches of ``slide`` with ``classifier``; returns the TissueMap.

    ``stride`` is in model pixels (None: the model's patch size, no overlap). ``device``
    None uses the classifier's device; another device gets a private copy of the
    network (the classifier is left as it is). ``precision`` "auto" autocasts where
    the device has fast reduced precision, "fp32" never. With ``skip_background``
    glass patches get state BACKGROUND without being read. ``max_patches`` classifies
    only the first N patches in row-major order (benchmarks; the map is incomplete).

    ``progress`` is called before the first batch and after every batch,
    ``on_batch`` after every batch, both on the calling thread. When ``cancel`` is
    cancelled the map computed so far is returned with ``complete == False``.

    Raises SlideError when the slide is too small or cannot be read, DeviceError
    for an unusable device or when even one patch does not fit in GPU memory.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    started = time.perf_counter()
    dev = _normalise(classifier.device if device is None else resolve_device(device))
    info = classifier.info
    grid = make_grid(slide, info, stride)
    tmap = TissueMap.empty(
        grid,
        info.class_names,
        info.class_colors,
        mpp=slide.mpp,
        slide=slide_identity(slide),
        model=classifier.identity(),
    )
    if _cancelled(cancel):
        tmap.elapsed = time.perf_counter() - started
        return tmap
    if skip_background:
        tmap.state[background_patches(slide, grid, min_tissue=min_tissue)] = BACKGROUND
    todo = [(int(r), int(c)) for r, c in zip(*np.nonzero(tmap.state == PENDING), strict=True)]
    if max_patches is not None:
        todo = todo[: max(0, max_patches)]
    runner = _Runner(classifier, dev, precision, batch_size)
    _classify(
        slide,
        grid,
        tmap,
        todo,
        runner,
        batch_size,
        progress,
        cancel,
        on_batch,
        started,
        read_workers,
    )
    tmap.elapsed = time.perf_counter() - started
    tmap.complete = not np.any(tmap.state == PENDING)
    log.info(
        "mapped %d patches (%d background) in %.1f s%s",
        tmap.classified_count,
        tmap.background_count,
        tmap.elapsed,
        "" if tmap.complete else " (incomplete)",
    )
    return tmap


def _classify(
    slide,
    grid: PatchGrid,
    tmap: TissueMap,
    todo: list[tuple[int, int]],
    runner: _Runner,
    batch_size: int,
    progress: Callable[[MapProgress], None] | None,
    cancel: CancelToken | None,
    on_batch: Callable[[BatchResult], None] | None,
    started: float,
    read_workers: int | None,
) -> None:
    total = len(todo)
    skipped = tmap.background_count
    work = batches(todo, batch_size)
    compute_start = time.perf_counter()
    done = 0
    if progress:
        progress(MapProgress(0, total, skipped, 0.0, None, compute_start - started))
    if not work:
        return
    workers = read_workers or max(1, min(4, (os.cpu_count() or 2)))
    pinned = runner.device.type == "cuda"

    def load(batch: list[tuple[int, int]]) -> torch.Tensor:
        rows = [rc[0] for rc in batch]
        cols = [rc[1] for rc in batch]
        shape = (len(batch), grid.read_size, grid.read_size, 3)
        # Pinned (page-locked) memory lets the copy to the GPU run asynchronously.
        buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=pinned)
        read_patches(slide, grid, rows, cols, out=buffer.numpy())
        return buffer

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="histoviewer-read")
    try:
        pending: deque[Future] = deque()
        upcoming = iter(work)
        for batch in upcoming:
            pending.append(pool.submit(load, batch))
            if len(pending) > _PREFETCH:
                break
        for batch in work:
            if _cancelled(cancel):
                return
            pixels = pending.popleft().result()
            nxt = next(upcoming, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            probs = runner(pixels)
            rows = np.fromiter((rc[0] for rc in batch), dtype=np.int64, count=len(batch))
            cols = np.fromiter((rc[1] for rc in batch), dtype=np.int64, count=len(batch))
            tmap.probs[rows, cols] = probs
            tmap.state[rows, cols] = CLASSIFIED
            done += len(batch)
            if on_batch:
                on_batch(BatchResult(rows, cols, probs))
            if progress:
                now = time.perf_counter()
                rate = done / max(now - compute_start, 1e-9)
                eta = (total - done) / rate if rate > 0 else None
                progress(MapProgress(done, total, skipped, rate, eta, now - started))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Runner:
    """The network on one device: uint8 NHWC pixels in, float32 probabilities out.

    Halves its chunk size on CUDA out-of-memory and keeps the smaller size.
    """

    def __init__(
        self, classifier: Classifier, device: torch.device, precision: str, batch_size: int
    ) -> None:
        self.info = classifier.info
        self.device = device
        self.network = _network_on(classifier, device)
        self.dtype = precision_dtype(precision, device)
        self.chunk = batch_size

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        while True:
            try:
                return self._run(batch)
            except torch.cuda.OutOfMemoryError:
                if self.chunk <= 1:
                    raise DeviceError(
                        f"the {self.device} device ran out of memory classifying a single "
                        "patch; close other programs using it or map on the CPU (--device cpu)"
                    ) from None
                self.chunk = max(1, self.chunk // 2)
                log.warning("out of device memory: batch size lowered to %d", self.chunk)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    @torch.inference_mode()
    def _run(self, batch: torch.Tensor) -> np.ndarray:
        parts = []
        for start in range(0, len(batch), self.chunk):
            part = batch[start : start + self.chunk]
            part = part.to(self.device, non_blocking=True)
            x = preprocess(part, self.info, channels_last=True)
            if self.dtype is None:
                logits = self.network(x)
            else:
                with torch.autocast(self.device.type, dtype=self.dtype):
                    logits = self.network(x)
            parts.append(torch.softmax(logits.float(), dim=1).cpu())
        return torch.cat(parts).numpy()


def precision_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision name on ``device`` (None: float32)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        return autocast_dtype(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        raise DeviceError("fp16 inference is not supported on the CPU (use bf16 or fp32)")
    return dtype


def _network_on(classifier: Classifier, device: torch.device) -> torch.nn.Module:
    """The classifier's network prepared for inference on ``device`` (cached).

    Batch normalisation is folded into the preceding convolutions: in eval mode that
    is the same function, and it spares a full pass over every activation (under CPU
    bf16 autocast it doubles the speed, as batch norm would run in float32). The
    prepared network is a private copy; the caller keeps using its classifier.
    """
    net = classifier.network
    key = (classifier.fingerprint, str(device))
    with _prepared_lock:
        cached = _prepared.get(net)
        if cached is not None and cached[0] == key:
            return cached[1]
    prepared = _fold_batchnorm(net).to(device=device, memory_format=torch.channels_last).eval()
    with _prepared_lock:
        _prepared[net] = (key, prepared)
    return prepared


def _fold_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(net.eval(), inplace=False)
    except Exception as exc:  # not traceable: run it as it is, only slower
        log.info("batch norm not folded (%s: %s)", type(exc).__name__, exc)
        return copy.deepcopy(net).eval()


def _normalise(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _cancelled(cancel: CancelToken | None) -> bool:
    return cancel is not None and cancel.cancelled
