"""Facts of MERT's input and frame grid, defined once: 24 kHz audio, a 400-sample receptive field
(one frame), a 320-sample hop (75 Hz). Every teacher's labels are aligned to this grid."""

from __future__ import annotations

#: The sample rate MERT-v1 encoders read.
SAMPLE_RATE = 24000
#: One encoder frame: the convolutional front end's receptive field in samples.
MIN_SAMPLES = 400
#: Total stride of the convolutional front end: one label per 320 samples (75 Hz).
HOP_SAMPLES = 320
#: Ways to pool a window's frames into one vector (mean and std side by side for "mean+std").
POOLS = ("mean", "max", "mean+std")


def encoder_frames(num_samples: int) -> int:
    """Frames the encoder gives for ``num_samples``: ``floor((L − 400) / 320) + 1`` (0 if shorter)."""
    if num_samples < MIN_SAMPLES:
        return 0
    return (num_samples - MIN_SAMPLES) // HOP_SAMPLES + 1
