"""Probes on cached features: a whole grid of MLP or linear probes trained as one batched model.

A probe reads one hidden layer, or a learnable softmax weighting of all layers (initialised
uniform, as :class:`culturemert.embedding.LayerWeighting`), and predicts tags with BCE-with-logits,
Adam and batch 64. Instead of one training run per (layer, learning rate, seed), every weight
carries a leading probe axis and goes through ``torch.bmm``: one pass over the data trains the
whole grid. Each probe keeps its own early stopping on validation macro ROC-AUC, its own best
weights and its own learning rate, lowered as ``torch.optim.lr_scheduler.ReduceLROnPlateau``
(mode max, torch's default threshold, cooldown and minimum) lowers it after ``lr_patience``
epochs without a gain; probes that have stopped leave the computation. Probes with the same
seed share an initialisation and a shuffling of the training windows (``torch.randperm``
driven by a generator seeded with that seed, one permutation per epoch).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam
from tqdm.auto import tqdm

#: ``ProbeSpec.layer`` of a probe on the learnable softmax weighting of all layers.
WEIGHTED = -1
KINDS = ("mlp", "linear")
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


@dataclass(frozen=True)
class ProbeSettings:
    """Architecture and training schedule shared by every probe of one batched run."""

    kind: str = "mlp"
    hidden: int = 512
    dropout: float = 0.2
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 10  # early stopping: epochs without a better validation ROC-AUC
    lr_factor: float = 0.5  # ReduceLROnPlateau: rate *= factor (1.0: constant rate) ...
    lr_patience: int = 3  # ... after this many epochs without a gain

    def __post_init__(self):
        if not 0.0 < self.lr_factor <= 1.0 or self.lr_patience < 0:
            raise ValueError(
                f"lr_factor must be in (0, 1] and lr_patience >= 0, got {self.lr_factor} "
                f"and {self.lr_patience}"
            )


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


@dataclass
class ProbeRun:
    """A trained grid: best weights per probe, their epochs and validation scores."""

    specs: list[ProbeSpec]
    settings: ProbeSettings
    params: dict[str, torch.Tensor]  # best weights, leading axis = probe
    best_epoch: np.ndarray  # [probes], 0-based
    best_score: np.ndarray  # [probes], validation macro ROC-AUC at the best epoch
    history: np.ndarray  # [probes, epochs], validation macro ROC-AUC (nan once stopped)
    lr_history: np.ndarray  # [probes, epochs], learning rate of each epoch (nan once stopped)

    def predict(self, data: WindowData, probes: list[int] | None = None) -> np.ndarray:
        """Track probabilities ``[probes, tracks, tags]``: window logits averaged per track."""
        rows = torch.as_tensor(range(len(self.specs)) if probes is None else probes)
        params = {name: value[rows] for name, value in self.params.items()}
        logits = _track_logits(params, self.settings, data)
        return torch.sigmoid(logits.double()).numpy()  # float64: no ties from saturation

    def layer_weights(self) -> np.ndarray:
        """Each probe's weights over layers ``[probes, layers]`` (one-hot for single layers)."""
        return _layer_weights(self.params).numpy()


def macro_roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Macro ROC-AUC of ``scores [..., tracks, tags]`` against 0/1 ``labels [tracks, tags]``.

    Rank-based (Mann-Whitney U with average ranks for ties), batched over leading axes. Tags
    without both a positive and a negative track are left out of the mean.
    """
    n = scores.shape[-2]
    values, order = scores.transpose(-1, -2).double().sort(dim=-1)  # [..., tags, tracks]
    truth = labels.T.double().expand_as(values).gather(-1, order)
    position = torch.arange(n).expand_as(values)
    differs = values[..., 1:] != values[..., :-1]
    edge = torch.ones_like(differs[..., :1])
    run_start = torch.where(torch.cat([edge, differs], -1), position, 0).cummax(-1).values
    is_end = torch.cat([differs, edge], -1)
    run_end = torch.where(is_end, position, n - 1).flip(-1).cummin(-1).values.flip(-1)
    ranks = (run_start + run_end).double() / 2 + 1
    positives = labels.double().sum(0)
    negatives = n - positives
    u = (ranks * truth).sum(-1) - positives * (positives + 1) / 2
    kept = (positives > 0) & (negatives > 0)
    return (u[..., kept] / (positives * negatives)[kept]).mean(-1)


def init_params(
    specs: list[ProbeSpec], layers: int, dims: int, tags: int, settings: ProbeSettings
) -> dict[str, torch.Tensor]:
    """Initial weights of every probe, drawn as ``torch.nn.Linear`` does from its seed.

    Weights are stored ``[probes, in, out]`` (transposed from ``nn.Linear``); ``mix`` holds the
    layer-weighting logits (zeros, i.e. uniform) and ``layer`` each probe's layer or
    :data:`WEIGHTED`.
    """
    if settings.kind not in KINDS:
        raise ValueError(f"probe kind must be one of {', '.join(KINDS)}, got {settings.kind!r}")
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
    order = torch.argsort((params["layer"] == WEIGHTED).int(), stable=True)
    return {k: v[order] for k, v in params.items()}, order.argsort()


def _by_kind(params: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Views of the single-layer probes' params and of the weighted ones' (singles come first)."""
    single = int((params["layer"] != WEIGHTED).sum())
    return {k: v[:single] for k, v in params.items()}, {k: v[single:] for k, v in params.items()}


