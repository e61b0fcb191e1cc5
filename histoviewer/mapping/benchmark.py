"""Engine versus recipe-style baseline, on the same patches in the same process.

The baseline is written the way the reference tutorial classifies images: a PIL image
of the whole slide, one ``crop`` per patch, torchvision ``Resize``/``ToTensor``/
``Normalize`` on the CPU, a ``DataLoader`` (no worker processes) and the float32
network in eager mode under ``torch.no_grad``. The engine is :func:`map_slide` on the
same slide file, once per inference backend (PyTorch, and ONNX Runtime on the CPU).
All load the same random-initialised weights from files (the baseline from a recipe
``{'state_dict': ...}`` ``.pth.tar``, the engine from the project's safetensors
format) and classify the first N patches of the same grid.

Reported per side: model load and slide open times, the first batch (warm-up,
network preparation, ONNX export) and the steady rate after it; per engine side the
ratio of steady rates to the baseline, the share of patches given the same class and
the largest probability difference, and the backend's network alone on preprocessed
batches (no reading), with the end-to-end rate as a share of it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from histoviewer.device import resolve_device
from histoviewer.mapping.engine import (
    BatchResult,
    choose_backend,
    make_runner,
    map_slide,
    precision_dtype,
)
from histoviewer.mapping.grid import make_grid
from histoviewer.mapping.patches import read_patches
from histoviewer.mapping.tissue_map import CLASSIFIED
from histoviewer.model import preprocess

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Timings of one side of the benchmark (seconds; rates in patches per second).

    ``backend`` is "" for the baseline. ``model_rate`` (engine sides) is the backend's
    network alone on preprocessed batches of the sizes the run used (no reading).
    """

    name: str
    backend: str = ""
    precision: str = "float32"
    patches: int = 0
    model_load: float = 0.0
    slide_open: float = 0.0
    first_batch: float = 0.0
    first_batch_patches: int = 0
    total: float = 0.0  # from the start of classification to the last batch
    cpu_first_batch: float = 0.0  # process CPU seconds (all threads) for the first batch
    cpu_total: float = 0.0  # process CPU seconds for the whole classification
    batch_sizes: list[int] = field(default_factory=list)
    model_rate: float = 0.0
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    @property
    def steady_rate(self) -> float:
        """Patches per second after the first batch (the whole run if it had one batch)."""
        rest = self.patches - self.first_batch_patches
        span = self.total - self.first_batch
        if rest <= 0 or span <= 0:
            return self.overall_rate
        return rest / span

    @property
    def overall_rate(self) -> float:
        return self.patches / self.total if self.total > 0 else 0.0

    @property
    def steady_cpu_rate(self) -> float:
        """Patches per CPU-second after the first batch.

        Less sensitive than wall time to other programs sharing the CPU: the figure to
        compare when the machine is busy.
        """
        rest = self.patches - self.first_batch_patches
        span = self.cpu_total - self.cpu_first_batch
        if rest <= 0 or span <= 0:
            return self.patches / self.cpu_total if self.cpu_total > 0 else 0.0
        return rest / span

    @property
    def model_share(self) -> float:
        """The steady end-to-end rate as a fraction of :attr:`model_rate`."""
        return self.steady_rate / self.model_rate if self.model_rate > 0 else float("nan")


