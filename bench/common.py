"""Shared benchmark helpers: encoder FLOP counts, the machine's matmul rate, timing."""

from __future__ import annotations

import os
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


def matmul_rate(size: int = 1536, repeats: int = 12) -> float:
    """Measured fp32 matrix-multiply FLOP/s on this machine (best of a few rounds)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def best_time(function: Callable[[], object], rounds: int = 2) -> float:
    """Best wall time of ``rounds`` calls, in seconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def machine_line() -> str:
    """One line naming the machine's core count and torch threads."""
    return f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
