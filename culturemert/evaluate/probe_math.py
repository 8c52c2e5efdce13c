"""Forward and backward passes of a batched probe grid, written out, into buffers kept across steps.

Autograd allocates every gradient afresh at each step. For a grid of probes the first layer's
weight gradient alone is ``probes x 768 x 512`` floats (126 MB for 80 probes): on a CPU the
allocator maps that much from the kernel and has it zeroed page by page on every step, which
costs more than the matrix product that fills it (measured: 35 against 99 GFLOP/s). The probes
are two affine maps, a ReLU, dropout and a sigmoid cross-entropy, so their gradients are short to
write down; here every activation and gradient lives in a reused buffer on the grid's device and
each product writes into one (``out=``). The tests hold them against autograd on every device.

Dropout masks are a pure function of (seed, step, element), hashed with integer tensor
operations on the grid's device: the same bits on every device and thread count, independent of
which other probes share a pass, and shared by the probes of one seed, as one seeded training
script would draw them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF


def mix32(x):
    """A 32-bit integer hash (C. Wellons' 2-round xorshift-multiply, multipliers below 2**31 so
    every product fits in int64); works on Python ints and int64 tensors (in place)."""
    if isinstance(x, int):
        x ^= x >> 16
        x = (x * 0x21F0AAAD) & _MASK32
        x ^= x >> 15
        x = (x * 0x735A2D97) & _MASK32
        return x ^ (x >> 15)
    x.bitwise_xor_(x >> 16).mul_(0x21F0AAAD).bitwise_and_(_MASK32)
    x.bitwise_xor_(x >> 15).mul_(0x735A2D97).bitwise_and_(_MASK32)
    return x.bitwise_xor_(x >> 15)


def dropout_keep(
    seeds: list[int], step: int, shape: tuple[int, int], rate: float, device: torch.device
) -> torch.Tensor:
    """Which units survive dropout at ``rate``: ``[len(seeds), *shape]`` booleans for one step.

    Element ``e`` of seed ``s`` at ``step`` is kept when ``mix32(mix32(e ^ k1) ^ k2)`` is at
    least ``rate * 2**32``, with keys ``k1, k2`` hashed from ``(s, step)``.
    """
    first = [mix32((mix32(s & _MASK32) + step) & _MASK32) for s in seeds]
    second = [mix32(k ^ 0x9E3779B9) for k in first]
    keys = torch.tensor([first, second], dtype=torch.int64, device=device)[..., None]
    counter = torch.arange(math.prod(shape), dtype=torch.int64, device=device).expand(
        len(seeds), -1
    )
    values = mix32(mix32(counter ^ keys[0]) ^ keys[1])
    return (values >= round(rate * 2**32)).view(len(seeds), *shape)


@dataclass
class GridView:
    """Probes that run together: weights with a leading probe axis, single-layer probes first."""

    params: dict[str, torch.Tensor]  # w1, b1, (w2, b2), mix, layer
    singles: int  # how many probes read one layer (the rest read a softmax mix of all)
    slot: torch.Tensor  # [probes]: which window order (seed) each probe follows
    groups: list[tuple[int, torch.Tensor]]  # (slot, rows among the weighted probes)


def weighted_groups(slot: torch.Tensor, singles: int) -> list[tuple[int, torch.Tensor]]:
    """The weighted probes (rows after ``singles``) grouped by the slot they follow."""
    weighted = slot[singles:].cpu()
    return [
        (s, torch.nonzero(weighted == s).flatten().to(slot.device))
        for s in weighted.unique().tolist()
    ]


class ProbePasses:
    """Logits and gradients of a probe grid; the last forward's activations kept for the backward."""

    def __init__(self, kind: str, dropout: float, device: torch.device | str = "cpu"):
        self.kind = kind
        self.dropout = dropout
        self.device = torch.device(device)
        self._flat: dict[str, torch.Tensor] = {}

    def _buffer(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """A contiguous ``shape`` view of the reused buffer ``name``, grown when too small."""
        size = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < size:
            flat = self._flat[name] = torch.empty(size, dtype=dtype, device=self.device)
        return flat[:size].view(shape)

    def logits(
        self,
        view: GridView,
        table: torch.Tensor,
        batch: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[probes, batch, tags]``; with dropout masks ``keep [slots, batch, hidden]``,
        trained.

        ``table [layers, windows, dims]`` holds the features; probe ``p`` reads the windows
        ``batch[slot[p]]`` (``batch`` is ``[slots, batch size]``).
        """
        params, singles, slot = view.params, view.singles, view.slot
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
        self._slot_layers = {}
        every_layer = torch.arange(layers, device=table.device)[:, None] * windows
        for s, rows in view.groups:
            gathered = rows_by_layer.index_select(0, (every_layer + batch[s]).flatten())
            self._slot_layers[s] = gathered.float().view(layers, size * dims)
            mixed = self._mixing[rows] @ self._slot_layers[s]
            x[singles:].index_copy_(0, rows, mixed.view(len(rows), size, dims))
        self._x, self._view = x, view

        first = self._buffer("first", (probes, size, params["w1"].shape[2]))
        torch.baddbmm(params["b1"], x, params["w1"], out=first)
        if self.kind == "linear":
            return first
        gate = self._buffer("gate", first.shape, torch.bool)
        torch.gt(first, 0, out=gate)
        self._scale = 1.0
        if keep is not None and self.dropout > 0:
            gate.logical_and_(keep[slot])
            self._scale = 1 / (1 - self.dropout)
        hidden = first.mul_(gate)  # ReLU and dropout as one 0/1 gate, then the dropout scale
        if self._scale != 1.0:
            hidden.mul_(self._scale)
        self._gate, self._hidden = gate, hidden
        out = self._buffer("out", (probes, size, params["w2"].shape[2]))
        return torch.baddbmm(params["b2"], hidden, params["w2"], out=out)

    def gradients(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gradients of each probe's mean BCE-with-logits loss, ``targets [slots, batch, tags]``,
        for the last :meth:`logits` call.

        Returned for every trained tensor (``mix`` of single-layer probes is zero), in reused
        buffers valid until the next call.
        """
        params, singles = self._view.params, self._view.singles
        probes, batch, tags = logits.shape
        grads = {
            name: self._buffer(f"grad_{name}", params[name].shape)
            for name in params
            if name != "layer"
        }
        error = torch.sigmoid(logits).sub_(targets[self._view.slot]).div_(batch * tags)
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
        weighted = probes - singles
        if weighted:
            to_input = self._buffer("to_input", (weighted, batch, self._x.shape[2]))
            torch.bmm(upstream[singles:], params["w1"][singles:].transpose(1, 2), out=to_input)
            for s, rows in self._view.groups:
                per_layer = to_input[rows].view(len(rows), -1) @ self._slot_layers[s].T
                mixing = self._mixing[rows]
                softmax_grad = mixing * (per_layer - (mixing * per_layer).sum(-1, keepdim=True))
                grads["mix"][singles:].index_copy_(0, rows, softmax_grad)
        return grads
