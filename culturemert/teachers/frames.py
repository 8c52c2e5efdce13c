"""The encoder's frame grid at 24 kHz, which every teacher's labels are aligned to."""

from __future__ import annotations

from culturemert.audio import MIN_SAMPLES

SAMPLE_RATE = 24000
#: Total stride of the convolutional front end: one label per 320 samples (75 Hz).
HOP_SAMPLES = 320


def encoder_frames(num_samples: int) -> int:
    """Frames the encoder gives for ``num_samples``: ``floor((L − 400) / 320) + 1`` (0 if shorter)."""
    if num_samples < MIN_SAMPLES:
        return 0
    return (num_samples - MIN_SAMPLES) // HOP_SAMPLES + 1
