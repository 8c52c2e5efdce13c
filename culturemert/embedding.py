"""Embedding one waveform with an encoder: all hidden layers, pooled over time (and windows)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from transformers import HubertModel

from culturemert.audio import MIN_SAMPLES
from culturemert.model.checkpoint import encoder_preprocessing

POOLS = ("mean", "max", "mean+std")
Layers = str | int | Sequence[int]


def window_bounds(
    n_samples: int, window: int, *, drop_last: bool = False, min_last: int = MIN_SAMPLES
) -> list[tuple[int, int]]:
    """Non-overlapping ``[start, end)`` windows; a last partial one is kept if ≥ ``min_last``."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window} samples")
    bounds = [(start, start + window) for start in range(0, n_samples - window + 1, window)]
    tail = bounds[-1][1] if bounds else 0
    if not drop_last and n_samples - tail >= min_last:
        bounds.append((tail, n_samples))
    return bounds


def select_layers(layers: Layers, n_hidden: int) -> list[int]:
    """Indices into ``hidden_states`` for ``"all"``, one index, or a list (negatives count back)."""
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an index or a list of indices, got {layers!r}")
        return list(range(n_hidden))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    bad = [i for i in chosen if not -n_hidden <= i < n_hidden]
    if bad or not chosen:
        raise ValueError(f"layer indices {bad or chosen} out of range for {n_hidden} hidden states")
    return [i % n_hidden for i in chosen]


def pool_frames(hidden: torch.Tensor, pool: str) -> torch.Tensor:
    """Pool ``[..., frames, dims]`` over frames in float32: mean, max, or mean and std side by side."""
    hidden = hidden.float()
    if pool == "mean":
        return hidden.mean(dim=-2)
    if pool == "max":
        return hidden.amax(dim=-2)
    if pool == "mean+std":
        std, mean = torch.std_mean(hidden, dim=-2, correction=0)
        return torch.cat([mean, std], dim=-1)
    raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")


@torch.inference_mode()
def embed(
    encoder: HubertModel,
    waveform: np.ndarray | torch.Tensor,
    *,
    layers: Layers = "all",
    pool: str = "mean",
    window_seconds: float | None = None,
    drop_last: bool = False,
    batch_size: int = 8,
) -> np.ndarray:
    """Pooled hidden states of a mono waveform at the encoder's rate: ``[layers, dims]``.

    With ``window_seconds`` the waveform is cut into non-overlapping windows, giving
    ``[layers, windows, dims]``. Only windows of equal length share a batch, because zero-padding
    changes MERT's features (its first convolution is followed by GroupNorm over time).
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    signal = torch.as_tensor(waveform).reshape(-1)
    if signal.numel() < MIN_SAMPLES:
        raise ValueError(f"waveform has {signal.numel()} samples; at least {MIN_SAMPLES} needed")
    if window_seconds is None:
        bounds = [(0, signal.numel())]
    else:
        window = round(window_seconds * encoder_preprocessing(encoder).sample_rate)
        bounds = window_bounds(signal.numel(), window, drop_last=drop_last)
        if not bounds:
            raise ValueError("no window of at least one frame fits in the waveform")
    parameter = next(encoder.parameters())
    signal = signal.to(device=parameter.device, dtype=parameter.dtype)
    chosen: list[int] | None = None
    pooled: list[torch.Tensor] = []
    # Full windows share one length and are batched; a shorter last window runs alone.
    full = [b for b in bounds if b[1] - b[0] == bounds[0][1] - bounds[0][0]]
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    groups += [[b] for b in bounds[len(full) :]]
    for group in groups:
        batch = torch.stack([signal[start:end] for start, end in group])
        hidden_states = encoder(batch, output_hidden_states=True).hidden_states
        if chosen is None:
            chosen = select_layers(layers, len(hidden_states))
        pooled.append(torch.stack([pool_frames(hidden_states[i], pool) for i in chosen], dim=0))
    features = torch.cat(pooled, dim=1).cpu().numpy()  # [layers, windows, dims]
    return features if window_seconds is not None else features[:, 0]


class LayerWeighting(nn.Module):
    """Learnable softmax weights over layers, initialised uniform: ``[..., layers, dims] → [..., dims]``."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    @property
    def weights(self) -> torch.Tensor:
        """The current layer weights (they sum to one)."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Weighted sum over the layer axis (second to last)."""
        return torch.einsum("...ld,l->...d", features, self.weights.to(features.dtype))
