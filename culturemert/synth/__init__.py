"""A synthetic world-music corpus: five traditions with learnable scales, cycles and timbres.

``generate_clip(tradition, seed, duration)`` gives one labelled clip; ``write_corpus`` writes
audio files and manifests for the evaluation and pre-training code to read.
"""

from culturemert.synth.corpus import (
    SAMPLE_RATE,
    Clip,
    clip_seed,
    generate_clip,
    split_counts,
    write_corpus,
)
from culturemert.synth.render import PARTS
from culturemert.synth.traditions import TRADITIONS, Tradition, get_tradition

__all__ = [
    "PARTS",
    "SAMPLE_RATE",
    "TRADITIONS",
    "Clip",
    "Tradition",
    "clip_seed",
    "generate_clip",
    "get_tradition",
    "split_counts",
    "write_corpus",
]
