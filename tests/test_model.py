"""Encoder loading and saving against independently built transformers.HubertModel instances."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    random_state_dict,
    reference_hubert_config,
    tiny_mert_config,
    write_checkpoint,
)
from transformers import HubertModel

from culturemert.model import (
    Encoder,
    EncoderLoadError,
    Preprocessing,
    UnsupportedCheckpointError,
    as_encoder,
    load_encoder,
    open_encoder,
    save_encoder,
)

# The released layouts: MERT-v1-95M and -330M ship pytorch_model.bin with old weight-norm names;
# CultureMERT-95M and CultureMERT-TA-95M ship model.safetensors with parametrized names.
LAYOUTS = {
    "mert-v1-95m": (dict(), "bin"),
    "mert-v1-330m": (dict(do_stable_layer_norm=True), "bin"),
    "culturemert-95m": (dict(), "safetensors"),
    "culturemert-ta-95m": (dict(), "safetensors"),
}


def reference_hidden_states(raw, state, waveform):
    config = reference_hubert_config(raw)
    config._attn_implementation = "eager"
    reference = HubertModel(config).eval()
    assert reference.config._attn_implementation == "eager"
    reference.load_state_dict(state)
    with torch.no_grad():
        return reference(waveform, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_real_layouts_load_bit_identically(tmp_path, layout):
    overrides, fmt = LAYOUTS[layout]
    raw = tiny_mert_config(**overrides)
    state = random_state_dict(raw, seed=len(layout))
    directory = write_checkpoint(tmp_path / layout, raw, state, fmt=fmt)

    model = load_encoder(directory, attn_implementation="eager")
    assert isinstance(model, HubertModel) and not model.training
    assert model.config.do_stable_layer_norm == overrides.get("do_stable_layer_norm", False)

    waveform = torch.randn(2, 24000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(waveform, output_hidden_states=True).hidden_states
    expected = reference_hidden_states(raw, state, waveform)
    assert len(ours) == raw["num_hidden_layers"] + 1
    for got, want in zip(ours, expected, strict=True):
        assert torch.equal(got, want)


def test_save_roundtrip_loads_in_plain_transformers(tmp_path, tiny_encoder_dir):
    encoder = open_encoder(tiny_encoder_dir, attn_implementation="eager")
    model = encoder.module
    out = save_encoder(encoder, tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hubert" and "auto_map" not in config
    plain = HubertModel.from_pretrained(out, attn_implementation="eager").eval()
    again = load_encoder(out, attn_implementation="eager")
    waveform = torch.randn(1, 12000)
    with torch.no_grad():
        a = model(waveform, output_hidden_states=True).hidden_states
        b = plain(waveform, output_hidden_states=True).hidden_states
        c = again(waveform, output_hidden_states=True).hidden_states
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c, strict=True))
    assert open_encoder(out).preprocessing == encoder.preprocessing
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left behind


def test_dtype_and_default_attention(tiny_encoder_dir):
    model = load_encoder(tiny_encoder_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("field", ["feature_extractor_cqt", "deepnorm"])
def test_unsupported_variants_are_refused(tmp_path, field):
    raw = tiny_mert_config()
    raw[field] = True
    directory = write_checkpoint(tmp_path / "m", raw, random_state_dict(raw), fmt="safetensors")
    with pytest.raises(UnsupportedCheckpointError, match=field):
        load_encoder(directory)


def test_mismatched_weights_are_named(tmp_path):
    raw = tiny_mert_config()
    state = random_state_dict(raw)
    del state["encoder.layers.1.final_layer_norm.bias"]
    directory = write_checkpoint(tmp_path / "m", raw, state, fmt="safetensors")
    with pytest.raises(EncoderLoadError, match="encoder.layers.1.final_layer_norm.bias"):
        load_encoder(directory)


def test_missing_directory_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(EncoderLoadError, match="no such directory"):
        load_encoder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderLoadError, match="config.json"):
        load_encoder(tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(EncoderLoadError, match=r"m-a-p/MERT-v1-95M.*--local-dir"):
        load_encoder("m-a-p/MERT-v1-95M")


def test_the_encoder_value_carries_what_its_input_needs(tmp_path, tiny_encoder_dir):
    import shutil

    from transformers import Wav2Vec2FeatureExtractor

    from culturemert.evaluate.handcrafted import handcrafted_features

    folder = tmp_path / "normalising"
    shutil.copytree(tiny_encoder_dir, folder)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True)
    extractor.save_pretrained(folder)  # the preprocessor file as transformers writes it
    encoder = open_encoder(folder, dtype="bfloat16")
    assert encoder.preprocessing == Preprocessing(sample_rate=24000, do_normalize=True)
    assert encoder.dtype == torch.bfloat16 and encoder.device == torch.device("cpu")
    assert encoder.frame_rate == 75.0
    waveform = torch.randn(1, 4800, dtype=torch.bfloat16)
    expected = encoder.module(waveform, output_hidden_states=True).hidden_states
    assert all(
        torch.equal(a, b) for a, b in zip(encoder.hidden_states(waveform), expected, strict=True)
    )
    # a bare module reads at its config's rate without normalising; values pass through
    bare = as_encoder(load_encoder(folder))
    assert bare.preprocessing == Preprocessing(sample_rate=24000, do_normalize=False)
    assert as_encoder(encoder) is encoder
    # hand-made features are an encoder without weights: CPU, float32
    features = handcrafted_features("features:chroma")
    assert isinstance(features, Encoder) and not list(features.module.parameters())
    assert (features.device, features.dtype) == (torch.device("cpu"), torch.float32)
