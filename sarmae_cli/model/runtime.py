"""Device selection and mixed precision: fp32 on CPU, bf16 (or fp16) autocast on CUDA."""

from __future__ import annotations

import contextlib

import torch

from sarmae_cli.errors import UsageError


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else CPU; `cpu`, `cuda`, `cuda:N` are taken as said."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise UsageError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec} requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {spec} does not exist: {torch.cuda.device_count()} CUDA device(s) found"
            )
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    return device


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA devices that support it, fp16 on older ones; nothing on CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
