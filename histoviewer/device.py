"""Choosing the compute device and the mixed-precision type it supports."""

from __future__ import annotations

from functools import cache

import torch

from histoviewer.errors import DeviceError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; a named device must exist."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device 'cuda' was requested but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device '{name}' was requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type == "mps" and not _mps_available():
        raise DeviceError("device 'mps' was requested but Apple MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced-precision type worth autocasting to on ``device``, or None for fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


@cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
