"""ONNX Runtime inference on the CPU: the network exported once, then run by ONNX Runtime.

ONNX Runtime runs a ResNet-50 in float32 1.3x (an AVX512 CPU) to 1.6-2.0x (an AVX2
CPU) faster than PyTorch does (``histoviewer benchmark``); :func:`engine.choose_backend`
picks it on CPUs without native bf16, where PyTorch has nothing faster. Preprocessing
is not exported: :func:`histoviewer.model.preprocess` (the one function training and
inference share) runs in PyTorch on the CPU and hands float32 NCHW pixels to ONNX
Runtime, so both backends see exactly the same input.

The exported graph is the network with batch normalisation folded into the
convolutions and the softmax at its end; float32 input ``pixels`` (N, 3, S, S) with a
dynamic batch size, output ``probabilities`` (N, C). It is exported once per model
into :func:`onnx_cache_dir` (the user's cache folder), named by the weight fingerprint,
input size, class count and :data:`EXPORT_VERSION`, written atomically next to a
SHA-256 of its bytes: a file that is damaged (another digest, or ONNX Runtime cannot
load it) is deleted and exported again. When the folder cannot be written the model
is used from memory. Sessions are kept per model in this process (creating one
costs about half a second for a ResNet-50), so mapping again starts at once.

No Qt here; onnxruntime and onnx are imported only when a runner is made.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from histoviewer.errors import DeviceError, HistoViewerError
from histoviewer.fileio import atomic_write_bytes, describe_os_error
from histoviewer.model import Classifier, preprocess

log = logging.getLogger(__name__)

#: Overrides the folder of exported models (tests point it at a temporary folder).
ONNX_CACHE_ENV = "HISTOVIEWER_ONNX_CACHE_DIR"
#: Part of every exported file's name: bump it when the exported graph changes
#: (opset, folding, inputs or outputs), so that older files are not used.
EXPORT_VERSION = 1
OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
#: Whether ONNX Runtime's intra-op threads spin while waiting for work. Off: mapping
#: ResNet-50 on 2 cores (patch readers sharing them) was as fast or faster without it
#: (224 px: 24.8 vs 24.2 patches/s; 150 px: 50.7 vs 50.6 patches/s, 2-3 % fewer
#: patches per CPU-second with spinning), and idle threads leave the cores to others.
ALLOW_SPINNING = False
#: Sessions kept in this process (a ResNet-50 session holds about 100 MB).
_MAX_SESSIONS = 2

_sessions: OrderedDict[tuple, object] = OrderedDict()
_sessions_lock = threading.Lock()
# Why a model could not be exported, per model: not tried again in this process.
_failed: dict[tuple, str] = {}


@functools.cache
def available() -> bool:
    """Whether onnxruntime (and onnx, which the export needs) can be imported."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
        import onnxruntime  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install that fails to load
        log.info("onnxruntime backend unavailable: %s: %s", type(exc).__name__, exc)
        return False
    return True


def onnx_cache_dir() -> Path:
    """$HISTOVIEWER_ONNX_CACHE_DIR, else the user's cache folder + histoviewer/onnx."""
    if env := os.environ.get(ONNX_CACHE_ENV):
        return Path(env).expanduser()
    from histoviewer.mapping.cache import user_cache_dir

    return user_cache_dir() / "onnx"


def model_file_name(classifier: Classifier) -> str:
    """The exported model's file name: everything that decides its content."""
    info = classifier.info
    return (
        f"{info.arch}-{classifier.fingerprint}-{info.input_size}px-"
        f"{info.num_classes}c-v{EXPORT_VERSION}.onnx"
    )


def export_onnx(classifier: Classifier) -> bytes:
    """The classifier's network (batch norm folded, softmax appended) as ONNX bytes.

    Raises DeviceError when the network does not export (engine.make_runner then
    falls back to PyTorch for the "auto" backend).
    """
    from histoviewer.mapping.engine import fold_batchnorm

    info = classifier.info
    started = time.perf_counter()
    net = fold_batchnorm(classifier.network)
    net = net.to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    model = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    example = torch.zeros(1, 3, info.input_size, info.input_size)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter announces its successor; its output is what we test.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:  # an operation the exporter does not know, a traced branch
        raise DeviceError(
            f"the onnxruntime backend cannot run this model: exporting it to ONNX failed "
            f"({type(exc).__name__}: {_short(exc)})"
        ) from exc
    data = buffer.getvalue()
    log.info(
        "exported %s (%s) to ONNX in %.2f s (%.1f MB)",
        info.arch,
        classifier.fingerprint[:12],
        time.perf_counter() - started,
        len(data) / 1e6,
    )
    return data


def clear_sessions() -> None:
    """Forget the sessions kept in this process (the next runner loads its model again)
    and the models that failed to export (the next runner tries again)."""
    with _sessions_lock:
        _sessions.clear()
        _failed.clear()