def _head(weights: dict[str, torch.Tensor], settings: ProbeSettings, x: torch.Tensor):
    """Linear or MLP head over ``x [probes, batch, dims]`` with weights ``w1, b1[, w2, b2]``."""
    hidden = torch.baddbmm(weights["b1"], x, weights["w1"])
    if settings.kind == "linear":
        return hidden
    hidden = F.dropout(torch.relu(hidden), settings.dropout, torch.is_grad_enabled())
    return torch.baddbmm(weights["b2"], hidden, weights["w2"])


def _forward(
    kinds: tuple[dict, dict],
    settings: ProbeSettings,
    features: torch.Tensor,
    slot: torch.Tensor,
) -> torch.Tensor:
    """Logits ``[probes, batch, tags]``; probe ``p`` reads the batch ``features[slot[p]]``.

    ``kinds`` holds the single-layer probes' params and the weighted ones' (:func:`_by_kind`),
    in that order; ``features`` is ``[slots, batch, layers, dims]``, one batch per shuffling
    (seed). Single-layer probes read their layer without a gradient to the input (as a probe
    trained alone would); weighted ones back-propagate into their mixing. Keeping the two kinds
    in separate tensors spares the backward pass a copy of every weight gradient. Dropout is
    active while gradients are recorded.
    """
    singles, weighted = kinds
    single = len(singles["layer"])
    logits = []
    if single:
        x = features[slot[:single], :, singles["layer"]]  # [probes, batch, dims]
        logits.append(_head(singles, settings, x))
    if len(weighted["layer"]):
        mixing = torch.softmax(weighted["mix"], dim=-1)
        slots = slot[single:]
        groups = [torch.nonzero(slots == s).flatten() for s in slots.unique()]
        pieces = [
            torch.einsum("bld,pl->pbd", features[slots[rows[0]]], mixing[rows]) for rows in groups
        ]
        x = torch.cat(pieces)[torch.cat(groups).argsort()]
        logits.append(_head(weighted, settings, x))
    return torch.cat(logits)


