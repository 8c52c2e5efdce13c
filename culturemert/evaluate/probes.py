"""Probes on cached features: a whole grid of MLP or linear probes trained as one batched model.

A probe reads one hidden layer, or a learnable softmax weighting of all layers (initialised
uniform, as :class:`culturemert.embedding.LayerWeighting`), and predicts tags with BCE-with-logits,
Adam and batch 64. Instead of one training run per (layer, learning rate, seed), every weight
carries a leading probe axis and goes through batched products (:mod:`.probe_math`): one pass
over the data trains the whole grid, on any device. On a CPU the grid is split into blocks of
probes, one per thread; on a GPU it runs as one block. Each probe keeps its own early stopping on
validation macro ROC-AUC, its own best weights and its own learning rate, lowered as
``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode max, torch's default threshold, cooldown
and minimum) lowers it after ``lr_patience`` epochs without a gain; probes that have stopped
leave the computation. Probes with the same seed share an initialisation, a shuffling of the
training windows (``torch.randperm`` driven by a CPU generator seeded with that seed, one
permutation per epoch) and their dropout masks (:func:`.probe_math.dropout_keep`), so a probe's
result depends neither on the other probes, nor on the thread count, nor on the device beyond
floating-point rounding.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam
from tqdm.auto import tqdm

from culturemert.evaluate.metrics import macro_roc_auc
from culturemert.evaluate.probe_math import GridView, ProbePasses, dropout_keep, weighted_groups
from culturemert.evaluate.settings import ProbeSettings

#: ``ProbeSpec.layer`` of a probe on the learnable softmax weighting of all layers.
WEIGHTED = -1
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_EVAL_FLOATS = 1 << 25  # activations held at once when scoring (128 MB of float32)
_PLATEAU_THRESHOLD = 1e-4  # ReduceLROnPlateau's defaults: relative gain needed, smallest change
_PLATEAU_EPS = 1e-8


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a grid: the layer it reads (or :data:`WEIGHTED`), its learning rate, seed."""

    layer: int
    lr: float
    seed: int = 0


@dataclass
class WindowData:
    """Pooled window features with their tracks' labels (what probes train and are scored on)."""

    features: np.ndarray  # [windows, layers, dims], float16 memory map or any float array
    track_index: np.ndarray  # [windows] -> row of ``labels``
    labels: np.ndarray  # [tracks, tags] of 0/1

    def __post_init__(self):
        if self.features.ndim != 3 or len(self.features) != len(self.track_index):
            raise ValueError(
                f"features {self.features.shape} must be [windows, layers, dims] with one "
                f"track index per window ({len(self.track_index)} given)"
            )

    @cached_property
    def by_layer(self) -> torch.Tensor:
        """The features in memory as ``[layers, windows, dims]``, in their stored precision."""
        layers_first = np.asarray(self.features).transpose(1, 0, 2)
        return torch.from_numpy(np.array(layers_first, order="C"))  # a copy, even of a memmap


@dataclass
class ProbeRun:
    """A trained grid: best weights per probe, their epochs and validation scores."""

    specs: list[ProbeSpec]
    settings: ProbeSettings
    params: dict[str, torch.Tensor]  # best weights, leading axis = probe, on the trainer's device
    best_epoch: np.ndarray  # [probes], 0-based
    best_score: np.ndarray  # [probes], validation macro ROC-AUC at the best epoch
    history: np.ndarray  # [probes, epochs], validation macro ROC-AUC (nan once stopped)
    lr_history: np.ndarray  # [probes, epochs], learning rate of each epoch (nan once stopped)

    @property
    def device(self) -> torch.device:
        """Where the weights live and predictions are computed."""
        return self.params["w1"].device

    def predict(self, data: WindowData, probes: list[int] | None = None) -> np.ndarray:
        """Track probabilities ``[probes, tracks, tags]``: window logits averaged per track."""
        rows = torch.as_tensor(range(len(self.specs)) if probes is None else probes)
        params = {name: value[rows.to(value.device)] for name, value in self.params.items()}
        params, inverse = _singles_first(params)
        singles = int((params["layer"] != WEIGHTED).sum())
        passes = ProbePasses(self.settings.kind, self.settings.dropout, self.device)
        table = data.by_layer.to(self.device)
        logits = _track_logits(params, singles, table, data, passes)[inverse.to(self.device)]
        return torch.sigmoid(logits.double()).cpu().numpy()  # float64: no ties from saturation

    def layer_weights(self) -> np.ndarray:
        """Each probe's weights over layers ``[probes, layers]`` (one-hot for single layers)."""
        return _layer_weights(self.params).cpu().numpy()


