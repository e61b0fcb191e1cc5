"""One training epoch and one evaluation pass, with all tiles resident on the device.

The tiles live on the device as one uint8 tensor (a quarter of float32's bytes: the
5000 Kather tiles take 340 MB). A batch is gathered by index, augmented and
preprocessed there, so no data loader, worker process or host-to-device copy stands
between the GPU and its next batch. Values are read back (a device sync) only when a
progress event is due, not every batch.

Under torchrun (a :class:`~histoviewer.distributed.DistContext` with several processes)
the network is wrapped in DistributedDataParallel. Every process holds all tiles and
draws the same seeded permutation each epoch; of every global batch of
``config.batch_size`` rows, process ``r`` trains on rows ``r, r + P, r + 2P, ...``
(P processes), so together they see exactly the single-process batches. Each process
scales its summed loss by ``P / global batch``; DDP's gradient average then equals the
gradient of the global batch's mean loss, even for an uneven last batch. BatchNorm
uses each process's share for its batch statistics (``sync_batchnorm`` pools them on
GPUs); the running statistics are rank 0's, which DDP broadcasts before every forward.
Evaluation is not sharded: the trainer runs it on rank 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histoviewer.device import autocast_dtype
from histoviewer.distributed import DistContext
from histoviewer.errors import DeviceError
from histoviewer.model import ModelInfo, preprocess
from histoviewer.tasks import CancelToken
from histoviewer.training.augment import Augmenter
from histoviewer.training.config import TrainConfig

#: Seconds between batch progress reports (each costs a device sync).
REPORT_INTERVAL_S = 0.25


@dataclass
class BatchStats:
    """Running figures of the current pass, handed to the batch callback."""

    phase: str  # "train" or "val" / "test"
    batch: int  # batches done
    batches: int
    loss: float
    acc: float
    images_per_s: float
    seconds: float


@dataclass
class EpochStats:
    """One epoch's figures over all processes: every process gets the same numbers."""

    loss: float
    acc: float
    seconds: float
    images_per_s: float
    lr: float
    images: int = 0  # training images seen this epoch (all processes together)


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing)
    acc: float
    y_true: np.ndarray
    y_pred: np.ndarray
    seconds: float
    images_per_s: float


BatchCallback = Callable[[BatchStats], None]


def make_optimizer(config: TrainConfig, network: nn.Module) -> torch.optim.Optimizer:
    """The configured optimiser over ``network``'s parameters (already on their device)."""
    params = list(network.parameters())
    # One fused kernel for all parameters instead of several per tensor: on a GPU the
    # per-tensor launches of ResNet-50's 161 parameters cost more than the math.
    fused = {"fused": True} if params and params[0].device.type == "cuda" else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate after ``step`` scheduler steps, as a fraction of ``config.lr``.

    "step": ``gamma ** (epoch // step_size)`` (StepLR's rates; one step per epoch);
    "cosine": a linear warm-up over ``warmup_epochs``, then a cosine decay to
    ``min_lr_ratio`` that ends with the run (one step per batch), so the rate at any step
    depends on the run's length (``config.epochs``); "none": 1.
    """
    if config.scheduler == "step":
        step_size, gamma = config.step_size, config.gamma
        return lambda epoch: gamma ** (epoch // step_size)
    if config.scheduler == "none":
        return lambda step: 1.0
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, config.warmup_epochs * steps_per_epoch)
    floor = config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, done: int = 0
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule of :func:`lr_factor` (stepped per epoch for "step", else per batch).

    ``done``: scheduler steps already taken (a resumed run, its optimizer state loaded):
    the scheduler starts there and the optimizer's rate is set to that step's. Every rate
    is computed from the step number, never from the previous rate, so a resumed run
    (and one extended to more epochs) gets exactly the rates of a run of
    ``config.epochs`` epochs trained without a break.
    """
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", config.lr)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config, steps_per_epoch), last_epoch=done - 1
    )


def steps_per_epoch(n_train: int, config: TrainConfig, processes: int = 1) -> int:
    """Optimiser steps per epoch over ``n_train`` images (the same on every process)."""
    return len(_batch_bounds(n_train, config.batch_size, config.drop_last, processes))


def shard(rows: torch.Tensor, rank: int, processes: int) -> torch.Tensor:
    """Process ``rank``'s share of a global batch: every ``processes``-th row from ``rank``.

    The shares of all ranks are disjoint and together are exactly ``rows``.
    """
    return rows if processes == 1 else rows[rank::processes]


