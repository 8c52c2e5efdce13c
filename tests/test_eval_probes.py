"""Batched probes against probes built and trained one by one with torch.nn and torch.optim."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from culturemert.embedding import LayerWeighting
from culturemert.evaluate.metrics import macro_roc_auc
from culturemert.evaluate.probe_math import GridView, ProbePasses, dropout_keep, weighted_groups
from culturemert.evaluate.probes import (
    WEIGHTED,
    ProbeSpec,
    WindowData,
    init_params,
    train_probes,
)
from culturemert.evaluate.selection import probe_grid
from culturemert.evaluate.settings import ProbeSettings, SelectionConfig

pytestmark = pytest.mark.usefixtures("one_thread")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def window_data(rng, tracks: int, windows_per_track: int, layers=3, dims=8, tags=4, signal=1.0):
    """Features where layer 1 carries the labels (plus noise); several windows per track."""
    labels = (rng.random((tracks, tags)) < 0.4).astype(np.float32)
    labels[0], labels[1] = 1.0, 0.0  # every tag has both classes
    track_index = np.repeat(np.arange(tracks), windows_per_track)
    features = rng.standard_normal((len(track_index), layers, dims)).astype(np.float32)
    features[:, 1, :tags] += signal * labels[track_index]
    return WindowData(features.astype(np.float16), track_index, labels)


def sklearn_macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    kept = [j for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)]
    return float(np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in kept]))


def reference_run(spec, params, row, train, valid, settings, layers):
    """One probe trained alone: nn.Linear layers, torch.optim.Adam stepped down by
    torch.optim.lr_scheduler.ReduceLROnPlateau, sklearn validation AUC."""
    dims = params["w1"].shape[1]
    if settings.kind == "mlp":
        tags = params["w2"].shape[2]
        mlp = torch.nn.Sequential(
            torch.nn.Linear(dims, settings.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(settings.hidden, tags),
        )
    else:
        mlp = torch.nn.Sequential(torch.nn.Linear(dims, params["w1"].shape[2]))
    weighting = LayerWeighting(layers)
    with torch.no_grad():
        for module, name in zip(mlp[::2], ("1", "2"), strict=False):
            module.weight.copy_(params[f"w{name}"][row].T)
            module.bias.copy_(params[f"b{name}"][row, 0])

    def logits(x):
        x = weighting(x) if spec.layer == WEIGHTED else x[:, spec.layer]
        return mlp(x)

    modules = torch.nn.ModuleList([mlp, weighting])
    optimizer = torch.optim.Adam(modules.parameters(), lr=spec.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=settings.lr_factor, patience=settings.lr_patience
    )
    x_train = torch.from_numpy(train.features.astype(np.float32))
    y_train = torch.from_numpy(train.labels[train.track_index])
    x_valid = torch.from_numpy(valid.features.astype(np.float32))
    generator = torch.Generator().manual_seed(spec.seed)
    history, rates, best = [], [], None
    for _ in range(settings.max_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits(x_train[idx]), y_train[idx]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            window_logits = logits(x_valid).numpy()
        per_track = np.stack(
            [window_logits[valid.track_index == t].mean(0) for t in range(len(valid.labels))]
        )
        history.append(sklearn_macro_auc(valid.labels, per_track))
        if history[-1] == max(history):
            best = (copy.deepcopy(modules), 1 / (1 + np.exp(-per_track)))
        scheduler.step(history[-1])
    return np.array(history), np.array(rates), best[1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_batched_probes_match_probes_trained_one_by_one(kind, device):
    rng = np.random.default_rng(0)
    train = window_data(rng, tracks=60, windows_per_track=2, signal=2.0)
    valid = window_data(rng, tracks=30, windows_per_track=3, signal=2.0)
    # A short plateau patience, so rates are halved (at different epochs) within the run.
    settings = ProbeSettings(
        kind, hidden=16, dropout=0.0, batch_size=32, max_epochs=9, patience=100, lr_patience=1
    )
    specs = [
        ProbeSpec(1, 5e-3, seed=3),
        ProbeSpec(WEIGHTED, 5e-3, seed=3),
        ProbeSpec(0, 5e-3, seed=7),
    ]  # one rate at first; the plateau schedule makes the probes' rates diverge
    run = train_probes(specs, train, valid, settings, device=device, progress=False)
    initial = init_params(specs, 3, 8, 4, settings)
    predictions = run.predict(valid)
    tolerance = 1e-5 if device == "cpu" else 1e-3  # another device's rounding may flip a rank
    for row, spec in enumerate(specs):
        history, rates, best_probabilities = reference_run(
            spec, initial, row, train, valid, settings, 3
        )
        np.testing.assert_allclose(run.history[row], history, atol=tolerance)
        np.testing.assert_array_equal(run.lr_history[row], rates)
        assert run.best_epoch[row] == int(np.argmax(history))
        np.testing.assert_allclose(predictions[row], best_probabilities, atol=tolerance)
    # The probe on the informative layer learned something.
    assert run.best_score[0] > (0.8 if kind == "mlp" else 0.6)
    assert len(set(run.lr_history[:, -1])) > 1  # the rates did diverge


def test_linear_probe_is_a_single_affine_map():
    rng = np.random.default_rng(1)
    train = window_data(rng, tracks=40, windows_per_track=1)
    settings = ProbeSettings(kind="linear", max_epochs=1)
    run = train_probes([ProbeSpec(2, 1e-3)], train, train, settings, progress=False)
    x = train.features[:, 2].astype(np.float32)
    expected = x @ run.params["w1"][0].numpy() + run.params["b1"][0].numpy()
    np.testing.assert_allclose(run.predict(train)[0], 1 / (1 + np.exp(-expected)), atol=1e-5)


def test_batched_roc_auc_equals_scikit_learn_with_ties_and_one_class_tags():
    rng = np.random.default_rng(2)
    labels = (rng.random((50, 6)) < 0.3).astype(np.float32)
    labels[:, 4] = 0.0  # no positive: left out
    labels[:, 5] = 1.0  # no negative: left out
    labels[0, :4], labels[1, :4] = 1.0, 0.0
    scores = np.round(rng.random((3, 50, 6)), 1)  # coarse values: many ties
    got = macro_roc_auc(torch.from_numpy(scores), torch.from_numpy(labels)).numpy()
    expected = [np.mean([roc_auc_score(labels[:, j], s[:, j]) for j in range(4)]) for s in scores]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_early_stopping_keeps_each_probes_best_epoch():
    rng = np.random.default_rng(3)
    # Only layer 1 is informative: layer-0 probes peak at once and stop, weighted ones later.
    train = window_data(rng, tracks=40, windows_per_track=1, dims=32)
    valid = window_data(rng, tracks=40, windows_per_track=2, dims=32)
    settings = ProbeSettings(hidden=32, batch_size=16, max_epochs=25, patience=3, lr_factor=1.0)
    specs = [
        ProbeSpec(layer, lr, seed)
        for layer in (0, WEIGHTED)
        for lr in (1e-2, 1e-3)
        for seed in (0, 1)
    ]
    run = train_probes(specs, train, valid, settings, progress=False)
    predictions = run.predict(valid)
    stopped_early = 0
    for row in range(len(specs)):
        history = run.history[row]
        ran = int(np.sum(~np.isnan(history)))
        assert run.best_epoch[row] == int(np.nanargmax(history))
        assert ran == min(run.best_epoch[row] + settings.patience + 1, settings.max_epochs)
        # The weights returned are those of the best epoch, not the last one.
        restored = sklearn_macro_auc(valid.labels, predictions[row])
        assert restored == pytest.approx(np.nanmax(history), abs=1e-6)
        assert set(run.lr_history[row, :ran]) == {specs[row].lr}  # factor 1: a constant rate
        stopped_early += ran < settings.max_epochs and history[ran - 1] < np.nanmax(history)
    assert stopped_early >= 2


def test_bad_input_is_reported():
    rng = np.random.default_rng(4)
    data = window_data(rng, tracks=10, windows_per_track=1)
    with pytest.raises(ValueError, match="out of range"):
        train_probes([ProbeSpec(5, 1e-3)], data, data, progress=False)
    with pytest.raises(ValueError, match="lr_factor"):
        ProbeSettings(lr_factor=0.0)
    constant = WindowData(data.features, data.track_index, np.zeros_like(data.labels))
    with pytest.raises(ValueError, match="validation split"):
        train_probes([ProbeSpec(0, 1e-3)], data, constant, progress=False)


@pytest.mark.parametrize("device", DEVICES)
def test_written_out_gradients_equal_autograd_with_dropout_and_layer_mixing(device):
    """ProbePasses' gradients against torch autograd through the same dropout masks."""
    layers, windows, dims, tags, size = 3, 20, 8, 4, 6
    settings = ProbeSettings(hidden=16, dropout=0.25)
    specs = [ProbeSpec(2, 1e-3, seed=0), ProbeSpec(0, 1e-3, seed=1), ProbeSpec(WEIGHTED, 1e-3, 1)]
    params = {k: v.to(device) for k, v in init_params(specs, layers, dims, tags, settings).items()}
    params["mix"] = torch.randn(len(specs), layers, device=device)  # a real softmax
    table = torch.randn(layers, windows, dims, device=device)
    batch = torch.stack([torch.randperm(windows)[:size] for _ in range(2)]).to(device)
    slot = torch.tensor([0, 1, 1], device=device)
    targets = (torch.rand(2, size, tags, device=device) < 0.5).float()
    keep = dropout_keep(
        [11, 12], 5, (size, settings.hidden), settings.dropout, torch.device(device)
    )
    passes = ProbePasses("mlp", settings.dropout, device)
    view = GridView(params, 2, slot, weighted_groups(slot, 2))
    logits = passes.logits(view, table, batch, keep)
    grads = {k: v.clone() for k, v in passes.gradients(logits.clone(), targets).items()}

    for p, spec in enumerate(specs):
        leaves = {k: params[k][p].clone().requires_grad_() for k in ("w1", "b1", "w2", "b2", "mix")}
        windows_of_slot = table[:, batch[slot[p]]]  # [layers, batch, dims]
        if spec.layer == WEIGHTED:
            x = torch.einsum("l,lbd->bd", torch.softmax(leaves["mix"], 0), windows_of_slot)
        else:
            x = windows_of_slot[spec.layer]
        hidden = torch.relu(x @ leaves["w1"] + leaves["b1"]) * keep[slot[p]] / 0.75
        expected = hidden @ leaves["w2"] + leaves["b2"]
        torch.testing.assert_close(logits[p], expected, rtol=1e-5, atol=1e-6)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(expected, targets[slot[p]])
        loss.backward()
        for name, leaf in leaves.items():
            reference = leaf.grad
            if name == "mix" and spec.layer != WEIGHTED:
                reference = torch.zeros(3, device=device)
            torch.testing.assert_close(grads[name][p], reference, rtol=1e-4, atol=1e-7)