def _track_logits(
    params: dict[str, torch.Tensor], settings: ProbeSettings, data: WindowData
) -> torch.Tensor:
    """Window logits averaged per track: ``[probes, tracks, tags]``."""
    params, inverse = _singles_first(params)
    probes, dims, width = params["w1"].shape
    chunk = max(1, _EVAL_FLOATS // (probes * (dims + width)))
    index = torch.as_tensor(np.asarray(data.track_index), dtype=torch.long)
    tracks, tags = data.labels.shape
    total = torch.zeros(probes, tracks, tags)
    same_batch = torch.zeros(probes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(index), chunk):
            x = torch.from_numpy(np.array(data.features[start : start + chunk], dtype=np.float32))
            logits = _forward(_by_kind(params), settings, x[None], same_batch)
            total.index_add_(1, index[start : start + chunk], logits)
    counts = torch.bincount(index, minlength=tracks).clamp(min=1)
    return (total / counts[None, :, None])[inverse]


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
    bounds = [0, *(np.flatnonzero(np.diff(rates)) + 1).tolist(), len(rates)]
    for low, high in itertools.pairwise(bounds):
        views = [[t[low:high] for t in group] for group in (params, grads, moments, squares)]
        with torch.no_grad():
            adam(
                *views,
                [],
                [torch.tensor(float(step - 1)) for _ in views[0]],  # adam() counts this step
                fused=True,
                amsgrad=False,
                beta1=_ADAM_BETAS[0],
                beta2=_ADAM_BETAS[1],
                lr=float(rates[low]),
                weight_decay=0.0,
                eps=_ADAM_EPS,
                maximize=False,
            )


def train_probes(
    specs: list[ProbeSpec],
    train: WindowData,
    valid: WindowData,
    settings: ProbeSettings = ProbeSettings(),
    *,
    progress: bool = True,
) -> ProbeRun:
    """Train every probe in ``specs`` together; each stops early and keeps its best epoch."""
    if not specs:
        raise ValueError("no probes to train")
    _, layers, dims = train.features.shape
    tags = train.labels.shape[1]
    valid_labels = torch.as_tensor(valid.labels)
    if not bool(((valid_labels.sum(0) > 0) & (valid_labels.sum(0) < len(valid_labels))).any()):
        raise ValueError("no tag has both positive and negative tracks in the validation split")
    x_train = torch.tensor(np.asarray(train.features))  # in memory, in its stored precision
    track_index = torch.as_tensor(np.asarray(train.track_index), dtype=torch.long)
    y_train = torch.as_tensor(train.labels, dtype=torch.float32)[track_index]
    windows = len(x_train)

    state, inverse = _singles_first(init_params(specs, layers, dims, tags, settings))
    specs_in_order = [specs[i] for i in inverse.argsort()]
    heads = [k for k in state if k not in ("layer", "mix")]
    learned = (heads, [*heads, "mix"])  # what single-layer and weighted probes learn
    moments = {k: torch.zeros_like(state[k]) for k in learned[1]}
    squares = {k: torch.zeros_like(state[k]) for k in learned[1]}
    best = {k: v.clone() for k, v in state.items()}
    plateau = Plateau.start([s.lr for s in specs_in_order])
    seeds = sorted({s.seed for s in specs})
    slot = torch.tensor([seeds.index(s.seed) for s in specs_in_order])
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    active = torch.arange(len(specs))
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
    step = 0
    with torch.random.fork_rng():  # dropout masks: reproducible, global RNG left untouched
        torch.manual_seed(seeds[0])
        for epoch in range(settings.max_epochs):
            orders = torch.stack([torch.randperm(windows, generator=g) for g in generators])
            for start in range(0, windows, settings.batch_size):
                batch = orders[:, start : start + settings.batch_size]
                # Leaves sharing the state's memory, one set per kind of probe.
                kinds = tuple(
                    {k: v.detach().requires_grad_(k in keys) for k, v in part.items()}
                    for part, keys in zip(_by_kind(state), learned, strict=True)
                )
                present = [kind for kind in (0, 1) if len(kinds[kind]["layer"])]
                logits = _forward(kinds, settings, x_train[batch].float(), slot)
                targets = y_train[batch][slot]
                loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
                leaves = [kinds[kind][k] for kind in present for k in learned[kind]]
                # Summing per-probe means keeps every probe's gradient its own.
                grads = iter(torch.autograd.grad(loss.mean(dim=(1, 2)).sum(), leaves))
                step += 1
                single = len(kinds[0]["layer"])
                for kind in present:
                    rows = slice(0, single) if kind == 0 else slice(single, None)
                    _adam_step(
                        [state[k][rows] for k in learned[kind]],
                        [next(grads) for _ in learned[kind]],
                        [moments[k][rows] for k in learned[kind]],
                        [squares[k][rows] for k in learned[kind]],
                        plateau.rate[rows],
                        step,
                    )

            scores = macro_roc_auc(_track_logits(state, settings, valid), valid_labels).numpy()
            rows = active.numpy()
            history[rows, epoch] = scores
            lr_history[rows, epoch] = plateau.rate
            plateau.step(scores, settings.lr_factor, settings.lr_patience)
            improved = scores > best_score[rows]
            for name, value in state.items():
                best[name][torch.as_tensor(rows[improved])] = value[torch.as_tensor(improved)]
            best_score[rows[improved]] = scores[improved]
            best_epoch[rows[improved]] = epoch
            keep = torch.as_tensor(epoch - best_epoch[rows] < settings.patience)
            bar.set_postfix(active=int(keep.sum()), best=f"{np.nanmax(best_score):.4f}")
            bar.update()
            if not keep.any():
                break
            if not keep.all():  # drop stopped probes from the batched model and its optimiser
                active, slot, plateau = active[keep], slot[keep], plateau.subset(keep.numpy())
                state = {k: v[keep] for k, v in state.items()}
                moments = {k: m[keep] for k, m in moments.items()}
                squares = {k: v[keep] for k, v in squares.items()}
    bar.close()
    return ProbeRun(  # back in the caller's order
        specs=list(specs),
        settings=settings,
        params={k: v[inverse] for k, v in best.items()},
        best_epoch=best_epoch[inverse.numpy()],
        best_score=best_score[inverse.numpy()],
        history=history[inverse.numpy(), : epoch + 1],
        lr_history=lr_history[inverse.numpy(), : epoch + 1],
    )
