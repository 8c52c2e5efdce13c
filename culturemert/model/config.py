"""Mapping MERT's remote-code config onto transformers' HubertConfig.

MERT-v1 checkpoints declare ``model_type: mert_model`` with an ``auto_map`` into remote code.
For the released variants that code computes exactly HuBERT's forward pass, so the same numbers
in a :class:`transformers.HubertConfig` give a bit-identical model without running remote code.
"""

from __future__ import annotations

from typing import Any

from transformers import HubertConfig

SUPPORTED_MODEL_TYPES = ("mert_model", "hubert")

# Fields the remote MERTConfig adds (or that only matter to the Hub) and HubertConfig must not see.
_MERT_ONLY_FIELDS = (
    "auto_map",
    "architectures",
    "model_type",
    "feature_extractor_cqt",
    "feature_extractor_cqt_bins",
    "deepnorm",
    "attention_relax",
    "transformers_version",
)


class UnsupportedCheckpointError(ValueError):
    """A checkpoint whose architecture HubertModel cannot reproduce exactly."""


def hubert_config_from_dict(raw: dict[str, Any], *, where: str = "config.json") -> HubertConfig:
    """Turn a MERT or HuBERT ``config.json`` dict into a HubertConfig, refusing unsupported variants."""
    model_type = raw.get("model_type", "hubert")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedCheckpointError(
            f"{where}: model_type {model_type!r} is not supported "
            f"(expected one of {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    if raw.get("feature_extractor_cqt", False):
        raise UnsupportedCheckpointError(
            f"{where}: feature_extractor_cqt is true: this MERT variant feeds a CQT into the "
            "front end, which HubertModel does not implement (released MERT-v1 models have false)"
        )
    if raw.get("deepnorm", False):
        raise UnsupportedCheckpointError(
            f"{where}: deepnorm is true: DeepNet residual scaling is not HuBERT's forward pass "
            "(released MERT-v1 models have false)"
        )
    fields = {k: v for k, v in raw.items() if k not in _MERT_ONLY_FIELDS}
    # transformers >= 4.48 reads this flag; MERT uses the classic weight-normed positional conv.
    fields["conv_pos_batch_norm"] = False
    # masked_spec_embed only exists when some masking probability is positive; keep it loadable.
    if fields.get("mask_time_prob", 0.05) <= 0 and fields.get("mask_feature_prob", 0.0) <= 0:
        fields["mask_time_prob"] = 0.05
    fields.setdefault("sample_rate", 16000 if model_type == "hubert" else 24000)
    return HubertConfig(**fields)


def mert_config_dict(
    *,
    hidden_size: int = 768,
    num_hidden_layers: int = 12,
    num_attention_heads: int = 12,
    intermediate_size: int = 3072,
    conv_dim: tuple[int, ...] = (512,) * 7,
    num_conv_pos_embeddings: int = 128,
    num_conv_pos_embedding_groups: int = 16,
    do_stable_layer_norm: bool = False,
) -> dict[str, Any]:
    """A ``config.json`` dict in MERT-v1's released layout (95M defaults; smaller for tests)."""
    return {
        "architectures": ["MERTModel"],
        "auto_map": {
            "AutoConfig": "configuration_MERT.MERTConfig",
            "AutoModel": "modeling_MERT.MERTModel",
        },
        "model_type": "mert_model",
        "transformers_version": "4.24.0",
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "hidden_act": "gelu",
        "feat_extract_activation": "gelu",
        "feat_extract_norm": "group",
        "do_stable_layer_norm": do_stable_layer_norm,
        "conv_dim": list(conv_dim),
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": False,
        "num_conv_pos_embeddings": num_conv_pos_embeddings,
        "num_conv_pos_embedding_groups": num_conv_pos_embedding_groups,
        "feat_proj_layer_norm": True,
        "layer_norm_eps": 1e-5,
        "sample_rate": 24000,
        "num_feat_extract_layers": 7,
        "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": 336,
        "deepnorm": False,
        "attention_relax": 32.0 if do_stable_layer_norm else -1.0,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.1,
        "layerdrop": 0.05,
        "final_dropout": 0.1,
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
        "mask_time_min_masks": 2,
        "mask_feature_prob": 0.0,
        "apply_spec_augment": True,
        "torch_dtype": "float32",
        "vocab_size": 32,
    }
