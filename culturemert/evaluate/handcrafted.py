"""Hand-made features in an encoder's place: the reference a learned encoder should beat.

MFCC (with deltas), log-mel and chroma frames at the encoder frame rate (75 Hz), as another
kind of :class:`~culturemert.model.Encoder` (a module giving ``hidden_states``, with a
``config``), so they are cached, probed, selected and scored exactly as encoders are.
Written ``features:mfcc+chroma`` wherever an encoder is named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from culturemert.frames import SAMPLE_RATE
from culturemert.model.checkpoint import Preprocessing
from culturemert.model.encoder import Encoder
from culturemert.teachers.features import FEATURE_KINDS, frame_features

PREFIX = "features:"


@dataclass(frozen=True)
class HandcraftedConfig:
    """Which features; part of the feature-cache key as an encoder's config is."""

    kinds: str
    sample_rate: int = SAMPLE_RATE

    def to_dict(self) -> dict:
        """The config as a plain dict (what fingerprints read)."""
        return asdict(self)

    @property
    def name_or_path(self) -> str:
        """How results name these features."""
        return f"{PREFIX}{self.kinds}"


class HandcraftedFeatures(nn.Module):
    """Frame features of ``kinds`` (e.g. ``"mfcc+chroma"``) as a single hidden 'layer'."""

    def __init__(self, kinds: str):
        super().__init__()
        unknown = sorted(set(kinds.split("+")) - set(FEATURE_KINDS))
        if unknown:
            raise ValueError(
                f"unknown feature kind {unknown[0]!r} in {PREFIX}{kinds} "
                f"(choose from {', '.join(FEATURE_KINDS)}, joined by '+')"
            )
        self.config = HandcraftedConfig(kinds)

    def forward(self, waveforms: torch.Tensor, output_hidden_states: bool = True):
        """``hidden_states``: one ``[batch, frames, dims]`` tensor of the frame features."""
        frames = [frame_features(w.cpu().numpy(), self.config.kinds) for w in waveforms]
        return SimpleNamespace(hidden_states=(torch.from_numpy(np.stack(frames)),))


def is_handcrafted(source: object) -> bool:
    """Whether ``source`` names hand-made features (``features:KINDS``) rather than a model."""
    return isinstance(source, str) and source.startswith(PREFIX)


def handcrafted_features(source: str) -> Encoder:
    """The features named by ``features:KINDS``, as an encoder reading 24 kHz audio."""
    return Encoder(
        HandcraftedFeatures(source.removeprefix(PREFIX)), Preprocessing(sample_rate=SAMPLE_RATE)
    )