@dataclass
class BenchmarkResult:
    """The baseline and the engine sides (one per backend) on the same patches."""

    device: str
    arch: str
    input_size: int
    batch_size: int
    slide_size: int
    threads: int
    baseline: Run
    engines: list[Run]

    def engine(self, backend: str) -> Run:
        """The engine side that ran ``backend`` ("torch", "onnxruntime")."""
        for run in self.engines:
            if run.backend == backend:
                return run
        raise KeyError(f"no engine side ran the {backend} backend")

    def speedup(self, run: Run, against: Run | None = None) -> float:
        """Steady rate of ``run`` over that of ``against`` (default: the baseline)."""
        base = (against or self.baseline).steady_rate
        return run.steady_rate / base if base > 0 else float("nan")

    def cpu_speedup(self, run: Run, against: Run | None = None) -> float:
        base = (against or self.baseline).steady_cpu_rate
        return run.steady_cpu_rate / base if base > 0 else float("nan")

    def agreement(self, run: Run, against: Run | None = None) -> float:
        """Share of patches ``run`` and ``against`` (the baseline) put in the same class."""
        a, b = (against or self.baseline).labels, run.labels
        return float(np.mean(a == b)) if len(a) and len(a) == len(b) else float("nan")

    def max_prob_diff(self, run: Run, against: Run | None = None) -> float:
        """Largest difference of any class probability of any patch."""
        a, b = (against or self.baseline).probs, run.probs
        return float(np.abs(a - b).max()) if a.size and a.shape == b.shape else float("nan")

    def report(self) -> str:
        patches = self.engines[0].patches if self.engines else self.baseline.patches
        lines = [
            f"device: {self.device} ({self.threads} CPU threads), {self.arch} at "
            f"{self.input_size} px, batches of up to {self.batch_size}, synthetic "
            f"{self.slide_size} x {self.slide_size} strip TIFF, {patches} patches",
        ]
        width = max(len(run.name) for run in (self.baseline, *self.engines))
        for run in (self.baseline, *self.engines):
            lines.append(
                f"{run.name:<{width}} {run.steady_rate:8.1f} patches/s steady "
                f"({run.overall_rate:.1f} overall, {run.steady_cpu_rate:.2f} per "
                f"CPU-second), {run.precision}; model load {run.model_load:.2f} s, "
                f"slide open {run.slide_open:.2f} s, first batch {run.first_batch:.2f} s "
                f"({run.first_batch_patches} patches), total {run.total:.1f} s"
            )
        for run in self.engines:
            lines.append(
                f"{run.name}: {self.speedup(run):.2f}x the baseline (steady patches/s; "
                f"{self.cpu_speedup(run):.2f}x per CPU-second); agreement "
                f"{100 * self.agreement(run):.2f} % same class, largest probability "
                f"difference {self.max_prob_diff(run):.5f}"
            )
            lines.append(
                f"{run.name}: network alone {run.model_rate:.1f} patches/s "
                f"({run.precision}, preprocessed batches of the run's last sizes); end to end "
                f"{100 * run.model_share:.0f} % of it"
            )
        for i, first in enumerate(self.engines):
            for other in self.engines[i + 1 :]:
                lines.append(
                    f"{other.name} / {first.name}: {self.speedup(other, first):.2f}x "
                    f"steady patches/s; agreement {100 * self.agreement(other, first):.2f} "
                    f"% same class, largest probability difference "
                    f"{self.max_prob_diff(other, first):.5f}"
                )
        return "\n".join(lines)


#: At most this many patches per pass when timing a network alone.
MODEL_RATE_PATCHES = 256

#: ``backend`` choices of :func:`run_benchmark`: "all" runs every backend that can run
#: on the device in the precision (onnxruntime only on the CPU, in float32), "auto" the
#: one the engine would choose.
ENGINE_SIDES = ("all", "auto", "torch", "onnxruntime")


def engine_backends(backend: str, device: torch.device, precision: str) -> list[str]:
    """The backends the benchmark's engine sides run, in order.

    Raises DeviceError for a backend that cannot run here (engine.choose_backend).
    """
    from histoviewer.mapping import onnx_backend

    if backend not in ENGINE_SIDES:
        raise ValueError(f"backend must be one of {ENGINE_SIDES}, not {backend!r}")
    if backend != "all":
        return [choose_backend(backend, device, precision)]
    sides = ["torch"]
    if device.type == "cpu" and precision in ("auto", "fp32") and onnx_backend.available():
        sides.append("onnxruntime")
    return sides


