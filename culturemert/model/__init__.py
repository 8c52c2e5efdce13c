"""Encoders: MERT ↔ HuBERT config mapping and checkpoint load/save in Hugging Face layout."""

from culturemert.model.checkpoint import (
    EncoderLoadError,
    Preprocessing,
    encoder_preprocessing,
    load_encoder,
    read_preprocessing,
    save_encoder,
)
from culturemert.model.config import (
    UnsupportedCheckpointError,
    hubert_config_from_dict,
    mert_config_dict,
)

__all__ = [
    "EncoderLoadError",
    "Preprocessing",
    "UnsupportedCheckpointError",
    "encoder_preprocessing",
    "hubert_config_from_dict",
    "load_encoder",
    "mert_config_dict",
    "read_preprocessing",
    "save_encoder",
]
