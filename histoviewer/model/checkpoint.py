"""Reading and writing model files, with nothing executed on load.

Formats read by :func:`load_model`:

- ``.safetensors`` written by :func:`save_model` (the release format): the weights plus
  the :class:`ModelInfo` JSON under the header metadata key ``"histoviewer"``;
- a model folder holding ``model.safetensors`` (``resources/models/<name>/``);
- the recipe's ``{'state_dict': ...}`` checkpoint (``.pth.tar``, torch.save);
- the trainer's ``last.pt``: ``{"model": state_dict, "info": ModelInfo.to_dict(), ...}``.

Pickle-based files go through ``torch.load(weights_only=True)`` only, which refuses
anything but tensors and plain containers, so a malicious file cannot run code.
Files without metadata get the recipe's preprocessing and the Kather class order.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from histoviewer.errors import ModelError, UnsafeFileError
from histoviewer.fileio import atomic_write_bytes, describe_os_error, missing_reason
from histoviewer.model.classifier import Classifier
from histoviewer.model.info import ModelInfo
from histoviewer.model.network import ARCHITECTURES, arch_from_keys, build_network
from histoviewer.model.shipped import MODEL_FILE  # the weights inside a model folder

log = logging.getLogger(__name__)

#: Header metadata key of the ModelInfo JSON in a safetensors file.
METADATA_KEY = "histoviewer"

# torch/_weights_only_unpickler.py's warning for a pickle protocol other than 2.
_PICKLE_PROTOCOL_WARNING = r"Detected pickle protocol \d+ in the checkpoint"

# Prefixes that wrappers add to every key: DataParallel / DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def save_model(
    path: str | os.PathLike, network: nn.Module, info: ModelInfo, *, half: bool = False
) -> Path:
    """Write ``network``'s weights and ``info`` to a ``.safetensors`` file, atomically.

    ``half=True`` stores floating-point tensors as float16 (half the size; the release
    model ships this way); :func:`load_model` converts them back to float32. Raises
    ModelError when the network's head does not match ``info``, StorageError when the
    file cannot be written. Returns the path written.
    """
    path = Path(path)
    state = _unwrap(network.state_dict())
    _check_weights(state, info, source=f"the network being saved to {path}")
    tensors = {}
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        tensors[key] = tensor.contiguous().clone()  # clone: safetensors refuses shared storage
    data = safetensors.torch.save(tensors, metadata={METADATA_KEY: info.to_json()})
    atomic_write_bytes(path, data)
    log.info("saved model %r to %s (%s)", info.name, path, "float16" if half else "float32")
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """A :class:`Classifier` from a model file or folder (see the module docstring).

    Raises ModelError with a sentence naming the file for: a missing file, a file that
    is not a checkpoint, a truncated file, a pickle that would run code, a network of
    another architecture or head size than declared (or than the recipe's, for files
    without metadata). ``device``: as for ``histoviewer.device.resolve_device``.
    """
    file = _model_file(Path(path))
    state, info, declared = _read(file)
    _check_weights(state, info, source=str(file), declared=declared)
    network = build_network(info.arch, info.num_classes)
    try:
        network.load_state_dict(state, strict=True)  # copy_ casts float16 back to float32
    except RuntimeError as exc:
        raise ModelError(f"{file} does not fit a {info.arch}: {_load_problem(exc)}") from None
    classifier = Classifier.from_network(network, info, device)
    log.info("loaded %r from %s", classifier, file)
    return classifier


def _model_file(path: Path) -> Path:
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise ModelError(f"the model folder {path} holds no {MODEL_FILE}")
        return path / MODEL_FILE
    if not path.exists():
        raise ModelError(f"cannot open the model file {path}: {missing_reason(path)}")
    if not path.is_file():
        raise ModelError(f"{path} is not a model file")
    return path


def _read(file: Path) -> tuple[dict[str, torch.Tensor], ModelInfo, bool]:
    """Weights, metadata and whether the metadata came from the file (not assumed)."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(16)
        size = file.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read the model file {file}: {describe_os_error(exc)}") from None
    if size == 0:
        raise ModelError(f"the model file {file} is empty")
    if _looks_like_safetensors(head):
        state, metadata = _read_safetensors(file)
        info_data: Any = metadata.get(METADATA_KEY)
        if info_data is not None:
            return _unwrap(state), _info_from(file, info_data, is_json=True), True
        return _unwrap(state), _assumed_info(file, state), False
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return _read_torch(file)
    raise ModelError(f"{file} is not a model checkpoint ({_describe(head)})")


def _looks_like_safetensors(head: bytes) -> bool:
    # A safetensors file starts with the length of its JSON header (u64 little-endian).
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    # No check against the file size: a truncated file must reach safe_open, which then
    # reports it as incomplete rather than "not a checkpoint".
    return head[8:9] == b"{" and 0 < header_len <= 100_000_000


def _read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safetensors.safe_open(str(file), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict)
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"the model file {file} is damaged or incomplete (safetensors: {_first_line(exc)})"
        ) from None
    return state, metadata


