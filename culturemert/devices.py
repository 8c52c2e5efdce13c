"""Where heavy work runs: this process's place under torchrun, its default device, batch sizes,
how data-loading workers start."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

DTYPES = ("float32", "bfloat16", "float16")


def distributed_position() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` alone)."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def default_device(local_rank: int = 0) -> torch.device:
    """This process's GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``name`` as a device (``cuda`` means this rank's GPU); None: :func:`default_device`."""
    local_rank = distributed_position()[2]
    if name is None:
        return default_device(local_rank)
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r}: this machine has no CUDA GPU (torch {torch.__version__})"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    return device


def check_dtype(name: str) -> torch.dtype:
    """The torch dtype named ``name`` (one of :data:`DTYPES`), or a clear error."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); otherwise it is emulated."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    models = [
        line.split(":", 1)[1].strip()
        for line in _cpuinfo().splitlines()
        if line.startswith("model name")
    ]
    return f"{models[0] if models else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def slow_dtype_warning(device: torch.device, dtype: str) -> str | None:
    """A warning when ``dtype`` would be emulated on this CPU (several times slower), else None."""
    if device.type == "cpu" and dtype != "float32" and not cpu_has_native_bfloat16():
        return (
            f"warning: this CPU has no native {dtype} arithmetic; expect it to run several "
            "times slower than float32"
        )
    return None


def default_batch_size(device: torch.device, window_seconds: float | None = 30.0) -> int:
    """Windows per forward pass. On a GPU 16. On a CPU about 30 s of audio: longer batches
    gain nothing there (measured: 30 s windows one at a time ran as fast as four together, 5 s
    windows 13% faster four at a time than alone); whole tracks go one at a time."""
    if device.type == "cuda":
        return 16
    return 1 if window_seconds is None else max(1, min(8, round(30 / window_seconds)))


def loader_start_method(workers: int) -> str | None:
    """How a DataLoader's ``workers`` start: forked on Linux, where that takes milliseconds even
    inside a spawned pipeline step (which would otherwise spawn each worker and re-import torch
    in it, 1.5 s a loader); the platform's default elsewhere (forking is unsafe on macOS)."""
    return "fork" if workers and sys.platform == "linux" else None