def init_params(
    specs: list[ProbeSpec], layers: int, dims: int, tags: int, settings: ProbeSettings
) -> dict[str, torch.Tensor]:
    """Initial weights of every probe, drawn on the CPU as ``torch.nn.Linear`` does from its seed.

    Weights are stored ``[probes, in, out]`` (transposed from ``nn.Linear``); ``mix`` holds the
    layer-weighting logits (zeros, i.e. uniform) and ``layer`` each probe's layer or
    :data:`WEIGHTED`.
    """
    bad = [s.layer for s in specs if not (s.layer == WEIGHTED or 0 <= s.layer < layers)]
    if bad:
        raise ValueError(f"probe layers {sorted(set(bad))} out of range for {layers} layers")
    shapes = [(dims, settings.hidden), (settings.hidden, tags)]
    if settings.kind == "linear":
        shapes = [(dims, tags)]
    per_probe = []
    for spec in specs:
        generator = torch.Generator().manual_seed(spec.seed)
        drawn = []
        for fan_in, fan_out in shapes:
            bound = fan_in**-0.5
            weight = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=generator)
            bias = torch.empty(1, fan_out).uniform_(-bound, bound, generator=generator)
            drawn += [weight.T.contiguous(), bias]
        per_probe.append(drawn)
    names = ["w1", "b1", "w2", "b2"] if settings.kind == "mlp" else ["w1", "b1"]
    params = {name: torch.stack([p[i] for p in per_probe]) for i, name in enumerate(names)}
    params["mix"] = torch.zeros(len(specs), layers)
    params["layer"] = torch.tensor([spec.layer for spec in specs])
    return params