def run_benchmark(
    *,
    device: str = "auto",
    arch: str = "resnet50",
    input_size: int = 224,
    batch_size: int = 64,
    patches: int | None = None,
    slide_size: int = 5000,
    precision: str = "auto",
    backend: str = "all",
    seed: int = 0,
    workdir: str | Path | None = None,
    say: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Time the baseline and the engine on the first ``patches`` patches of a synthetic slide.

    The engine runs once per backend of ``backend`` (:data:`ENGINE_SIDES`). Files
    (slide, checkpoints) go to a temporary folder inside ``workdir`` (or the system's),
    removed afterwards. ``say`` receives a line as each stage starts.
    """
    say = say or log.info
    from histoviewer.model import ModelInfo, build_network, save_model
    from histoviewer.slide.synthetic import write_strip_tiff

    dev = resolve_device(device)
    backends = engine_backends(backend, dev, precision)
    info = ModelInfo.recipe(arch, input_size=input_size, name=f"benchmark {arch}")
    with tempfile.TemporaryDirectory(prefix="histoviewer-bench-", dir=workdir) as tmp:
        tmp_path = Path(tmp)
        slide_path = tmp_path / "synthetic.tif"
        say(f"writing a synthetic {slide_size} x {slide_size} slide")
        started = time.perf_counter()
        write_strip_tiff(slide_path, width=slide_size, height=slide_size, seed=seed)
        log.info("wrote %s in %.1f s", slide_path, time.perf_counter() - started)
        torch.manual_seed(seed)
        network = build_network(arch, info.num_classes).eval()
        recipe_ckpt = tmp_path / "model.pth.tar"
        torch.save({"state_dict": network.state_dict()}, recipe_ckpt)
        model_file = tmp_path / "model.safetensors"
        save_model(model_file, network, info)
        del network

        say("running the recipe-style baseline")
        baseline = _run_baseline(slide_path, recipe_ckpt, info, dev, batch_size, patches)
        say(f"baseline: {baseline.steady_rate:.1f} patches/s")
        engines = []
        for name in backends:
            say(f"running the engine with the {name} backend")
            run = _run_engine(slide_path, model_file, dev, batch_size, patches, precision, name)
            say(
                f"{name}: {run.steady_rate:.1f} patches/s (network alone "
                f"{run.model_rate:.1f} patches/s)"
            )
            engines.append(run)

    return BenchmarkResult(
        device=str(dev),
        arch=arch,
        input_size=input_size,
        batch_size=batch_size,
        slide_size=slide_size,
        threads=torch.get_num_threads(),
        baseline=baseline,
        engines=engines,
    )


def _patch_boxes(slide_path: Path, info, limit: int | None) -> list[tuple[int, int, int, int]]:
    from histoviewer.slide import open_slide

    with open_slide(slide_path) as slide:
        grid = make_grid(slide, info, info.patch_size)
    boxes = []
    for r in range(grid.rows):
        for c in range(grid.cols):
            x, y, w, h = grid.patch_box(r, c)
            boxes.append((x, y, x + w, y + h))
    return boxes[:limit] if limit else boxes


def _run_baseline(
    slide_path: Path, ckpt: Path, info, device: torch.device, batch_size: int, limit: int | None
) -> Run:
    """The tutorial's way: PIL crops, CPU torchvision transforms, DataLoader, fp32 eager."""
    import torchvision
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    run = Run("baseline")
    boxes = _patch_boxes(slide_path, info, limit)

    t = time.perf_counter()
    model = getattr(torchvision.models, info.arch)(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, info.num_classes)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    model = model.to(device).eval()
    run.model_load = time.perf_counter() - t

    t = time.perf_counter()
    image = Image.open(slide_path).convert("RGB")
    run.slide_open = time.perf_counter() - t

    transform = transforms.Compose(
        [
            transforms.Resize((info.input_size, info.input_size)),
            transforms.ToTensor(),
            transforms.Normalize(info.mean, info.std),
        ]
    )

    class Patches(Dataset):
        def __len__(self) -> int:
            return len(boxes)

        def __getitem__(self, i: int) -> torch.Tensor:
            return transform(image.crop(boxes[i]))

    loader = DataLoader(Patches(), batch_size=batch_size, shuffle=False, num_workers=0)
    outputs = []
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i, x in enumerate(loader):
            out = model(x.to(device))
            outputs.append(torch.softmax(out, dim=1).cpu())
            if i == 0:
                run.first_batch = time.perf_counter() - start
                run.cpu_first_batch = time.process_time() - cpu_start
                run.first_batch_patches = len(x)
    run.total = time.perf_counter() - start
    run.cpu_total = time.process_time() - cpu_start
    probs = torch.cat(outputs).numpy()
    run.patches = len(probs)
    run.probs = probs
    run.labels = probs.argmax(axis=1)
    return run


def _run_engine(
    slide_path: Path,
    model_file: Path,
    device: torch.device,
    batch_size: int,
    limit: int | None,
    precision: str,
    backend: str,
) -> Run:
    from histoviewer.model import load_model
    from histoviewer.slide import open_slide

    dtype = precision_dtype(precision, device) if backend == "torch" else None
    run = Run(backend, backend=backend, precision=_dtype_name(dtype))
    t = time.perf_counter()
    classifier = load_model(model_file, device=device)
    run.model_load = time.perf_counter() - t

    t = time.perf_counter()
    slide = open_slide(slide_path)
    run.slide_open = time.perf_counter() - t

    marks: list[tuple[float, float, int]] = []

    def on_batch(batch: BatchResult) -> None:
        marks.append((time.perf_counter(), time.process_time(), len(batch.rows)))

    with slide:
        start, cpu_start = time.perf_counter(), time.process_time()
        tmap = map_slide(
            slide,
            classifier,
            batch_size=batch_size,
            skip_background=False,
            max_patches=limit,
            precision=precision,
            backend=backend,
            on_batch=on_batch,
        )
        if marks:
            run.total = marks[-1][0] - start
            run.cpu_total = marks[-1][1] - cpu_start
            run.first_batch = marks[0][0] - start
            run.cpu_first_batch = marks[0][1] - cpu_start
            run.first_batch_patches = marks[0][2]
            run.batch_sizes = [m[2] for m in marks]
            run.model_rate = _model_rate(slide, classifier, device, precision, backend, run)
    done = tmap.state.ravel() == CLASSIFIED
    run.probs = tmap.probs.reshape(-1, tmap.num_classes)[done]
    run.labels = run.probs.argmax(axis=1)
    run.patches = len(run.probs)
    return run


def _model_rate(slide, classifier, device: torch.device, precision: str, backend: str, run: Run):
    """Patches per second of the backend's network alone, on pixels read and
    preprocessed beforehand (the run's first patches).

    The batches have the sizes of the run's last batches (those after the first, up to
    :data:`MODEL_RATE_PATCHES` patches); the faster of two passes counts, as other
    programs sharing the machine only ever slow a pass down.
    """
    sizes: list[int] = []
    for k in reversed(run.batch_sizes[1:] or run.batch_sizes):
        if sizes and sum(sizes) + k > MODEL_RATE_PATCHES:
            break
        sizes.insert(0, k)
    runner = make_runner(classifier, device, precision, max(sizes), backend)
    grid = make_grid(slide, classifier.info)
    cells = np.arange(min(max(sizes), grid.rows * grid.cols))
    pixels = torch.from_numpy(read_patches(slide, grid, cells // grid.cols, cells % grid.cols))
    with torch.inference_mode():
        if backend == "onnxruntime":
            x = preprocess(pixels, classifier.info, channels_last=False)

            def forward(k: int) -> None:
                runner.forward(x[:k])
        else:
            x = preprocess(pixels.to(device), classifier.info, channels_last=True)
            dtype = precision_dtype(precision, device)

            def forward(k: int) -> None:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    logits = runner.network(x[:k])
                torch.softmax(logits.float(), dim=1).cpu()  # .cpu() waits for the device

        forward(sizes[0])  # warm-up (the map ran the same network already)
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            for k in sizes:
                forward(k)
            best = min(best, time.perf_counter() - started)
    return sum(sizes) / best if best > 0 else 0.0


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"
