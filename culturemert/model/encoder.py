"""The encoder the library passes around: a module that maps waveforms to hidden states, with
the preprocessing its input needs and the rate of its frames.

A checkpoint's module is a ``transformers.HubertModel``; hand-made features
(:mod:`culturemert.evaluate.handcrafted`) are another module of the same interface. Either runs
where its parameters are (a module without parameters runs on the CPU in float32).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from culturemert.frames import HOP_SAMPLES, SAMPLE_RATE
from culturemert.model.checkpoint import (
    Preprocessing,
    load_encoder,
    read_preprocessing,
    resolve_source,
)


@dataclass(frozen=True)
class Encoder:
    """A module giving ``hidden_states`` for ``[batch, samples]`` waveforms, and its input's needs."""

    module: nn.Module
    preprocessing: Preprocessing
    frame_rate: float = SAMPLE_RATE / HOP_SAMPLES

    @property
    def device(self) -> torch.device:
        """Where the module's weights are (the CPU for a module without any)."""
        parameter = next(self.module.parameters(), None)
        return torch.device("cpu") if parameter is None else parameter.device

    @property
    def dtype(self) -> torch.dtype:
        """The module's floating-point type (float32 for a module without weights)."""
        parameter = next(self.module.parameters(), None)
        return torch.float32 if parameter is None else parameter.dtype

    def hidden_states(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every layer's ``[batch, frames, dims]`` output for ``waveforms``."""
        return self.module(waveforms, output_hidden_states=True).hidden_states


def as_encoder(model: Encoder | nn.Module) -> Encoder:
    """``model`` as an :class:`Encoder`; a bare module reads at its config's rate, unnormalised."""
    if isinstance(model, Encoder):
        return model
    rate = int(getattr(getattr(model, "config", None), "sample_rate", SAMPLE_RATE))
    return Encoder(model, Preprocessing(sample_rate=rate))


def open_encoder(
    source: str | os.PathLike,
    *,
    attn_implementation: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> Encoder:
    """A checkpoint (folder or hub id) loaded with :func:`load_encoder`, with its preprocessing."""
    directory = resolve_source(source)
    module = load_encoder(
        directory, attn_implementation=attn_implementation, dtype=dtype, device=device
    )
    return Encoder(module, read_preprocessing(directory, default_rate=module.config.sample_rate))