def _layer_weights(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Layer weights ``[probes, layers]``: softmax of ``mix`` for weighted probes, else one-hot."""
    layer = params["layer"]
    onehot = F.one_hot(layer.clamp(min=0), params["mix"].shape[1]).float()
    return torch.where((layer == WEIGHTED)[:, None], torch.softmax(params["mix"], -1), onehot)


def _singles_first(params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Params reordered so single-layer probes precede weighted ones, and the inverse order."""
    order = torch.argsort((params["layer"] == WEIGHTED).int().cpu(), stable=True)
    return {k: v[order.to(v.device)] for k, v in params.items()}, order.argsort()


def _track_logits(
    params: dict[str, torch.Tensor],
    singles: int,
    table: torch.Tensor,
    data: WindowData,
    passes: ProbePasses,
) -> torch.Tensor:
    """Window logits averaged per track, ``[probes, tracks, tags]``, of probes whose first
    ``singles`` read one layer; ``table`` is ``data``'s features ``[layers, windows, dims]`` on
    the probes' device."""
    probes, dims, width = params["w1"].shape
    slot = torch.zeros(probes, dtype=torch.long, device=table.device)  # all read every window
    view = GridView(params, singles, slot, weighted_groups(slot, singles))
    chunk = max(1, _EVAL_FLOATS // (probes * (dims + width)))
    device = table.device
    index = torch.as_tensor(np.asarray(data.track_index), dtype=torch.long, device=device)
    tracks, tags = data.labels.shape
    total = torch.zeros(probes, tracks, tags, device=device)
    for start in range(0, len(index), chunk):
        windows = torch.arange(start, min(start + chunk, len(index)), device=device)
        logits = passes.logits(view, table, windows[None])
        total.index_add_(1, index[windows], logits)
    counts = torch.bincount(index, minlength=tracks).clamp(min=1)
    return total / counts[None, :, None]


@dataclass
class Plateau:
    """``ReduceLROnPlateau(mode="max")`` state per probe: its rate, best score, epochs without gain."""

    rate: np.ndarray  # float64, as torch keeps a param group's rate
    best: np.ndarray
    bad_epochs: np.ndarray

    @classmethod
    def start(cls, rates: list[float]) -> Plateau:
        """Every probe at its initial rate, with no score seen yet."""
        n = len(rates)
        return cls(np.array(rates, dtype=np.float64), np.full(n, -np.inf), np.zeros(n, int))

    def step(self, scores: np.ndarray, factor: float, patience: int) -> None:
        """One epoch's validation scores in; each stalled probe's rate multiplied by ``factor``."""
        better = scores > self.best * (1 + _PLATEAU_THRESHOLD)
        self.best = np.where(better, scores, self.best)
        self.bad_epochs = np.where(better, 0, self.bad_epochs + 1)
        reduce = self.bad_epochs > patience
        lowered = self.rate * factor
        self.rate = np.where(reduce & (self.rate - lowered > _PLATEAU_EPS), lowered, self.rate)
        self.bad_epochs[reduce] = 0

    def subset(self, keep: np.ndarray) -> Plateau:
        """The state of the probes selected by the boolean mask ``keep``."""
        return Plateau(self.rate[keep], self.best[keep], self.bad_epochs[keep])


def _adam_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    moments: list[torch.Tensor],
    squares: list[torch.Tensor],
    rates: np.ndarray,
    step: int,
) -> None:
    """``torch.optim.Adam``'s fused update of ``[probes, ...]`` tensors, each probe at its rate.

    One call per run of adjacent probes sharing a rate, on contiguous slices: the fused kernel
    is several times faster on a few large tensors than on a long list of per-probe ones.
    """
    device = params[0].device
    bounds = [0, *(np.flatnonzero(np.diff(rates)) + 1).tolist(), len(rates)]
    for low, high in itertools.pairwise(bounds):
        views = [[t[low:high] for t in group] for group in (params, grads, moments, squares)]
        # adam() counts this step; the fused kernel wants its step counters beside the weights.
        steps = [torch.full((), step - 1.0, device=device) for _ in views[0]]
        with torch.no_grad():
            adam(
                *views,
                [],
                steps,
                fused=True,
                amsgrad=False,
                beta1=_ADAM_BETAS[0],
                beta2=_ADAM_BETAS[1],
                lr=float(rates[low]),
                weight_decay=0.0,
                eps=_ADAM_EPS,
                maximize=False,
            )


@dataclass
class _Grid:
    """The probes still training (single-layer ones first) and their optimiser state."""

    state: dict[str, torch.Tensor]  # weights; ``layer`` says what each probe reads
    moments: dict[str, torch.Tensor]
    squares: dict[str, torch.Tensor]
    plateau: Plateau
    slot: torch.Tensor  # which shuffling (seed) each probe follows, on the grid's device
    rows: np.ndarray  # each probe's row in the caller's order
    singles: int

    def shards(self, workers: int) -> list[slice]:
        """Contiguous blocks of about equal work, one per worker (a weighted probe costs 1.5)."""
        probes = len(self.slot)
        cost = np.cumsum(np.where(np.arange(probes) < self.singles, 2.0, 3.0))
        cuts = np.searchsorted(cost, cost[-1] * np.arange(1, workers) / workers) + 1
        bounds = [0, *np.minimum(cuts, probes).tolist(), probes]
        return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]

    def part(self, rows: slice) -> tuple[dict[str, torch.Tensor], int]:
        """Views of the weights of ``rows`` and how many of them are single-layer probes."""
        singles = min(max(self.singles - rows.start, 0), rows.stop - rows.start)
        return {k: v[rows] for k, v in self.state.items()}, singles

    def train_epoch(
        self,
        rows: slice,
        passes: ProbePasses,
        table: torch.Tensor,
        orders: torch.Tensor,
        targets: torch.Tensor,
        seeds: list[int],
        batch_size: int,
        step: int,
    ) -> None:
        """One epoch of Adam steps of the probes ``rows``, numbered from ``step + 1``.

        ``orders [slots, windows]`` is each shuffling's window order, ``seeds`` each slot's seed;
        ``targets`` the training windows' labels.
        """
        params, singles = self.part(rows)
        slot = self.slot[rows]
        view = GridView(params, singles, slot, weighted_groups(slot, singles))
        names = [k for k in params if k != "layer"]
        hidden = view.params["w1"].shape[2]
        for start in range(0, orders.shape[1], batch_size):
            batch = orders[:, start : start + batch_size]
            step += 1
            keep = None
            if passes.kind == "mlp" and passes.dropout > 0:
                shape = (batch.shape[1], hidden)
                keep = dropout_keep(seeds, step, shape, passes.dropout, table.device)
            logits = passes.logits(view, table, batch, keep)
            grads = passes.gradients(logits, targets[batch])
            _adam_step(
                [view.params[k] for k in names],
                [grads[k] for k in names],
                [self.moments[k][rows] for k in names],
                [self.squares[k][rows] for k in names],
                self.plateau.rate[rows],
                step,
            )

    def keep(self, keep: np.ndarray) -> None:
        """Drop the probes not in the boolean mask ``keep`` from the model and its optimiser."""
        index = torch.as_tensor(keep).to(self.slot.device)
        self.singles = int(keep[: self.singles].sum())
        self.state = {k: v[index] for k, v in self.state.items()}
        self.moments = {k: v[index] for k, v in self.moments.items()}
        self.squares = {k: v[index] for k, v in self.squares.items()}
        self.plateau = self.plateau.subset(keep)
        self.slot = self.slot[index]
        self.rows = self.rows[keep]


@contextmanager
def _workers(count: int, device: torch.device):
    """A pool of ``count`` threads; on a CPU, torch's own threading off meanwhile.

    On a CPU the grid is split into contiguous blocks, one per thread, each running its
    products on one core: many small products gain more from this than from torch splitting
    each of them. A GPU runs the whole grid from one thread.
    """
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(count) as pool:
            yield pool
    finally:
        torch.set_num_threads(previous)


