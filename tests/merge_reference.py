"""Merge test references: tiny checkpoints, and formulas written out in plain torch."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import random_state_dict, tiny_mert_config, write_checkpoint
from safetensors.torch import load_file
from transformers import HubertModel

from culturemert.model import hubert_config_from_dict, save_encoder

G = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
V = "encoder.pos_conv_embed.conv.parametrizations.weight.original1"


def make_checkpoints(root: Path) -> dict:
    """Base (MERT layout, safetensors), two models by save_encoder, one legacy ``.bin``."""
    raw = tiny_mert_config()
    base_state = random_state_dict(raw)
    write_checkpoint(root / "base", raw, base_state, fmt="safetensors")
    models = []
    for i in range(3):
        generator = torch.Generator().manual_seed(10 + i)
        state = {
            name: tensor + 0.02 * torch.randn(tensor.shape, generator=generator)
            for name, tensor in base_state.items()
        }
        state[G] = state[G].abs()  # gains stay positive, as trained ones are
        directory = root / f"model{i}"
        if i == 2:
            write_checkpoint(directory, raw, state, fmt="bin")  # weight_g / weight_v names
        else:
            model = HubertModel(hubert_config_from_dict(raw))
            model.load_state_dict(state)
            save_encoder(model, directory)
        models.append(directory)
    return {"base": root / "base", "models": models}


def effective(state: dict) -> torch.Tensor:
    """w = g·v/‖v‖ with the norm over dims (0, 1), one per kernel tap."""
    return state[G] * state[V] / state[V].norm(dim=(0, 1), keepdim=True)


def read_state(directory: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors read with plain safetensors/torch, weight-norm names modernised."""
    if (directory / "model.safetensors").is_file():
        return load_file(directory / "model.safetensors")
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    return {
        name.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): tensor
        for name, tensor in state.items()
    }


def reference_ties(base, models, density, lam):
    """TIES as in the paper's code (flattened top-k, mass sign election, disjoint mean)."""
    taus = torch.stack([(m - base).reshape(-1) for m in models])
    n = taus.shape[1]
    k = max(1, round(density * n))
    kth = taus.abs().kthvalue(n - k + 1, dim=1, keepdim=True).values
    trimmed = taus * (taus.abs() >= kth)
    sign = torch.sign(trimmed.sum(dim=0))
    selected = trimmed * torch.where(sign > 0, trimmed > 0, trimmed < 0)
    mean = selected.sum(dim=0) / (selected != 0).sum(dim=0).clamp(min=1)
    return base + lam * mean.reshape(base.shape)
