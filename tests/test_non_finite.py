"""Weights holding NaN or infinity: refused by merge and save_encoder, naming tensor and input,
with nothing written; written with a warning when allowed."""

from __future__ import annotations

import contextlib
import io
import logging

import pytest
import torch
from merge_reference import make_checkpoints, read_state
from safetensors.torch import load_file, save_file
from transformers import HubertModel

from culturemert.cli import main
from culturemert.merge import MergeRecipe, merge_checkpoints
from culturemert.model import NonFiniteWeightsError, load_encoder, save_encoder

NAME = "encoder.layers.0.attention.q_proj.weight"


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> dict:
    """Base and three models; models[1] holds 3 NaN in one tensor, models[0] an infinity."""
    checkpoints = make_checkpoints(tmp_path_factory.mktemp("non-finite"))
    for index, value, count in ((1, float("nan"), 3), (0, float("inf"), 1)):
        file = checkpoints["models"][index] / "model.safetensors"
        state = load_file(file)
        state[NAME].view(-1)[:count] = value
        save_file(state, file, metadata={"format": "pt"})
    return checkpoints


def recipe(checkpoints, models) -> MergeRecipe:
    return MergeRecipe(
        base=str(checkpoints["base"]),
        models=tuple(str(checkpoints["models"][i]) for i in models),
        lam=0.5,
    )


def leftovers(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_nan_input_is_refused_naming_tensor_and_input(poisoned, tmp_path):
    file = poisoned["models"][1] / "model.safetensors"
    with pytest.raises(NonFiniteWeightsError) as caught:
        merge_checkpoints(recipe(poisoned, [2, 1]), tmp_path / "out", progress=False)
    assert str(caught.value).startswith(f"models[1] {file}: tensor '{NAME}' holds 3 NaN;")
    assert leftovers(tmp_path) == []  # no output, no staging folder


def test_global_ties_refuses_during_its_threshold_pass(poisoned, tmp_path):
    ties = MergeRecipe(
        base=str(poisoned["base"]), models=(str(poisoned["models"][0]),), method="ties"
    )
    with pytest.raises(NonFiniteWeightsError, match="holds 1 infinite value"):
        merge_checkpoints(ties, tmp_path / "out", progress=False)
    assert leftovers(tmp_path) == []


def test_the_command_prints_one_line_and_writes_nothing(poisoned, tmp_path):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(
            [
                "merge",
                "--base",
                str(poisoned["base"]),
                "--models",
                str(poisoned["models"][0]),
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
    assert code == 2
    lines = stderr.getvalue().strip().splitlines()
    assert len(lines) == 1 and f"tensor '{NAME}' holds 1 infinite value" in lines[0]
    assert "models[0]" in lines[0] and "--allow-non-finite" in lines[0]
    assert leftovers(tmp_path) == []


def test_allowed_non_finite_inputs_warn_once_and_merge(poisoned, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    out = merge_checkpoints(
        recipe(poisoned, [2, 1]), tmp_path / "out", allow_non_finite=True, progress=False
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"tensor '{NAME}' holds 3 NaN" in warnings[0]
    base = read_state(poisoned["base"])[NAME]
    models = [read_state(poisoned["models"][i])[NAME] for i in (2, 1)]
    expected = base + 0.5 * sum(m - base for m in models)  # NaN where models[1] has NaN
    torch.testing.assert_close(load_file(out / "model.safetensors")[NAME], expected, equal_nan=True)
    assert int(torch.isnan(expected).sum()) == 3


def test_save_encoder_refuses_a_nan_parameter(tiny_encoder_dir, tmp_path, caplog):
    model = load_encoder(tiny_encoder_dir)
    with torch.no_grad():
        model.encoder.layers[0].attention.q_proj.weight[0, :2] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=f"tensor '{NAME}' holds 2 NaN"):
        save_encoder(model, tmp_path / "out")
    assert leftovers(tmp_path) == []

    caplog.set_level(logging.WARNING)
    out = save_encoder(model, tmp_path / "out", allow_non_finite=True)
    assert any(f"'{NAME}' holds 2 NaN" in r.getMessage() for r in caplog.records)
    saved = HubertModel.from_pretrained(out).state_dict()[NAME]
    assert int(torch.isnan(saved).sum()) == 2