class OnnxRunner:
    """The classifier run by ONNX Runtime on the CPU, in float32.

    Called like the engine's PyTorch runner: uint8 NHWC pixels (a CPU tensor or array)
    in, float32 probabilities (N, C) out, ``chunk`` patches at a time. ``threads``
    (default: PyTorch's thread count) are ONNX Runtime's intra-op threads;
    ``cache_dir`` (default :func:`onnx_cache_dir`) holds the exported models.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        batch_size: int,
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.name = "onnxruntime"
        self.device = torch.device("cpu")
        self.info = classifier.info
        self.chunk = batch_size
        self.threads = max(1, threads or torch.get_num_threads())
        folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
        self.session = _session(classifier, folder, self.threads)

    def __call__(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(batch))
        parts = []
        for start in range(0, len(batch), self.chunk):
            with torch.inference_mode():
                x = preprocess(
                    batch[start : start + self.chunk].cpu(), self.info, channels_last=False
                )
            parts.append(self.forward(x))
        if not parts:
            return np.zeros((0, self.info.num_classes), dtype=np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Probabilities (N, C) for preprocessed float32 pixels (N, 3, S, S)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        (probs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return np.asarray(probs, dtype=np.float32)


def _session(classifier: Classifier, folder: Path, threads: int):
    """The ONNX Runtime session for ``classifier`` (kept per model in this process)."""
    info = classifier.info
    key = (classifier.fingerprint, info.arch, info.input_size, info.num_classes, threads)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is not None:
            _sessions.move_to_end(key)
            return session
        if key[:4] in _failed:
            raise DeviceError(_failed[key[:4]])
    try:
        session = _load_session(classifier, folder, threads)
    except DeviceError as exc:
        with _sessions_lock:
            _failed[key[:4]] = str(exc)
        raise
    with _sessions_lock:
        _sessions[key] = session
        _sessions.move_to_end(key)
        while len(_sessions) > _MAX_SESSIONS:
            _sessions.popitem(last=False)
    return session


def _load_session(classifier: Classifier, folder: Path, threads: int):
    path = folder / model_file_name(classifier)
    data = _read_cached(path)
    if data is not None:
        try:
            return _create_session(data, threads, classifier)
        except Exception as exc:  # ONNX Runtime's own exception types
            log.warning(
                "the cached ONNX model %s cannot be loaded (%s); exporting it again",
                path,
                _short(exc),
            )
            _discard(path)
    data = export_onnx(classifier)
    _store(path, data)
    return _create_session(data, threads, classifier)


def _create_session(data: bytes, threads: int, classifier: Classifier):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings are not the user's concern
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if ALLOW_SPINNING else "0"
    )
    started = time.perf_counter()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    _check_signature(session, classifier)
    log.info(
        "ONNX Runtime session for %s (%s) created in %.2f s, %d threads",
        classifier.info.arch,
        classifier.fingerprint[:12],
        time.perf_counter() - started,
        threads,
    )
    return session


def _check_signature(session, classifier: Classifier) -> None:
    """Raise ValueError unless the model takes (N, 3, S, S) pixels and gives (N, C)."""
    info = classifier.info
    inputs, outputs = session.get_inputs(), session.get_outputs()
    ok = (
        len(inputs) == 1
        and inputs[0].name == INPUT_NAME
        and list(inputs[0].shape[1:]) == [3, info.input_size, info.input_size]
        and len(outputs) == 1
        and outputs[0].name == OUTPUT_NAME
        and list(outputs[0].shape[1:]) == [info.num_classes]
    )
    if not ok:
        raise ValueError(
            "the model's inputs and outputs are not those of this classifier: "
            f"{[(i.name, i.shape) for i in inputs]} -> {[(o.name, o.shape) for o in outputs]}"
        )


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_cached(path: Path) -> bytes | None:
    """The cached model's bytes, or None when there is none or it is damaged (then
    deleted, with a log line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the cached ONNX model %s: %s", path, describe_os_error(exc))
        return None
    try:
        recorded = _digest_path(path).read_text(encoding="ascii").split()[0]
    except (OSError, ValueError, IndexError):
        recorded = None
    if recorded != hashlib.sha256(data).hexdigest():
        log.warning(
            "the cached ONNX model %s is damaged (its SHA-256 does not match); exporting it again",
            path,
        )
        _discard(path)
        return None
    return data


def _store(path: Path, data: bytes) -> None:
    """Write the model and then its digest, each atomically; a folder that cannot be
    written is logged and the model is used from memory."""
    try:
        atomic_write_bytes(path, data)
        digest = f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
        atomic_write_bytes(_digest_path(path), digest.encode("ascii"))
    except (HistoViewerError, OSError) as exc:
        log.warning(
            "cannot keep the exported ONNX model in %s (%s); using it from memory this time",
            path.parent,
            _short(exc),
        )
        return
    log.info("kept the exported ONNX model as %s", path)


def _discard(path: Path) -> None:
    for p in (path, _digest_path(path)):
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot delete %s: %s", p, describe_os_error(exc))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
