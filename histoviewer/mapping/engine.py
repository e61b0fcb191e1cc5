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
from histoviewer.mapping.cache import is_current
from histoviewer.mapping.grid import PatchGrid, make_grid
from histoviewer.mapping.patches import read_patches
from histoviewer.mapping.schedule import BatchSizer, PatchQueue, region_mask
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
# "auto": ONNX Runtime on a CPU without native bf16 (faster there than PyTorch), PyTorch
# everywhere else; see choose_backend.
BACKENDS = ("auto", "torch", "onnxruntime")
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


@dataclass(frozen=True)
class BackgroundFound:
    """Patches found to be empty glass (``rows[i]``, ``cols[i]``): never classified."""

    rows: np.ndarray
    cols: np.ndarray


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
    on_background: Callable[[BackgroundFound], None] | None = None,
    precision: str = "auto",
    min_tissue: float = DEFAULT_MIN_TISSUE,
    max_patches: int | None = None,
    read_workers: int | None = None,
    backend: str = "auto",
    resume: TissueMap | None = None,
    region: tuple[int, int, int, int] | None = None,
    focus: Callable[[], tuple[float, float, float, float] | None] | None = None,
    tta: bool = False,
) -> TissueMap:
    """Classify the patches of ``slide`` with ``classifier``; returns the TissueMap.

    ``stride`` is in model pixels (None: the model's patch size, no overlap). ``device``
    None uses the classifier's device; another device gets a private copy of the
    network (the classifier is left as it is). ``precision`` "auto" autocasts where
    the device has fast reduced precision, "fp32" never. ``backend`` chooses what runs
    the network (:func:`choose_backend`). With ``skip_background`` glass patches get
    state BACKGROUND without being read. ``max_patches`` classifies only the first N
    patches in row-major order (benchmarks; the map is incomplete).

    ``resume`` continues a partial map of the same slide, model and grid: its
    classified and background patches are kept, only its pending ones are classified,
    and a new map is returned (``resume`` is left as it is). ``region`` (level-0 x, y,
    width, height) classifies only the patches overlapping it; the others stay
    pending. ``focus`` returns the level-0 rectangle the user is looking at (or None):
    it is called before each batch is chosen, on the calling thread, and the patches
    in it go first, then outward; it must be cheap and thread-safe.

    ``tta`` (test-time augmentation) classifies each patch in its 8 flips and 90-degree
    rotations (8x the compute): the map's probabilities are their mean and its
    ``spread`` how far they disagree (see :class:`TtaRunner`).

    ``progress`` is called before the first batch and after every batch,
    ``on_batch`` after every batch, both on the calling thread. On a CPU batches are
    sized to take about a second (the first few hold 4 patches), so both come often.
    ``on_background`` is called once, before the first batch, with the patches found
    to be glass (not when none are).
    ``MapProgress.done`` and ``total`` include the patches ``resume`` had classified
    in the job's scope. When ``cancel`` is cancelled the map computed so far is
    returned with ``complete == False``.

    Raises SlideError when the slide is too small or cannot be read, DeviceError
    for an unusable device or when even one patch does not fit in GPU memory,
    ValueError for a ``resume`` map of another slide, model or grid, or a ``region``
    outside the slide.
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
    tmap.settings = {
        "stride_model_px": grid.stride_model,
        "skip_background": bool(skip_background),
        "min_tissue": float(min_tissue),
        "tta": bool(tta),
        "precision": precision,
        "backend": backend,
    }
    if tta:
        tmap.spread = np.full(tmap.state.shape, np.nan, dtype=np.float32)
    earlier = 0.0
    if resume is not None:
        check_resumable(resume, tmap)
        if (resume.spread is not None) != tta:
            raise ValueError("the partial map was made with another test-time augmentation")
        tmap.probs[...] = resume.probs
        tmap.state[...] = resume.state
        if tta:
            tmap.spread[...] = resume.spread
        tmap.warnings = list(resume.warnings)
        earlier = resume.elapsed
    scope = np.ones(tmap.state.shape, dtype=bool)
    if region is not None:
        scope = region_mask(grid, region)
    if _cancelled(cancel):
        tmap.elapsed = earlier + time.perf_counter() - started
        tmap.complete = not np.any(tmap.state == PENDING)
        return tmap
    if skip_background:
        glass = background_patches(slide, grid, min_tissue=min_tissue) & (tmap.state == PENDING)
        tmap.state[glass] = BACKGROUND
        if on_background is not None and glass.any():
            rows, cols = np.nonzero(glass)
            on_background(BackgroundFound(rows, cols))
    todo = scope & (tmap.state == PENDING)
    if max_patches is not None:
        keep = np.flatnonzero(todo)[: max(0, max_patches)]
        todo = np.zeros_like(todo)
        todo.flat[keep] = True
    before = int(np.count_nonzero(scope & (tmap.state == CLASSIFIED)))
    runner = make_runner(classifier, dev, precision, batch_size, backend)
    # What "auto" came to on this machine: the device, backend and precision that ran.
    dtype = getattr(runner, "dtype", None)
    tmap.settings.update(
        device=str(runner.device),
        ran_with=f"{runner.name} {_DTYPE_NAMES.get(dtype, 'fp32')}",
    )
    if tta:
        runner = TtaRunner(runner)
    queue = PatchQueue(grid, todo, focus)
    sizer = BatchSizer(batch_size, adaptive=runner.device.type == "cpu")
    _classify(
        slide,
        grid,
        tmap,
        queue,
        sizer,
        runner,
        before,
        progress,
        cancel,
        on_batch,
        started,
        read_workers,
    )
    tmap.elapsed = earlier + time.perf_counter() - started
    tmap.complete = not np.any(tmap.state == PENDING)
    log.info(
        "mapped %d patches (%d background) in %.1f s%s",
        tmap.classified_count,
        tmap.background_count,
        tmap.elapsed,
        "" if tmap.complete else " (incomplete)",
    )
    return tmap


def check_resumable(partial: TissueMap, fresh: TissueMap) -> None:
    """Raise ValueError unless ``partial`` can be continued as ``fresh`` (an empty map
    of the slide, model and grid about to be mapped)."""
    what = None
    if (partial.rows, partial.cols) != (fresh.rows, fresh.cols) or (
        partial.patch_size,
        partial.stride,
        partial.origin,
        partial.extent,
    ) != (fresh.patch_size, fresh.stride, fresh.origin, fresh.extent):
        what = "another patch grid (slide size or stride)"
    elif partial.class_names != fresh.class_names:
        what = "other classes"
    elif partial.model.get("fingerprint") not in (None, fresh.model.get("fingerprint")):
        what = "another model"
    elif partial.slide and not is_current(partial, fresh.slide, partial.model.get("fingerprint")):
        what = "another slide file (or the file has changed)"
    if what is not None:
        raise ValueError(f"the partial map cannot be continued: it was made with {what}")


def _classify(
    slide,
    grid: PatchGrid,
    tmap: TissueMap,
    queue: PatchQueue,
    sizer: BatchSizer,
    runner,
    before: int,
    progress: Callable[[MapProgress], None] | None,
    cancel: CancelToken | None,
    on_batch: Callable[[BatchResult], None] | None,
    started: float,
    read_workers: int | None,
) -> None:
    total = before + len(queue)
    skipped = tmap.background_count
    compute_start = time.perf_counter()
    done = 0
    if progress:
        progress(MapProgress(before, total, skipped, 0.0, None, compute_start - started))
    if not len(queue):
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
        # Batches are chosen as they are submitted, so a moved focus counts from the
        # batch after those already being read.
        pending: deque[tuple[list[tuple[int, int]], Future]] = deque()

        def submit() -> None:
            batch = queue.take(sizer.next())
            if batch:
                pending.append((batch, pool.submit(load, batch)))

        for _ in range(_PREFETCH + 1):
            submit()
        while pending:
            if _cancelled(cancel):
                return
            batch, future = pending.popleft()
            pixels = future.result()
            submit()
            t0 = time.perf_counter()
            probs = runner(pixels)
            sizer.record(len(batch), time.perf_counter() - t0)
            rows = np.fromiter((rc[0] for rc in batch), dtype=np.int64, count=len(batch))
            cols = np.fromiter((rc[1] for rc in batch), dtype=np.int64, count=len(batch))
            tmap.probs[rows, cols] = probs
            if tmap.spread is not None:
                tmap.spread[rows, cols] = runner.last_spread
            tmap.state[rows, cols] = CLASSIFIED
            done += len(batch)
            if on_batch:
                on_batch(BatchResult(rows, cols, probs))
            if progress:
                now = time.perf_counter()
                rate = done / max(now - compute_start, 1e-9)
                eta = (total - before - done) / rate if rate > 0 else None
                progress(MapProgress(before + done, total, skipped, rate, eta, now - started))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def choose_backend(backend: str, device: torch.device, precision: str) -> str:
    """The inference backend ``backend`` ("auto", "torch", "onnxruntime") resolves to.

    "auto" is ONNX Runtime on a CPU unless PyTorch's bf16 will be used there (a CPU
    with native bf16 and precision "auto" or "bf16", where PyTorch is faster), and
    when onnxruntime is not installed; PyTorch on every other device. Raises
    DeviceError for ONNX Runtime asked for on another device than the CPU or in a
    reduced precision, or when it is not installed.
    """
    from histoviewer.mapping import onnx_backend

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise DeviceError(
                f"the onnxruntime backend runs on the CPU only, not on {device} "
                "(use --backend torch, or --device cpu)"
            )
        if precision not in ("auto", "fp32"):
            raise DeviceError(
                f"the onnxruntime backend computes in float32; --precision {precision} "
                "needs --backend torch"
            )
        if not onnx_backend.available():
            raise DeviceError("the onnxruntime backend is not installed (pip install onnxruntime)")
        return "onnxruntime"
    if device.type != "cpu" or precision_dtype(precision, device) is not None:
        return "torch"
    return "onnxruntime" if onnx_backend.available() else "torch"


def make_runner(
    classifier: Classifier,
    device: torch.device,
    precision: str,
    batch_size: int,
    backend: str = "auto",
):
    """A callable for ``backend`` on ``device``: uint8 NHWC pixels (a CPU tensor) in,
    float32 probabilities (N, C) out; it has ``device``, ``name`` and ``chunk``.

    "auto" falls back to PyTorch for a network that does not export to ONNX."""
    if choose_backend(backend, device, precision) == "onnxruntime":
        from histoviewer.mapping.onnx_backend import OnnxRunner

        try:
            return OnnxRunner(classifier, batch_size=batch_size)
        except DeviceError as exc:
            if backend != "auto":
                raise
            log.warning("%s; using the torch backend", exc)
    return _Runner(classifier, device, precision, batch_size)


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


class TtaRunner:
    """Test-time augmentation around a runner: each patch in its 8 dihedral views (the
    identity, 3 rotations by 90 degrees, and the mirror image of each), one batch of 8N.

    Returns their mean probabilities; ``last_spread`` holds, per patch of the last
    batch, the mean total-variation distance of the views from that mean (half the summed
    absolute differences, 0 when all 8 agree, at most 1). Tissue has no orientation, so
    a patch whose views disagree is one the model reads unreliably.
    """

    def __init__(self, runner) -> None:
        self.runner = runner
        self.name = f"{runner.name} + tta"
        self.device = runner.device
        self.last_spread = np.zeros(0, dtype=np.float32)

    @property
    def chunk(self) -> int:
        return self.runner.chunk

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        views = [torch.rot90(batch, k, dims=(1, 2)) for k in range(4)]
        views += [torch.flip(v, dims=(2,)) for v in views]
        probs = self.runner(torch.cat(views).contiguous())
        probs = probs.reshape(8, len(batch), -1)
        mean = probs.mean(axis=0)
        self.last_spread = (0.5 * np.abs(probs - mean).sum(axis=-1)).mean(axis=0)
        self.last_spread = self.last_spread.astype(np.float32)
        return mean.astype(np.float32)


class _Runner:
    """The network on one device: uint8 NHWC pixels in, float32 probabilities out.

    Halves its chunk size on CUDA out-of-memory and keeps the smaller size.
    """

    def __init__(
        self, classifier: Classifier, device: torch.device, precision: str, batch_size: int
    ) -> None:
        self.name = "torch"
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
                self.chunk = max(1, min(self.chunk, len(batch)) // 2)
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
    prepared = fold_batchnorm(net).to(device=device, memory_format=torch.channels_last).eval()
    with _prepared_lock:
        _prepared[net] = (key, prepared)
    return prepared


def fold_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
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