def load_pickled(file: Path) -> Any:
    """``torch.load`` of ``file`` restricted to tensors and plain containers.

    The file is handed over open, so torch never picks a reader from its name (a
    pickle named ``.safetensors`` is read as what it is). Raises ModelError: "``file``
    refused: it contains code ..." for a pickle of Python objects, "... is damaged or
    incomplete" otherwise.

    Files pickled with another protocol than torch.save's default (2), such as old
    recipe ``.pth.tar`` checkpoints, make the weights-only unpickler warn "Detected
    pickle protocol N in the checkpoint" on every load: a note for PyTorch's developers,
    not for the user, and the load stays weights-only. That warning, and only that one,
    is kept out of the user's terminal.
    """
    try:
        with open(file, "rb") as fh, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PICKLE_PROTOCOL_WARNING)
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower() and not _truncated_message(exc):
            raise UnsafeFileError(
                f"{file} refused: it contains code (Python objects, not only weights), "
                "and loading it could run that code"
            ) from None
        raise ModelError(f"the model file {file} is damaged or incomplete") from None
    except OSError as exc:
        raise ModelError(f"cannot read the model file {file}: {describe_os_error(exc)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as exc:
        log.debug("torch.load(%s) failed: %s", file, exc)
        raise ModelError(f"the model file {file} is damaged or incomplete") from None


def _read_torch(file: Path) -> tuple[dict[str, torch.Tensor], ModelInfo, bool]:
    obj = load_pickled(file)
    if not isinstance(obj, dict):
        raise ModelError(f"{file} holds a {type(obj).__name__}, not model weights")
    if "model" in obj and isinstance(obj["model"], dict):  # the trainer's last.pt
        state = obj["model"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):  # the recipe's .pth.tar
        state = obj["state_dict"]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):  # a bare state_dict
        state = obj
    else:
        raise ModelError(
            f"{file} does not hold model weights (expected a 'state_dict' or 'model' entry)"
        )
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"the weights in {file} are not a mapping of names to tensors")
    state = _unwrap(state)
    if obj.get("info") is not None:
        return state, _info_from(file, obj["info"], is_json=False), True
    return state, _assumed_info(file, state), False


def _truncated_message(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("ran out of input", "truncated", "eof", "unexpected end"))


def _info_from(file: Path, data: Any, *, is_json: bool) -> ModelInfo:
    try:
        return ModelInfo.from_json(data) if is_json else ModelInfo.from_dict(data)
    except ModelError as exc:
        raise ModelError(f"the metadata in {file} is unusable: {exc}") from None


def _assumed_info(file: Path, state: dict[str, torch.Tensor]) -> ModelInfo:
    """The recipe's metadata for a file without any, with the architecture its keys show."""
    arch = arch_from_keys(state)
    if arch not in ARCHITECTURES:
        raise ModelError(f"{file} does not hold a supported network: {_not_resnet(state, arch)}")
    log.info("%s has no metadata: assuming the recipe's classes and preprocessing", file)
    return ModelInfo.recipe(
        arch,
        name=file.name.split(".")[0] or "model",
        training={"source": str(file.name), "metadata": "assumed (recipe)"},
    )


def _check_weights(
    state: dict[str, torch.Tensor], info: ModelInfo, *, source: str, declared: bool = True
) -> None:
    """Architecture and head size of ``state`` must be those ``info`` describes."""
    arch = arch_from_keys(state)
    if arch != info.arch:
        if arch is None or arch not in ARCHITECTURES:
            detail = _not_resnet(state, arch)
        else:
            detail = f"its weights look like a {arch}"
        raise ModelError(f"{source} is labelled {info.arch}, but {detail}")
    fc = state["fc.weight"]
    outputs = fc.shape[0] if fc.ndim == 2 else -1
    if outputs != info.num_classes:
        what = "declared" if declared else "expected (the recipe's Kather classes)"
        raise ModelError(
            f"{source}: the network's final layer has {outputs} outputs but "
            f"{info.num_classes} classes are {what}"
        )


def _not_resnet(state: dict[str, torch.Tensor], arch: str | None) -> str:
    if arch is not None:  # recognised but unsupported, e.g. resnet152
        return f"its weights look like a {arch} (supported: {', '.join(ARCHITECTURES)})"
    sample = ", ".join(sorted(state)[:3]) or "no tensors at all"
    return f"its weights do not look like a torchvision ResNet (keys such as {sample})"


def _unwrap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _describe(head: bytes) -> str:
    kinds = {
        b"\x89PNG": "it is a PNG image",
        b"\xff\xd8\xff": "it is a JPEG image",
        b"II*\x00": "it is a TIFF image",
        b"MM\x00*": "it is a TIFF image",
        b"GIF8": "it is a GIF image",
        b"%PDF": "it is a PDF document",
    }
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return kind
    return "expected a .safetensors, .pt or .pth.tar file"


def _load_problem(exc: RuntimeError) -> str:
    """The first problem load_state_dict reports, without its 'Error(s) in loading' header."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines()[1:] if ln.strip()]
    if not lines:
        return _first_line(exc)
    more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
    return lines[0].rstrip(".") + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