def numpy_mix32(x: np.ndarray) -> np.ndarray:
    """The dropout hash written out in uint32 arithmetic, where products wrap by themselves."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x21F0AAAD)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x735A2D97)
    return x ^ (x >> np.uint32(15))


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_masks_are_a_hash_of_seed_step_and_element(device):
    seeds, step, shape, rate = [3, 40], 17, (64, 512), 0.2
    keep = dropout_keep(seeds, step, shape, rate, torch.device(device)).cpu().numpy()
    element = np.arange(shape[0] * shape[1], dtype=np.uint32)
    for row, seed in enumerate(seeds):
        first = int(numpy_mix32(np.array([(int(numpy_mix32(np.array([seed]))[0]) + step)]))[0])
        second = int(numpy_mix32(np.array([first ^ 0x9E3779B9]))[0])
        values = numpy_mix32(numpy_mix32(element ^ np.uint32(first)) ^ np.uint32(second))
        np.testing.assert_array_equal(keep[row].ravel(), values >= round(rate * 2**32))
        assert abs(keep[row].mean() - (1 - rate)) < 0.01
    assert (keep[0] != keep[1]).mean() > 0.25  # seeds draw different masks ...
    later = dropout_keep(seeds, step + 1, shape, rate, torch.device(device)).cpu().numpy()
    assert (later[0] != keep[0]).mean() > 0.25  # ... and so do steps


def test_a_probe_trains_alike_alone_and_in_a_grid_with_dropout():
    rng = np.random.default_rng(6)
    train = window_data(rng, tracks=40, windows_per_track=2)
    valid = window_data(rng, tracks=20, windows_per_track=1)
    settings = ProbeSettings(hidden=16, batch_size=16, max_epochs=5, patience=100)  # dropout 0.2
    alone = train_probes([ProbeSpec(1, 1e-2, seed=4)], train, valid, settings, progress=False)
    specs = [ProbeSpec(0, 1e-3, 0), ProbeSpec(1, 1e-2, seed=4), ProbeSpec(WEIGHTED, 5e-3, 2)]
    grid = train_probes(specs, train, valid, settings, progress=False)
    np.testing.assert_allclose(grid.history[1], alone.history[0], rtol=1e-6)
    torch.testing.assert_close(grid.params["w2"][1], alone.params["w2"][0], rtol=1e-5, atol=1e-7)


def test_settings_and_grids_refuse_what_cannot_train():
    with pytest.raises(ValueError, match="max_epochs must be a whole number of at least 1"):
        ProbeSettings(max_epochs=0)
    with pytest.raises(ValueError, match="dropout"):
        ProbeSettings(dropout=1.0)
    with pytest.raises(ValueError, match="kind"):
        ProbeSettings(kind="transformer")
    config = SelectionConfig(learning_rates=(1e-3,), seeds=2)
    assert {spec.layer for spec in probe_grid(config, 4)} == {0, 1, 2, 3, WEIGHTED}
    assert {spec.layer for spec in probe_grid(config, 1)} == {0}  # no weighting of one layer


def test_training_on_several_threads_gives_the_one_thread_result():
    rng = np.random.default_rng(5)
    train = window_data(rng, tracks=50, windows_per_track=2)
    valid = window_data(rng, tracks=20, windows_per_track=1)
    settings = ProbeSettings(hidden=16, batch_size=16, max_epochs=4)  # dropout on
    specs = [
        ProbeSpec(layer, lr, seed)
        for layer in (0, 1, WEIGHTED)
        for lr, seed in ((1e-3, 0), (1e-2, 1))
    ]
    runs = []
    for threads in (1, 3):
        torch.set_num_threads(threads)
        runs.append(train_probes(specs, train, valid, settings, progress=False))
    assert torch.get_num_threads() == 3  # restored after training
    np.testing.assert_allclose(runs[0].history, runs[1].history, rtol=1e-6)
    for name in runs[0].params:
        torch.testing.assert_close(runs[0].params[name], runs[1].params[name], rtol=1e-5, atol=1e-7)
