"""Forward and backward passes of a batched probe grid, written out, into buffers kept across steps.

Autograd allocates every gradient afresh at each step. For a grid of probes the first layer's
weight gradient alone is ``probes x 768 x 512`` floats (126 MB for 80 probes): the C allocator
maps that much from the kernel and has it zeroed page by page on every step, which on a CPU
costs more than the matrix product that fills it. The probes are two affine maps, a ReLU,
dropout and a sigmoid cross-entropy, so their gradients are short to write down; here every
activation and gradient lives in a reused buffer and each product writes into one (``out=``).

The first ``singles`` probes of a grid read one layer each; the others read a softmax weighting
of all layers.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class ProbePasses:
    """Logits and gradients of a probe grid; the last forward's activations kept for the backward."""

    def __init__(self, kind: str, dropout: float):
        self.kind = kind
        self.dropout = dropout
        self._flat: dict[str, torch.Tensor] = {}

    def _buffer(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """A contiguous ``shape`` view of the reused buffer ``name``, grown when too small."""
        size = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < size:
            flat = self._flat[name] = torch.empty(size, dtype=dtype)
        return flat[:size].view(shape)

    def logits(
        self,
        params: dict[str, torch.Tensor],
        singles: int,
        table: torch.Tensor,
        batch: torch.Tensor,
        slot: torch.Tensor,
        dropout: list[np.random.Generator] | None = None,
    ) -> torch.Tensor:
        """Logits ``[probes, batch, tags]``; with ``dropout`` (a generator per probe), trained.

        ``table [layers, windows, dims]`` holds the features; probe ``p`` reads the windows
        ``batch[slot[p]]`` (``batch`` is ``[slots, batch size]``).
        """
        layers, windows, dims = table.shape
        rows_by_layer = table.view(layers * windows, dims)
        size, probes = batch.shape[1], len(slot)
        x = self._buffer("x", (probes, size, dims))
        rows = (params["layer"][:singles, None] * windows + batch[slot[:singles]]).flatten()
        staging = self._buffer(f"staging_{table.dtype}", (singles * size, dims), table.dtype)
        torch.index_select(rows_by_layer, 0, rows, out=staging)
        x[:singles].view_as(staging).copy_(staging)

        # A weighted probe reads all layers of its slot's windows, gathered once per slot.
        self._mixing = torch.softmax(params["mix"][singles:], -1)
        self._slot_layers, self._groups = {}, []
        every_layer = torch.arange(layers)[:, None] * windows
        for s in slot[singles:].unique().tolist():
            rows = torch.nonzero(slot[singles:] == s).flatten()
            gathered = rows_by_layer.index_select(0, (every_layer + batch[s]).flatten())
            self._slot_layers[s] = gathered.float().view(layers, size * dims)
            self._groups.append((s, rows))
            mixed = self._mixing[rows] @ self._slot_layers[s]
            x[singles:].index_copy_(0, rows, mixed.view(len(rows), size, dims))
        self._x, self._singles, self._slot = x, singles, slot

        first = self._buffer("first", (probes, size, params["w1"].shape[2]))
        torch.baddbmm(params["b1"], x, params["w1"], out=first)
        if self.kind == "linear":
            return first
        gate = self._buffer("gate", first.shape, torch.bool)
        torch.gt(first, 0, out=gate)
        self._scale = 1.0
        if dropout is not None and self.dropout > 0:
            draws = self._buffer("draws", first.shape)
            for rng, probe_draws in zip(dropout, draws.numpy(), strict=True):
                rng.random(out=probe_draws, dtype=np.float32)
            gate.logical_and_(draws >= self.dropout)
            self._scale = 1 / (1 - self.dropout)
        hidden = first.mul_(gate)  # ReLU and dropout as one 0/1 gate, then the dropout scale
        if self._scale != 1.0:
            hidden.mul_(self._scale)
        self._gate, self._hidden = gate, hidden
        out = self._buffer("out", (probes, size, params["w2"].shape[2]))
        return torch.baddbmm(params["b2"], hidden, params["w2"], out=out)

    def gradients(
        self, params: dict[str, torch.Tensor], logits: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Gradients of each probe's mean BCE-with-logits loss, ``targets [slots, batch, tags]``.

        Returned for every trained tensor (``mix`` of single-layer probes is zero), in reused
        buffers valid until the next call.
        """
        probes, batch, tags = logits.shape
        grads = {
            name: self._buffer(f"grad_{name}", params[name].shape)
            for name in params
            if name != "layer"
        }
        error = torch.sigmoid(logits).sub_(targets[self._slot]).div_(batch * tags)
        if self.kind == "mlp":
            torch.bmm(self._hidden.transpose(1, 2), error, out=grads["w2"])
            torch.sum(error, 1, keepdim=True, out=grads["b2"])
            upstream = self._buffer("upstream", self._hidden.shape)
            torch.bmm(error, params["w2"].transpose(1, 2), out=upstream)
            upstream.mul_(self._gate)
            if self._scale != 1.0:
                upstream.mul_(self._scale)
        else:
            upstream = error
        torch.bmm(self._x.transpose(1, 2), upstream, out=grads["w1"])
        torch.sum(upstream, 1, keepdim=True, out=grads["b1"])

        grads["mix"].zero_()
        singles, weighted = self._singles, probes - self._singles
        if weighted:
            to_input = self._buffer("to_input", (weighted, batch, self._x.shape[2]))
            torch.bmm(upstream[singles:], params["w1"][singles:].transpose(1, 2), out=to_input)
            for s, rows in self._groups:
                per_layer = to_input[rows].view(len(rows), -1) @ self._slot_layers[s].T
                mixing = self._mixing[rows]
                softmax_grad = mixing * (per_layer - (mixing * per_layer).sum(-1, keepdim=True))
                grads["mix"][singles:].index_copy_(0, rows, softmax_grad)
        return grads
