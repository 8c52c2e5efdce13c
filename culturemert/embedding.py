"""Hidden states of waveforms: every layer, pooled over time per window, or frame by frame.

:func:`embed_stream` is the one extraction core. It cuts each waveform into windows, runs
windows of equal length through the encoder in shared batches (also across waveforms), pools
each window's frames on the encoder's device (or keeps them all, ``pool=None``) and yields each
waveform's features in input order. :func:`embed` is that core on one waveform; ``culturemert
extract``, the evaluation feature cache and :mod:`culturemert.hear` feed it.

Frame-level windows start every ``W`` samples (``W`` a multiple of the 320-sample hop) and read
``W + 80`` samples, so each holds exactly the frames that start inside it: successive windows'
frames join without gaps or duplicates, and a track gets the frame count of one whole forward.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from culturemert.frames import HOP_SAMPLES, MIN_SAMPLES, POOLS
from culturemert.model.encoder import Encoder, as_encoder

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


def frame_window(window_seconds: float, sample_rate: int) -> int:
    """Samples between frame-level windows: ``window_seconds`` rounded to whole hops (≥ one)."""
    return max(1, round(window_seconds * sample_rate / HOP_SAMPLES)) * HOP_SAMPLES


def frame_bounds(n_samples: int, window: int) -> list[tuple[int, int]]:
    """Frame-level windows: every ``window`` samples (whole hops), each reading ``window + 80``.

    Window ``k`` then holds the frames starting in ``[k·window, (k+1)·window)``, all that fit in
    the waveform; a tail too short for one frame holds none and is left out.
    """
    if window <= 0 or window % HOP_SAMPLES:
        raise ValueError(
            f"window must be a positive multiple of {HOP_SAMPLES} samples, got {window}"
        )
    reach = window + MIN_SAMPLES - HOP_SAMPLES
    return [
        (start, min(start + reach, n_samples))
        for start in range(0, n_samples, window)
        if n_samples - start >= MIN_SAMPLES
    ]


def frame_times(n_frames: int, sample_rate: int) -> np.ndarray:
    """Centre of each encoder frame in seconds: ``(i·320 + 200) / sample_rate``."""
    starts = np.arange(n_frames, dtype=np.float64) * HOP_SAMPLES
    return (starts + MIN_SAMPLES / 2) / sample_rate


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


def check_pool(pool: str | None) -> None:
    """Refuse a pooling name that is neither one of :data:`POOLS` nor None (frames)."""
    if pool is not None and pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)} or none, got {pool!r}")


def pool_frames(hidden: torch.Tensor, pool: str | None) -> torch.Tensor:
    """Pool ``[..., frames, dims]`` over frames in float32: mean, max, or mean and std side by
    side; ``None`` keeps the frames (``[..., frames, dims]``), else one pooled frame."""
    check_pool(pool)
    hidden = hidden.float()
    if pool is None:
        return hidden
    if pool == "mean":
        return hidden.mean(dim=-2)
    if pool == "max":
        return hidden.amax(dim=-2)
    std, mean = torch.std_mean(hidden, dim=-2, correction=0)  # mean+std
    return torch.cat([mean, std], dim=-1)


@dataclass
class _Waveform:
    """One input of the stream while its windows are in flight."""

    key: Hashable
    error: str | None = None
    pooled: list[torch.Tensor | None] = field(default_factory=list)
    waiting: int = 0


class _Batcher:
    """Windows grouped by length; a group runs as one batch once full, or when pushed."""

    def __init__(self, encoder: Encoder, layers: Layers, pool: str | None, batch_size: int):
        self.encoder, self.layers, self.pool, self.batch_size = encoder, layers, pool, batch_size
        self.groups: dict[int, list[tuple[_Waveform, int, torch.Tensor]]] = {}
        self.chosen: list[int] | None = None

    @property
    def pending(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def add(self, owner: _Waveform, position: int, window: torch.Tensor) -> None:
        group = self.groups.setdefault(window.numel(), [])
        group.append((owner, position, window))
        if len(group) >= self.batch_size:
            self.run(window.numel())

    def run(self, length: int) -> None:
        """One forward pass over the first windows of the group of ``length`` samples."""
        group = self.groups[length]
        batch, self.groups[length] = group[: self.batch_size], group[self.batch_size :]
        if not self.groups[length]:
            del self.groups[length]
        hidden_states = self.encoder.hidden_states(torch.stack([window for _, _, window in batch]))
        if self.chosen is None:
            self.chosen = select_layers(self.layers, len(hidden_states))
        pooled = torch.stack([pool_frames(hidden_states[i], self.pool) for i in self.chosen], 1)
        if self.pool is not None:
            pooled = pooled.unsqueeze(2)  # one frame per window
        for (owner, position, _), row in zip(batch, pooled.cpu(), strict=True):
            owner.pooled[position] = row  # [layers, frames, dims]
            owner.waiting -= 1

    def run_oldest(self, owner: _Waveform) -> None:
        """Run the group holding a window of ``owner`` (the oldest unfinished input)."""
        for length, group in self.groups.items():
            if any(item[0] is owner for item in group):
                self.run(length)
                return


@torch.inference_mode()
def embed_stream(
    encoder: Encoder | nn.Module,
    waveforms: Iterable[tuple[Hashable, np.ndarray | torch.Tensor | None]],
    *,
    layers: Layers = "all",
    pool: str | None = "mean",
    window_seconds: float | None = None,
    drop_last: bool = False,
    batch_size: int = 4,
) -> Iterator[tuple[Hashable, np.ndarray | None, str | None]]:
    """Features of each ``(key, waveform)``, yielded in input order as ``(key, features, error)``.

    Waveforms are mono at the encoder's rate. Features are ``[layers, windows, dims]`` with
    ``window_seconds``, else ``[layers, dims]`` of the whole waveform; ``pool=None`` gives every
    frame, ``[layers, frames, dims]`` (times: :func:`frame_times`), windowed or whole. A waveform
    given as None, or too short for one window, yields ``(key, None, reason)``. Only windows of
    equal length share a batch, because zero-padding changes MERT's features (its first
    convolution is followed by GroupNorm over time); batching changes their last bits only.
    """
    check_pool(pool)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    encoder = as_encoder(encoder)
    rate, window = encoder.preprocessing.sample_rate, None
    if window_seconds is not None and pool is None:
        window = frame_window(window_seconds, rate)
    elif window_seconds is not None:
        window = round(window_seconds * rate)
    device, dtype = encoder.device, encoder.dtype
    batcher = _Batcher(encoder, layers, pool, batch_size)
    in_flight: deque[_Waveform] = deque()
    # Windows wait for partners of their length; past this many, the oldest group runs anyway.
    most_pending = 4 * batch_size

    def finished() -> Iterator[tuple[Hashable, np.ndarray | None, str | None]]:
        while in_flight and in_flight[0].waiting == 0:
            done = in_flight.popleft()
            if done.error is not None:
                yield done.key, None, done.error
                continue
            features = torch.cat(done.pooled, dim=1).numpy()  # [layers, windows|frames, dims]
            whole_pooled = window is None and pool is not None
            yield done.key, (features[:, 0] if whole_pooled else features), None

    for key, waveform in waveforms:
        owner = _Waveform(key)
        in_flight.append(owner)
        if waveform is None:
            owner.error = "no waveform"
        else:
            signal = torch.as_tensor(waveform).reshape(-1)
            bounds = [(0, signal.numel())]
            if window is not None and pool is None:
                bounds = frame_bounds(signal.numel(), window)
            elif window is not None:
                bounds = window_bounds(signal.numel(), window, drop_last=drop_last)
            if signal.numel() < MIN_SAMPLES:
                owner.error = f"{signal.numel()} samples; at least {MIN_SAMPLES} needed"
            elif not bounds:
                owner.error = "no window of at least one frame fits in the waveform"
            else:
                signal = signal.to(device=device, dtype=dtype, non_blocking=True)
                owner.pooled, owner.waiting = [None] * len(bounds), len(bounds)
                for position, (start, end) in enumerate(bounds):
                    batcher.add(owner, position, signal[start:end])
        while batcher.pending > most_pending:
            batcher.run_oldest(next(w for w in in_flight if w.waiting))
        yield from finished()
    while batcher.pending:
        batcher.run_oldest(next(w for w in in_flight if w.waiting))
        yield from finished()
    yield from finished()


def embed(
    encoder: Encoder | nn.Module,
    waveform: np.ndarray | torch.Tensor,
    *,
    layers: Layers = "all",
    pool: str | None = "mean",
    window_seconds: float | None = None,
    drop_last: bool = False,
    batch_size: int = 4,
) -> np.ndarray:
    """Pooled hidden states of a mono waveform at the encoder's rate: ``[layers, dims]``.

    With ``window_seconds`` the waveform is cut into non-overlapping windows, giving
    ``[layers, windows, dims]``; ``pool=None`` gives every frame, ``[layers, frames, dims]``.
    The one-waveform case of :func:`embed_stream`.
    """
    [(_, features, error)] = embed_stream(
        encoder,
        [(0, waveform)],
        layers=layers,
        pool=pool,
        window_seconds=window_seconds,
        drop_last=drop_last,
        batch_size=batch_size,
    )
    if error is not None:
        raise ValueError(f"waveform: {error}")
    return features


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