def train_probes(
    specs: list[ProbeSpec],
    train: WindowData,
    valid: WindowData,
    settings: ProbeSettings = ProbeSettings(),
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> ProbeRun:
    """Train every probe in ``specs`` together on ``device``; each stops early and keeps its
    best epoch. On a CPU, runs on as many threads as torch is set to use."""
    if not specs:
        raise ValueError("no probes to train")
    device = torch.device(device)
    _, layers, dims = train.features.shape
    tags = train.labels.shape[1]
    valid_labels = torch.as_tensor(valid.labels, device=device)
    if not bool(((valid_labels.sum(0) > 0) & (valid_labels.sum(0) < len(valid_labels))).any()):
        raise ValueError("no tag has both positive and negative tracks in the validation split")
    table = train.by_layer.to(device)
    valid_table = valid.by_layer.to(device)
    track_index = torch.as_tensor(np.asarray(train.track_index), dtype=torch.long, device=device)
    y_train = torch.as_tensor(train.labels, dtype=torch.float32, device=device)[track_index]
    windows = table.shape[1]

    params = init_params(specs, layers, dims, tags, settings)
    state, inverse = _singles_first({k: v.to(device) for k, v in params.items()})
    order = inverse.argsort().numpy()
    specs_in_order = [specs[i] for i in order]
    seeds = sorted({s.seed for s in specs})
    learned = [k for k in state if k != "layer"]  # single-layer probes keep ``mix`` at zero
    grid = _Grid(
        state=state,
        moments={k: torch.zeros_like(state[k]) for k in learned},
        squares={k: torch.zeros_like(state[k]) for k in learned},
        plateau=Plateau.start([s.lr for s in specs_in_order]),
        slot=torch.tensor([seeds.index(s.seed) for s in specs_in_order], device=device),
        rows=order,
        singles=sum(s.layer != WEIGHTED for s in specs),
    )
    best = {k: v[inverse.to(device)].clone() for k, v in state.items()}  # the caller's order
    shufflings = [torch.Generator().manual_seed(seed) for seed in seeds]
    best_score = np.full(len(specs), -np.inf)
    best_epoch = np.full(len(specs), -1)
    history = np.full((len(specs), settings.max_epochs), np.nan)
    lr_history = history.copy()

    bar = tqdm(
        total=settings.max_epochs,
        desc=f"{settings.kind} probes",
        unit="epoch",
        disable=not progress,
    )
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    passes = [ProbePasses(settings.kind, settings.dropout, device) for _ in range(workers)]
    step = 0
    with _workers(workers, device) as pool:
        for epoch in range(settings.max_epochs):
            shards = grid.shards(workers)
            orders = torch.stack([torch.randperm(windows, generator=g) for g in shufflings])
            orders = orders.to(device)
            # Blocks of probes are independent within an epoch: each thread runs its own.
            work = [
                pool.submit(
                    grid.train_epoch,
                    rows,
                    own,
                    table,
                    orders,
                    y_train,
                    seeds,
                    settings.batch_size,
                    step,
                )
                for rows, own in zip(shards, passes, strict=False)
            ]
            for job in work:
                job.result()
            step += -(-windows // settings.batch_size)
            parts = pool.map(
                lambda rows, own: _track_logits(*grid.part(rows), valid_table, valid, own),
                shards,
                passes,
            )
            scores = macro_roc_auc(torch.cat(list(parts)), valid_labels).cpu().numpy()
            rows = grid.rows
            history[rows, epoch] = scores
            lr_history[rows, epoch] = grid.plateau.rate
            grid.plateau.step(scores, settings.lr_factor, settings.lr_patience)
            improved = np.flatnonzero(scores > best_score[rows])
            if len(improved):
                source = torch.as_tensor(improved, device=device)
                target = torch.as_tensor(rows[improved], device=device)
                for name, value in grid.state.items():
                    best[name].index_copy_(0, target, value.index_select(0, source))
                best_score[rows[improved]] = scores[improved]
                best_epoch[rows[improved]] = epoch
            keep = epoch - best_epoch[rows] < settings.patience
            bar.set_postfix(active=int(keep.sum()), best=f"{np.nanmax(best_score):.4f}")
            bar.update()
            if not keep.any():
                break
            if not keep.all():
                grid.keep(keep)
    bar.close()
    return ProbeRun(
        specs=list(specs),
        settings=settings,
        params=best,
        best_epoch=best_epoch,
        best_score=best_score,
        history=history[:, : epoch + 1],
        lr_history=lr_history[:, : epoch + 1],
    )
