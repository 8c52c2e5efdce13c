"""Encoders: MERT ↔ HuBERT config mapping, checkpoint load/save in Hugging Face layout, and the
encoder value (module + preprocessing) the library passes around."""

from culturemert.model.card import EncoderCard, Lineage
from culturemert.model.checkpoint import (
    EncoderLoadError,
    Preprocessing,
    load_encoder,
    read_preprocessing,
    save_encoder,
)
from culturemert.model.config import (
    UnsupportedCheckpointError,
    hubert_config_from_dict,
    mert_config_dict,
)
from culturemert.model.encoder import Encoder, as_encoder, open_encoder
from culturemert.model.finite import NonFiniteWeightsError

__all__ = [
    "Encoder",
    "EncoderCard",
    "EncoderLoadError",
    "Lineage",
    "NonFiniteWeightsError",
    "Preprocessing",
    "UnsupportedCheckpointError",
    "as_encoder",
    "hubert_config_from_dict",
    "load_encoder",
    "mert_config_dict",
    "open_encoder",
    "read_preprocessing",
    "save_encoder",
]
