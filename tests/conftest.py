"""Shared fixtures: tiny encoders in MERT's real checkpoint layouts, and the shared data folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from transformers import HubertConfig, HubertModel

from culturemert.model import mert_config_dict

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def tiny_mert_config(**overrides) -> dict:
    """A MERT-layout config.json dict with tiny sizes (remote-code fields included)."""
    return mert_config_dict(**{**TINY, **overrides})


def reference_hubert_config(raw: dict) -> HubertConfig:
    """HubertConfig written out field by field, independently of culturemert's mapping."""
    return HubertConfig(
        hidden_size=raw["hidden_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        intermediate_size=raw["intermediate_size"],
        hidden_act="gelu",
        feat_extract_norm="group",
        feat_extract_activation="gelu",
        do_stable_layer_norm=raw["do_stable_layer_norm"],
        conv_dim=raw["conv_dim"],
        conv_kernel=[10, 3, 3, 3, 3, 2, 2],
        conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=False,
        num_conv_pos_embeddings=raw["num_conv_pos_embeddings"],
        num_conv_pos_embedding_groups=raw["num_conv_pos_embedding_groups"],
        feat_proj_layer_norm=True,
        layer_norm_eps=1e-5,
        mask_time_prob=0.05,
        conv_pos_batch_norm=False,
    )


def random_state_dict(raw: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for a config, with non-trivial LayerNorm and weight-norm parameters."""
    torch.manual_seed(seed)
    model = HubertModel(reference_hubert_config(raw))
    state = model.state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point():
            state[name] = tensor + 0.05 * torch.randn_like(tensor)
    return state


def legacy_weight_norm_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename parametrized weight-norm tensors to the old ``weight_g``/``weight_v`` names."""
    renamed = {}
    for name, tensor in state.items():
        name = name.replace("parametrizations.weight.original0", "weight_g")
        name = name.replace("parametrizations.weight.original1", "weight_v")
        renamed[name] = tensor
    return renamed


def write_checkpoint(directory: Path, raw: dict, state: dict, *, fmt: str) -> Path:
    """Lay out a checkpoint as released MERT repos do: config.json, weights, preprocessor config."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_normalize": False,
                "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                "feature_size": 1,
                "padding_side": "right",
                "padding_value": 0,
                "return_attention_mask": True,
                "sampling_rate": 24000,
            }
        )
    )
    if fmt == "bin":
        torch.save(legacy_weight_norm_names(state), directory / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, directory / "model.safetensors")
    return directory


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny MERT-v1-95M-layout checkpoint (post-LN, ``.bin`` with weight_g/weight_v)."""
    raw = tiny_mert_config()
    return write_checkpoint(
        tmp_path_factory.mktemp("tiny-mert"), raw, random_state_dict(raw), fmt="bin"
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (``../shared/data`` beside the repository)."""
    root = Path(
        os.environ.get("CULTUREMERT_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
    )
    if not (root / "README.md").is_file():
        raise FileNotFoundError(
            f"shared data folder not found at {root}; set CULTUREMERT_SHARED_DATA"
        )
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only waits for a busy core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def audio_opens(monkeypatch):
    """Paths of audio files opened from now on: by Python (audit hook) or by libsndfile."""
    opened, watching = [], [True]

    def hook(event, args):
        if watching[0] and event == "open" and str(args[0]).endswith(".wav"):
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed; this one goes quiet after the test
    original = sf.SoundFile.__init__

    def counting(self, file, *args, **kwargs):
        opened.append(str(file))
        original(self, file, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "__init__", counting)
    yield opened
    watching[0] = False
