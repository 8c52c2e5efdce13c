"""The streaming merge engine on tiny checkpoints, checked against formulas in plain torch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch
from conftest import random_state_dict, tiny_mert_config, write_checkpoint
from merge_reference import G, V, effective, make_checkpoints, read_state, reference_ties
from safetensors.torch import load_file, save_file
from transformers import HubertModel

from culturemert.merge import MergeInputError, MergeRecipe, merge_checkpoints
from culturemert.merge import methods as merge_methods
from culturemert.model import load_encoder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    return make_checkpoints(tmp_path_factory.mktemp("merge"))


def recipe_for(checkpoints, **fields) -> MergeRecipe:
    return MergeRecipe(
        base=str(checkpoints["base"]),
        models=tuple(str(m) for m in checkpoints["models"]),
        **fields,
    )


def test_task_arithmetic_merges_every_tensor_by_formula(checkpoints, tmp_path):
    out = merge_checkpoints(recipe_for(checkpoints, lam=0.3), tmp_path / "ta", progress=False)
    base = read_state(checkpoints["base"])
    models = [read_state(m) for m in checkpoints["models"]]
    merged = load_file(out / "model.safetensors")
    assert set(merged) == set(base)
    for name, tensor in base.items():
        if name in (G, V):
            continue
        if name == "masked_spec_embed":  # non-encoder: from the base by default
            assert torch.equal(merged[name], tensor)
            continue
        expected = tensor + 0.3 * sum(m[name] - tensor for m in models)
        torch.testing.assert_close(merged[name], expected, msg=name)
    # The positional conv is merged as its effective weight, then split back into (g, v).
    expected_w = effective(base) + 0.3 * sum(effective(m) - effective(base) for m in models)
    torch.testing.assert_close(effective(merged), expected_w)
    torch.testing.assert_close(merged[G], merged[V].norm(dim=(0, 1), keepdim=True))


def test_output_loads_in_culturemert_and_plain_transformers(checkpoints, tmp_path):
    out = merge_checkpoints(recipe_for(checkpoints, lam=0.2), tmp_path / "ta", progress=False)
    stored = load_file(out / "model.safetensors")
    plain = HubertModel.from_pretrained(out)
    ours = load_encoder(out)
    for model in (plain, ours):
        state = model.state_dict()
        for name, tensor in stored.items():
            assert torch.equal(state[name], tensor), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hubert" and config["architectures"] == ["HubertModel"]
    base_preprocessor = (checkpoints["base"] / "preprocessor_config.json").read_text()
    assert (out / "preprocessor_config.json").read_text() == base_preprocessor


def test_model_card_records_recipe_hashes_and_version(checkpoints, tmp_path):
    recipe = recipe_for(checkpoints, lam=0.2)
    out = merge_checkpoints(recipe, tmp_path / "ta", progress=False)
    card = (out / "README.md").read_text()
    files = [checkpoints["base"] / "model.safetensors"] + [
        next(m.glob("*.safetensors"), m / "pytorch_model.bin") for m in checkpoints["models"]
    ]
    for file in files:
        assert hashlib.sha256(file.read_bytes()).hexdigest() in card
    assert "culturemert 0.1.0" in card
    assert "lambda: 0.2" in card and "method: task_arithmetic" in card


def test_raw_weight_norm_merges_g_and_v_separately(checkpoints, tmp_path):
    recipe = recipe_for(checkpoints, lam=0.5, weight_norm="raw")
    out = merge_checkpoints(recipe, tmp_path / "raw", progress=False)
    base = read_state(checkpoints["base"])
    models = [read_state(m) for m in checkpoints["models"]]
    merged = load_file(out / "model.safetensors")
    for name in (G, V):
        expected = base[name] + 0.5 * sum(m[name] - base[name] for m in models)
        torch.testing.assert_close(merged[name], expected)


def test_global_ties_matches_whole_model_reference(checkpoints, tmp_path):
    recipe = recipe_for(checkpoints, method="ties", lam=0.9, density=0.3)
    out = merge_checkpoints(recipe, tmp_path / "ties", progress=False)
    base = read_state(checkpoints["base"])
    models = [read_state(m) for m in checkpoints["models"]]
    merged = load_file(out / "model.safetensors")
    names = sorted(n for n in base if n not in (G, V, "masked_spec_embed"))

    def flat(state):  # the whole encoder as one vector, positional conv as its weight
        return torch.cat([state[n].reshape(-1) for n in names] + [effective(state).reshape(-1)])

    expected = reference_ties(flat(base), [flat(m) for m in models], 0.3, 0.9)
    torch.testing.assert_close(flat(merged), expected)


def test_per_tensor_ties_trims_each_tensor_alone(checkpoints, tmp_path):
    recipe = recipe_for(checkpoints, method="ties", lam=1.0, density=0.5, scope="tensor")
    out = merge_checkpoints(recipe, tmp_path / "ties", progress=False)
    base = read_state(checkpoints["base"])
    models = [read_state(m) for m in checkpoints["models"]]
    merged = load_file(out / "model.safetensors")
    name = "encoder.layers.1.attention.k_proj.weight"
    expected = reference_ties(base[name], [m[name] for m in models], 0.5, 1.0)
    torch.testing.assert_close(merged[name], expected)


def test_dare_is_seeded(checkpoints, tmp_path):
    recipe = recipe_for(checkpoints, method="dare", lam=0.5, drop=0.5, seed=4)
    first = load_file(
        merge_checkpoints(recipe, tmp_path / "a", progress=False) / "model.safetensors"
    )
    again = load_file(
        merge_checkpoints(recipe, tmp_path / "b", progress=False) / "model.safetensors"
    )
    other = replace(recipe, seed=5)
    third = load_file(
        merge_checkpoints(other, tmp_path / "c", progress=False) / "model.safetensors"
    )
    name = "encoder.layers.0.feed_forward.output_dense.weight"
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not torch.equal(first[name], third[name])


def test_non_encoder_policy_and_name_filters(checkpoints, tmp_path):
    base = read_state(checkpoints["base"])
    models = [read_state(m) for m in checkpoints["models"]]

    def ta(name):
        return base[name] + sum(m[name] - base[name] for m in models)

    recipe = recipe_for(checkpoints, non_encoder="merge", exclude=(r"^feature_extractor\.",))
    merged = load_file(
        merge_checkpoints(recipe, tmp_path / "m", progress=False) / "model.safetensors"
    )
    torch.testing.assert_close(merged["masked_spec_embed"], ta("masked_spec_embed"))
    cnn = "feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(merged[cnn], base[cnn])

    recipe = recipe_for(checkpoints, non_encoder="drop")
    out = merge_checkpoints(recipe, tmp_path / "d", progress=False)
    assert "masked_spec_embed" not in load_file(out / "model.safetensors")
    load_encoder(out)  # masked_spec_embed is optional for inference

    recipe = recipe_for(checkpoints, non_encoder="drop", include=("masked_spec",))
    merged = load_file(
        merge_checkpoints(recipe, tmp_path / "i", progress=False) / "model.safetensors"
    )
    torch.testing.assert_close(merged["masked_spec_embed"], ta("masked_spec_embed"))


def test_output_dtype(checkpoints, tmp_path):
    recipe = recipe_for(checkpoints, lam=0.2, dtype="bfloat16")
    out = merge_checkpoints(recipe, tmp_path / "bf16", progress=False)
    merged = load_file(out / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in merged.values())
    assert load_encoder(out, dtype="bfloat16").feature_projection.projection.weight.dtype == (
        torch.bfloat16
    )


def test_mismatched_inputs_are_listed_before_anything_is_written(checkpoints, tmp_path):
    wrong = tmp_path / "wrong"
    raw = tiny_mert_config(intermediate_size=48)
    write_checkpoint(wrong, raw, random_state_dict(raw), fmt="safetensors")
    partial = tmp_path / "partial"
    state = read_state(checkpoints["models"][0])
    del state["encoder.layers.1.final_layer_norm.bias"]
    write_checkpoint(partial, tiny_mert_config(), state, fmt="safetensors")
    recipe = MergeRecipe(base=str(checkpoints["base"]), models=(str(wrong), str(partial)), lam=0.5)
    out_parent = tmp_path / "outputs"
    with pytest.raises(MergeInputError) as caught:
        merge_checkpoints(recipe, out_parent / "merged", progress=False)
    message = str(caught.value)
    assert "intermediate_size = 48" in message
    assert "encoder.layers.0.feed_forward.intermediate_dense.weight (48, 32)" in message
    assert "missing: encoder.layers.1.final_layer_norm.bias" in message
    assert not out_parent.exists()


def test_failed_merge_keeps_previous_output_and_leaves_no_staging(
    checkpoints, tmp_path, monkeypatch
):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "marker").write_text("previous merge")

    def broken(base, models, options):
        raise RuntimeError("boom")

    monkeypatch.setitem(merge_methods.METHODS, "task_arithmetic", broken)
    with pytest.raises(RuntimeError, match="boom"):
        merge_checkpoints(recipe_for(checkpoints), out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    assert (out / "marker").read_text() == "previous merge"


def test_legacy_and_modern_names_together_are_refused(checkpoints, tmp_path):
    state = read_state(checkpoints["base"])
    state["encoder.pos_conv_embed.conv.weight_g"] = state[G].clone()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(tiny_mert_config()))
    save_file(state, bad / "model.safetensors")
    recipe = MergeRecipe(base=str(checkpoints["base"]), models=(str(bad),))
    with pytest.raises(MergeInputError, match="stored twice"):
        merge_checkpoints(recipe, tmp_path / "out", progress=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_weight_files_are_named(checkpoints, tmp_path, damage):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["models"][0], broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 64] if damage == "truncated" else b"\x00" * 64)
    recipe = MergeRecipe(base=str(checkpoints["base"]), models=(str(broken),), lam=0.5)
    with pytest.raises(MergeInputError, match=str(weights)):
        merge_checkpoints(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_dtype_merging_cannot_read_is_named(checkpoints, tmp_path):
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(checkpoints["models"][0], odd)
    state = load_file(odd / "model.safetensors")
    name = next(iter(state))
    state[name] = state[name].to(torch.float8_e4m3fn)
    save_file(state, odd / "model.safetensors")
    recipe = MergeRecipe(base=str(checkpoints["base"]), models=(str(odd),))
    with pytest.raises(MergeInputError, match=f"{name} is stored as F8_E4M3"):
        merge_checkpoints(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
