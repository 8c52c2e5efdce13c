"""MERT's musical teacher: a linear-magnitude constant-Q transform at the encoder's frame rate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nnAudio.features import CQT
from torch import nn

from culturemert.frames import HOP_SAMPLES, SAMPLE_RATE, encoder_frames

#: MERT's CQT: 7 octaves upwards from C1 (32.7 Hz), 336 bins, 48 per octave.
CQT_FMIN = 32.7
CQT_BINS = 336
CQT_OCTAVES = 7


def mert_cqt(n_bins: int = CQT_BINS, sample_rate: int = SAMPLE_RATE) -> CQT:
    """nnAudio's ``CQT`` (CQT1992v2) with MERT's settings: the reference definition."""
    return CQT(
        sr=sample_rate,
        hop_length=HOP_SAMPLES,
        fmin=CQT_FMIN,
        n_bins=n_bins,
        bins_per_octave=n_bins // CQT_OCTAVES,
        filter_scale=1,
        norm=1,
        window="hann",
        center=True,
        pad_mode="constant",
        trainable=False,
        output_format="Magnitude",
        verbose=False,
    )


class CQTTarget(nn.Module):
    """``[B, L]`` waveforms at 24 kHz → ``[B, T, n_bins]`` CQT magnitudes, T = encoder frames.

    The numbers of nnAudio's ``CQT`` with MERT's settings (hop 320, fmin 32.7 Hz, ``n_bins // 7``
    bins per octave, L1-normalised Hann kernels, centred frames with zero padding, librosa
    scaling, linear magnitude): frame t is centred at sample 320·t and the first T frames are
    kept, as in MERT. nnAudio convolves every bin with a 65536-tap kernel that is mostly
    zeros; here each octave's kernels are cut to their support, which gives the same sums at
    about a third of the cost. Kernels are non-persistent buffers; computed in float32.
    """

    def __init__(self, n_bins: int = CQT_BINS, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        if n_bins % CQT_OCTAVES:
            raise ValueError(f"n_bins must be a multiple of {CQT_OCTAVES} (octaves), got {n_bins}")
        reference = mert_cqt(n_bins, sample_rate)
        self.n_bins = n_bins
        self.padding = reference.kernel_width // 2
        real = reference.cqt_kernels_real[:, 0]
        imag = -reference.cqt_kernels_imag[:, 0]  # nnAudio negates the imaginary part
        scale = reference.lenghts.sqrt()[:, None]  # librosa normalisation: × sqrt(kernel length)
        per_octave = n_bins // CQT_OCTAVES
        self.offsets: list[int] = []
        for octave in range(CQT_OCTAVES):
            rows = slice(octave * per_octave, (octave + 1) * per_octave)
            support = torch.nonzero(((real[rows] != 0) | (imag[rows] != 0)).any(dim=0))[:, 0]
            start, end = int(support[0]), int(support[-1]) + 1
            kernel = torch.cat([real[rows, start:end], imag[rows, start:end]]) * scale[rows].repeat(
                2, 1
            )
            self.register_buffer(f"kernel{octave}", kernel[:, None].float(), persistent=False)
            self.offsets.append(start)

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """CQT magnitudes ``[B, T, n_bins]`` of ``[B, L]`` waveforms (L ≥ 400)."""
        frames = encoder_frames(waveforms.shape[-1])
        with torch.autocast(waveforms.device.type, enabled=False):
            padded = F.pad(waveforms.float()[:, None], (self.padding, self.padding))
            octaves = []
            for octave, start in enumerate(self.offsets):
                kernel = getattr(self, f"kernel{octave}")
                out = F.conv1d(padded[..., start:], kernel, stride=HOP_SAMPLES)[..., :frames]
                real, imag = out.chunk(2, dim=1)
                octaves.append(torch.sqrt(real.pow(2) + imag.pow(2)))
        return torch.cat(octaves, dim=1).transpose(1, 2)
