"""Shared benchmark helpers: encoder FLOP counts, the machine's matmul rate, timing."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import HubertConfig


def encoder_forward_flops(config: HubertConfig, n_samples: int) -> float:
    """Multiply-add FLOPs (×2) of one HubertModel forward on ``n_samples`` of audio."""
    flops, length, channels = 0.0, n_samples, 1
    for dim, kernel, stride in zip(
        config.conv_dim, config.conv_kernel, config.conv_stride, strict=True
    ):
        length = (length - kernel) // stride + 1
        flops += 2 * channels * dim * kernel * length
        channels = dim
    frames, hidden = length, config.hidden_size
    flops += 2 * channels * hidden * frames  # feature projection
    groups, kernel = config.num_conv_pos_embedding_groups, config.num_conv_pos_embeddings
    flops += 2 * hidden * (hidden // groups) * kernel * frames  # positional convolution
    per_layer = 2 * frames * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)
    per_layer += 2 * 2 * frames * frames * hidden  # scores and weighted values
    return flops + config.num_hidden_layers * per_layer


def synchronize(device: torch.device | str = "cpu") -> None:
    """Wait for the device's queued work, so that a clock read after it is honest."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(
    size: int = 1536,
    repeats: int = 12,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Measured matrix-multiply FLOP/s on ``device`` in ``dtype`` (best of a few rounds)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def best_time(
    function: Callable[[], object], rounds: int = 2, device: torch.device | str = "cpu"
) -> float:
    """Best wall time of ``rounds`` calls, in seconds (the device's queue drained each time)."""
    best = float("inf")
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def machine_line(device: torch.device | str = "cpu") -> str:
    """One line naming the machine (CPU model and cores, or the GPU), torch and its threads."""
    from culturemert.devices import device_name

    return (
        f"machine: {device_name(torch.device(device))}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
