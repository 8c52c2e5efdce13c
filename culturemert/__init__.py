"""culturemert: embed, adapt, merge and evaluate music encoders across musical traditions."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Exported names and their modules; imported on first use so that the command line (and any
# tool that only needs a small part) does not pay for torch and transformers up front.
_EXPORTS = {
    "AudioError": "culturemert.audio",
    "load_audio": "culturemert.audio",
    "LayerWeighting": "culturemert.embedding",
    "embed": "culturemert.embedding",
    "Encoder": "culturemert.model",
    "EncoderLoadError": "culturemert.model",
    "load_encoder": "culturemert.model",
    "open_encoder": "culturemert.model",
    "save_encoder": "culturemert.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import an exported name from its module on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'culturemert' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
