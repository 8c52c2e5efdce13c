"""Probe selection: one batched model per pass against one training run per configuration.

Synthetic cached features (float16 ``[tracks, layers, dims]``, one window per track) carry a
30-tag signal whose strength varies with the layer. The full selection (every single layer and
the learned weighting x 6 learning rates x 5 seeds, MLP probes) is timed with
``culturemert.evaluate.selection.select_probe``. The baseline trains each configuration alone,
as a per-configuration script does: its own ``nn.Module``, ``torch.optim.Adam`` with
``ReduceLROnPlateau``, a shuffling ``DataLoader`` and an epoch loop with scikit-learn validation
ROC-AUC and early stopping. The baseline runs on a random subset of configurations
(``--naive-configs``), half before the batched selection and half after, and is extrapolated
to the full grid from its mean time per configuration.

Both sides also report their achieved FLOP rate (the MLP's forward and backward matrix products
of every probe-epoch actually run, plus the per-epoch validation forward) as a fraction of this
machine's measured fp32 matmul rate: the same work is done on both sides, so the speed-up can
not exceed the baseline's fraction's inverse.

    python bench/probe.py                       # the full protocol (slow on a few CPU cores)
    python bench/probe.py --tracks 2000 --max-epochs 10
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from culturemert.embedding import LayerWeighting
from culturemert.evaluate.probes import WEIGHTED, WindowData
from culturemert.evaluate.selection import probe_grid, select_probe
from culturemert.evaluate.settings import ProbeSettings, SelectionConfig

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, matmul_rate, synchronize  # noqa: E402


def synthetic_splits(tracks: int, tags: int, layers: int, dims: int, seed: int = 0):
    """Train/valid/test (70/10/20) window data with a layer-dependent, learnable tag signal."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((tracks, 16))
    logits = latent @ rng.standard_normal((16, tags)) + rng.normal(-1.5, 0.5, tags)
    labels = (logits + 0.5 * rng.standard_normal(logits.shape) > 0).astype(np.float32)
    strength = np.exp(-(((np.arange(layers) - layers * 0.6) / (layers / 3)) ** 2))
    features = np.empty((tracks, layers, dims), dtype=np.float16)
    for layer in range(layers):
        mixed = latent @ rng.standard_normal((16, dims)) / 4
        features[:, layer] = strength[layer] * mixed + rng.standard_normal((tracks, dims))
    cut = [int(tracks * 0.7), int(tracks * 0.8)]
    parts = np.split(np.arange(tracks), cut)
    return [WindowData(features[p], np.arange(len(p)), labels[p]) for p in parts]


def epoch_flops(weighted: bool, train: WindowData, valid: WindowData, hidden: int) -> float:
    """Matrix-product FLOPs of one MLP probe-epoch: training steps and the validation pass.

    Per window, forward ``2dh + 2ht`` and backward ``2dh + 4ht`` (weight gradients, and the
    hidden layer's input gradient); a weighted probe also mixes ``l`` layers (``2ld`` each way)
    and back-propagates into its input (``2dh``).
    """
    layers, dims = train.features.shape[1:]
    tags = train.labels.shape[1]
    forward = 2 * dims * hidden + 2 * hidden * tags + weighted * 2 * layers * dims
    backward = (
        2 * dims * hidden + 4 * hidden * tags + weighted * (2 * dims * hidden + 2 * layers * dims)
    )
    return len(train.features) * (forward + backward) + len(valid.features) * forward