def _batch_bounds(
    n: int, batch_size: int, drop_last: bool, processes: int = 1
) -> list[tuple[int, int]]:
    bounds = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    if len(bounds) > 1:
        last = bounds[-1][1] - bounds[-1][0]
        # BatchNorm in training mode cannot normalise a single image, so every process
        # needs at least two images of the final batch.
        if last < 2 * processes or (drop_last and last < batch_size):
            bounds.pop()
    return bounds


class Engine:
    """Network, optimiser, scheduler and the device-resident tiles of one training run."""

    def __init__(
        self,
        config: TrainConfig,
        network: nn.Module,
        info: ModelInfo,
        device: torch.device,
        images: torch.Tensor,
        labels: torch.Tensor,
        n_train: int,
        dist: DistContext | None = None,
    ) -> None:
        self.config = config
        self.info = info
        self.device = device
        self.dist = dist or DistContext(device=device)
        processes = self.dist.world_size
        if processes > 1 and config.sync_batchnorm:
            if device.type != "cuda":
                raise DeviceError(
                    "sync_batchnorm needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on "
                    f"{device.type.upper()} processes; train without it"
                )
            network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        # The bare network: what is evaluated, checkpointed and saved (no "module." prefix).
        self.network = network.to(device=device, memory_format=fmt)
        if device.type == "cuda":
            # Fixed input shapes: let cuDNN time its algorithms once and keep the fastest.
            torch.backends.cudnn.benchmark = True
        trained: nn.Module = self.network
        if processes > 1:
            trained = nn.parallel.DistributedDataParallel(
                self.network, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(trained) if config.compile else trained
        )
        # Evaluation runs on one process: through the bare network, since DDP's forward
        # would wait for the other processes.
        self.eval_forward: Callable[[torch.Tensor], torch.Tensor] = (
            self.forward if processes == 1 else self.network
        )
        self.images = images
        self.labels = labels
        self.amp_dtype = _amp_dtype(config, device)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.amp_dtype == torch.float16 and device.type == "cuda"
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.criterion_sum = nn.CrossEntropyLoss(
            label_smoothing=config.label_smoothing, reduction="sum"
        )
        self.augment = Augmenter(config)
        self.optimizer = make_optimizer(config, self.network)
        self.steps_per_epoch = steps_per_epoch(n_train, config, processes)
        self.scheduler = make_scheduler(config, self.optimizer, self.steps_per_epoch)
        self.per_iteration = config.scheduler != "step"

    def resume_schedule(self, steps: int) -> None:
        """Continue the learning-rate schedule after ``steps`` scheduler steps (call it
        after loading the optimizer state of a resumed run).

        The scheduler is rebuilt for this run's length rather than loaded: a saved
        scheduler holds the rates of the saved run's length, and a run extended to more
        epochs must follow the schedule of a run that long from the resume point on.
        """
        self.scheduler = make_scheduler(self.config, self.optimizer, self.steps_per_epoch, steps)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def epoch_generator(self, epoch: int, stream: int = 0) -> torch.Generator:
        """The one source of randomness of an epoch (order and augmentation), seeded by
        ``seed + epoch``: a resumed epoch replays exactly. ``stream`` > 0 gives another
        independent sequence (each process's augmentation under torchrun)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.config.seed + epoch + stream * 1_000_003)
        return generator

    def train_one_epoch(
        self,
        epoch: int,
        indices: torch.Tensor,
        on_batch: BatchCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> EpochStats:
        """Train over ``indices`` (tile rows, on the device) once; ``epoch`` counts from 0.

        Raises Cancelled at the first batch boundary after ``cancel`` is set; the model is
        then mid-epoch and the caller must not checkpoint it. Under torchrun every process
        calls this with the same ``indices`` and trains on its share of each batch; the
        returned figures are summed over all processes (pass no ``cancel`` there: one
        process stopping alone would leave the others waiting).
        """
        cfg = self.config
        rank, processes = self.dist.rank, self.dist.world_size
        self.network.train()
        generator = self.epoch_generator(epoch)
        # The same permutation on every process (same seed, same device type).
        order = indices[torch.randperm(len(indices), generator=generator, device=self.device)]
        if processes > 1:
            generator = self.epoch_generator(epoch, stream=1 + rank)
        bounds = _batch_bounds(len(order), cfg.batch_size, cfg.drop_last, processes)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        start = last_report = time.perf_counter()
        for b, (lo, hi) in enumerate(bounds):
            if cancel is not None:
                cancel.raise_if_cancelled()
            rows = shard(order[lo:hi], rank, processes)
            y = self.labels[rows]
            x = preprocess(
                self.augment(self.images[rows], generator),
                self.info,
                channels_last=cfg.channels_last,
            )
            with self._autocast():
                logits = self.forward(x)
            n = len(rows)
            if processes == 1:
                loss = self.criterion(logits.float(), y)
                batch_loss_sum = loss.detach() * n
            else:
                # DDP averages gradients over processes: scaling this share's summed loss
                # by P / global batch makes that average the global batch's mean gradient.
                summed = self.criterion_sum(logits.float(), y)
                loss = summed * (processes / (hi - lo))
                batch_loss_sum = summed.detach()
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.per_iteration:
                self.scheduler.step()
            seen += n
            loss_sum += batch_loss_sum
            correct += (logits.detach().argmax(1) == y).sum()
            now = time.perf_counter()
            if on_batch is not None and (
                now - last_report >= REPORT_INTERVAL_S or b + 1 == len(bounds)
            ):
                last_report = now
                # This process's running figures; the speed counts all processes.
                stats = self._stats("train", b + 1, len(bounds), loss_sum, correct, seen, start)
                stats.images_per_s *= processes
                on_batch(stats)
        if not self.per_iteration:
            self.scheduler.step()  # after the optimizer, once per epoch (the recipe's was before)
        # .item() syncs the device: the timing below is real.
        total, hits, seen_all = self.dist.all_reduce_sum(
            [loss_sum.item(), float(correct.item()), float(seen)]
        )
        seconds = time.perf_counter() - start
        return EpochStats(
            loss=total / max(1.0, seen_all),
            acc=hits / max(1.0, seen_all),  # over samples, not a mean of batch means
            seconds=seconds,
            images_per_s=seen_all / seconds if seconds > 0 else 0.0,
            lr=lr,
            images=int(seen_all),
        )

    def _stats(
        self,
        phase: str,
        batch: int,
        batches: int,
        loss_sum: torch.Tensor,
        correct: torch.Tensor,
        seen: int,
        start: float,
    ) -> BatchStats:
        loss, hits = loss_sum.item(), int(correct.item())
        seconds = time.perf_counter() - start
        return BatchStats(
            phase,
            batch,
            batches,
            loss / max(1, seen),
            hits / max(1, seen),
            seen / seconds if seconds > 0 else 0.0,
            seconds,
        )

    @torch.inference_mode()
    def evaluate(
        self,
        indices: torch.Tensor,
        phase: str = "val",
        on_batch: BatchCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> EvalResult:
        """Mean cross-entropy, accuracy and predictions over ``indices``, in eval mode.

        Runs on this process alone (no collective calls)."""
        self.network.eval()
        size = self.config.eval_batch_size or 2 * self.config.batch_size
        bounds = [(s, min(len(indices), s + size)) for s in range(0, len(indices), size)]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        preds = []
        seen = 0
        start = last_report = time.perf_counter()
        for b, (lo, hi) in enumerate(bounds):
            if cancel is not None:
                cancel.raise_if_cancelled()
            rows = indices[lo:hi]
            y = self.labels[rows]
            x = preprocess(self.images[rows], self.info, channels_last=self.config.channels_last)
            with self._autocast():
                logits = self.eval_forward(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            pred = logits.argmax(1)
            correct += (pred == y).sum()
            preds.append(pred)
            seen += hi - lo
            now = time.perf_counter()
            if on_batch is not None and (
                now - last_report >= REPORT_INTERVAL_S or b + 1 == len(bounds)
            ):
                last_report = now
                on_batch(self._stats(phase, b + 1, len(bounds), loss_sum, correct, seen, start))
        y_pred = torch.cat(preds).cpu().numpy() if preds else np.zeros(0, dtype=np.int64)
        seconds = time.perf_counter() - start
        return EvalResult(
            loss=loss_sum.item() / max(1, seen),
            acc=int(correct.item()) / max(1, seen),
            y_true=self.labels[indices].cpu().numpy(),
            y_pred=y_pred,
            seconds=seconds,
            images_per_s=seen / seconds if seconds > 0 else 0.0,
        )


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not config.amp:
        return None
    dtype = autocast_dtype(device)
    # float16 training needs loss scaling, which only CUDA's GradScaler provides here.
    if dtype == torch.float16 and device.type != "cuda":
        return None
    return dtype
