"""Probe selection on validation only: probe type, layer (or learned weighting), learning rate.

Every configuration is trained with every seed in batched passes (:mod:`.probes`); a
configuration's validation score is its macro ROC-AUC averaged over seeds, the best one is
chosen, and its seeds' test predictions, already computed in the same passes, become the
reported mean ± std. The test split never influences a choice.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from culturemert.evaluate.metrics import summarize_seeds, tagging_metrics
from culturemert.evaluate.probes import (
    WEIGHTED,
    ProbeSpec,
    WindowData,
    train_probes,
)
from culturemert.evaluate.settings import SelectionConfig

#: MARBLE's constrained-track learning-rate grid.


@dataclass
class Selection:
    """The chosen configuration, the validation score of every configuration, test predictions."""

    chosen: dict  # kind, layer (int or "weighted"), lr, validation mean/std, best epochs
    grid: list[dict]  # per (kind, layer, lr): validation mean and std over seeds, epochs run
    valid_scores: np.ndarray  # [seeds, tracks, tags] probabilities of the chosen configuration
    test_scores: np.ndarray | None  # [seeds, tracks, tags]
    layer_weights: list[float] | None = None  # mean learned weights, when the weighting won


def layer_name(layer: int) -> int | str:
    """A layer as written in results: its index, or ``"weighted"``."""
    return "weighted" if layer == WEIGHTED else layer


def probe_grid(config: SelectionConfig, layers: int) -> list[ProbeSpec]:
    """Every (layer, learning rate, seed) probe of one probe kind, a configuration's seeds adjacent.

    The learned weighting is left out when there is one layer only: it would equal that layer.
    """
    weighting = [WEIGHTED] if layers > 1 else []
    chosen = list(range(layers)) + weighting if config.layers is None else list(config.layers)
    return [
        ProbeSpec(layer, lr, seed)
        for layer, lr, seed in itertools.product(chosen, config.learning_rates, range(config.seeds))
    ]


def select_probe(
    train: WindowData,
    valid: WindowData,
    test: WindowData | None,
    config: SelectionConfig = SelectionConfig(),
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Selection:
    """Train the whole grid on ``device``, choose on validation ROC-AUC (mean over seeds), keep
    test scores. With ``test=None`` (a validation-only score), ``test_scores`` is None.
    """
    device = torch.device(device)
    specs = probe_grid(config, train.features.shape[1])
    per_pass = config.probes_per_pass or (84 if device.type == "cpu" else len(specs))
    # A pass holds whole configurations (all their seeds), so once it ends only the best
    # configuration so far needs its predictions kept.
    per_pass = max(1, per_pass // config.seeds) * config.seeds
    grid: list[dict] = []
    best: Selection | None = None
    for kind in config.kinds:
        settings = replace(config.probe, kind=kind)
        for start in range(0, len(specs), per_pass):
            part = specs[start : start + per_pass]
            run = train_probes(part, train, valid, settings, device=device, progress=progress)
            for first in range(0, len(part), config.seeds):
                rows = list(range(first, first + config.seeds))
                spec = part[first]
                scores = run.best_score[rows]
                grid.append(
                    {
                        "kind": kind,
                        "layer": layer_name(spec.layer),
                        "lr": spec.lr,
                        "validation_roc_auc": float(np.mean(scores)),
                        "validation_std": float(np.std(scores)),
                        "epochs": np.sum(~np.isnan(run.history[rows]), axis=1).tolist(),
                    }
                )
                if (
                    best is not None
                    and grid[-1]["validation_roc_auc"] <= best.chosen["validation_roc_auc"]
                ):
                    continue  # the first of equal configurations wins
                weights = run.layer_weights()[rows].mean(0).tolist()
                best = Selection(
                    chosen={**grid[-1], "best_epochs": (run.best_epoch[rows] + 1).tolist()},
                    grid=grid,
                    valid_scores=run.predict(valid, rows),
                    test_scores=None if test is None else run.predict(test, rows),
                    layer_weights=weights if spec.layer == WEIGHTED else None,
                )
    return best


def seed_metrics(
    scores: np.ndarray, labels: np.ndarray, vocabulary: Sequence[str], threshold: float = 0.5
) -> dict:
    """Metrics of each seed's ``[tracks, tags]`` probabilities, combined as mean ± std."""
    return summarize_seeds([tagging_metrics(labels, s, vocabulary, threshold) for s in scores])