def naive_run(
    spec,
    train: WindowData,
    valid: WindowData,
    settings: ProbeSettings,
    device: torch.device | str = "cpu",
) -> tuple[float, int]:
    """One configuration trained alone; returns its best validation macro ROC-AUC and epochs.

    As a per-configuration script does: a shuffling DataLoader over CPU tensors, each batch
    moved to ``device``, scikit-learn's AUC on the validation predictions each epoch.
    """
    torch.manual_seed(spec.seed)
    layers, dims = train.features.shape[1:]
    tags = train.labels.shape[1]
    head = torch.nn.Sequential(
        torch.nn.Linear(dims, settings.hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(settings.dropout),
        torch.nn.Linear(settings.hidden, tags),
    )
    weighting = LayerWeighting(layers)
    model = torch.nn.ModuleList([weighting, head]).to(device)

    def forward(x):
        return head(weighting(x) if spec.layer == WEIGHTED else x)

    def inputs(data: WindowData) -> torch.Tensor:
        """The probe's own input: one layer cut out up front, or all layers for the weighting."""
        chosen = data.features if spec.layer == WEIGHTED else data.features[:, spec.layer]
        return torch.from_numpy(chosen.astype(np.float32))

    y_train = torch.from_numpy(train.labels[train.track_index])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs(train), y_train),
        batch_size=settings.batch_size,
        shuffle=True,
    )
    x_valid = inputs(valid).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=settings.lr_factor, patience=settings.lr_patience
    )
    best, best_epoch, best_state = -np.inf, 0, None
    for epoch in range(settings.max_epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(forward(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            scores = forward(x_valid).cpu().numpy()  # one window per track here
        kept = [j for j in range(tags) if 0 < valid.labels[:, j].sum() < len(valid.labels)]
        auc = float(np.mean([roc_auc_score(valid.labels[:, j], scores[:, j]) for j in kept]))
        scheduler.step(auc)
        if auc > best:
            best, best_epoch, best_state = auc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= settings.patience:
            break
    model.load_state_dict(best_state)
    return best, epoch + 1


def adam_seconds_per_probe_step(
    layers: int, dims: int, tags: int, hidden: int, device: torch.device | str = "cpu"
) -> float:
    """Time of one fused Adam update of one MLP probe's weights, measured on 80 probes at once.

    Memory-bound: the update reads and writes weights, gradients and two moments, which for a
    grid no longer fit in the caches (a lone probe's do).
    """
    size = 80 * (dims * hidden + hidden + hidden * tags + tags + layers)
    weights = torch.zeros(size, requires_grad=True, device=device)
    weights.grad = torch.randn(size, device=device)
    optimizer = torch.optim.Adam([weights], lr=1e-3, fused=True)
    optimizer.step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        optimizer.step()
    synchronize(device)
    return (time.perf_counter() - start) / 10 / 80


def timed_naive_runs(specs, train, valid, settings, device="cpu") -> tuple[list, float]:
    """:func:`naive_run` of each configuration, and their total wall time."""
    start = time.perf_counter()
    results = [naive_run(spec, train, valid, settings, device) for spec in specs]
    synchronize(device)
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--tags", type=int, default=30)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--naive-configs", type=int, default=6, help="baseline configs timed")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    parser.add_argument("--device", default="cpu", help="both sides' device (cpu, cuda, ...)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    train, valid, test = synthetic_splits(args.tracks, args.tags, args.layers, args.dims)
    settings = ProbeSettings(max_epochs=args.max_epochs)
    config = SelectionConfig(kinds=("mlp",), seeds=args.seeds, probe=settings)
    grid = probe_grid(config, args.layers)
    print(machine_line(device))
    peak = matmul_rate(device=device)
    print(f"fp32 matmul rate (1536^3 products): {peak / 1e9:.1f} GFLOP/s")
    print(
        f"data: {args.tracks} tracks ({len(train.labels)}/{len(valid.labels)}/{len(test.labels)}),"
        f" {args.tags} tags, {args.layers} layers x {args.dims} dims; grid: {len(grid)} MLP "
        f"probes ({args.layers} layers + weighted, {len(config.learning_rates)} lrs, "
        f"{args.seeds} seeds), max {args.max_epochs} epochs, patience {settings.patience}, "
        f"lr x{settings.lr_factor} after {settings.lr_patience} flat epochs"
    )

    def flops(layer, epochs: int) -> float:
        return epochs * epoch_flops(layer == "weighted", train, valid, settings.hidden)

    # Half the baseline runs before the batched selection and half after, so that a drift in
    # the machine's speed during the run weighs on both sides alike.
    sample = random.Random(0).sample(grid, min(args.naive_configs, len(grid)))
    half = len(sample) // 2
    naive_results, measured = timed_naive_runs(sample[:half], train, valid, settings, device)
    start = time.perf_counter()
    selection = select_probe(train, valid, test, config, device=device, progress=False)
    synchronize(device)
    batched = time.perf_counter() - start
    more_results, more_time = timed_naive_runs(sample[half:], train, valid, settings, device)
    naive_results += more_results
    measured += more_time
    chosen = selection.chosen
    batched_flops = sum(flops(row["layer"], sum(row["epochs"])) for row in selection.grid)
    probe_epochs = sum(sum(row["epochs"]) for row in selection.grid)
    print(
        f"batched selection: {batched:.1f} s; chose layer {chosen['layer']}, lr {chosen['lr']}, "
        f"validation ROC-AUC {chosen['validation_roc_auc']:.4f}; {probe_epochs} probe-epochs, "
        f"{batched_flops / batched / 1e9:.1f} GFLOP/s = {batched_flops / batched / peak:.0%} "
        "of the matmul rate"
    )

    naive = measured / len(sample) * len(grid)
    naive_flops = sum(
        flops("weighted" if spec.layer == WEIGHTED else spec.layer, epochs)
        for spec, (_, epochs) in zip(sample, naive_results, strict=True)
    )
    naive_fraction = naive_flops / measured / peak
    batched_scores = {
        (row["layer"], row["lr"]): row["validation_roc_auc"] for row in selection.grid
    }
    print(
        f"one run per configuration: {measured:.1f} s for {len(sample)} random configurations "
        f"of {len(grid)}; extrapolated to the full grid: {naive:.1f} s; "
        f"{naive_flops / measured / 1e9:.1f} GFLOP/s = {naive_fraction:.0%} of the matmul rate"
    )
    for spec, (score, epochs) in zip(sample, naive_results, strict=True):
        key = ("weighted" if spec.layer == WEIGHTED else spec.layer, spec.lr)
        print(
            f"  layer {key[0]!s:>8} lr {spec.lr:<7g} seed {spec.seed}: naive validation "
            f"ROC-AUC {score:.4f} after {epochs} epochs (batched, mean over seeds: "
            f"{batched_scores[key]:.4f})"
        )
    steps = -(-len(train.features) // settings.batch_size)
    adam = adam_seconds_per_probe_step(args.layers, args.dims, args.tags, settings.hidden, device)
    floor = batched_flops / peak + adam * probe_epochs * steps
    print(
        f"speed-up of the batched selection over one run per configuration: {naive / batched:.1f}x"
        f" (ceilings: {1 / naive_fraction:.1f}x with the batched side at the full matmul rate, "
        f"{naive / floor:.1f}x adding its Adam updates at this machine's memory speed, "
        f"{adam * 1e3:.2f} ms per probe-step)"
    )


if __name__ == "__main__":
    main()
