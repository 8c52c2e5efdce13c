"""MERT-v1's acoustic teacher: EnCodec residual-vector-quantiser codes at 75 Hz."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from transformers import EncodecModel

from culturemert.frames import HOP_SAMPLES, SAMPLE_RATE, encoder_frames
from culturemert.teachers.base import teacher_hash

#: MERT-v1 encodes at 6 kbps: 8 codebooks of 1024 codes (8 × 10 bit × 75 Hz).
DEFAULT_BANDWIDTH = 6.0


class EncodecTeacher:
    """Codes ``[n_q, T]`` of a whole track from a local Hugging Face-layout EnCodec checkpoint.

    The checkpoint must be a 24 kHz mono model without chunking (e.g. ``facebook/encodec_24khz``
    downloaded beforehand); nothing is fetched. Label t pairs with encoder frame t: EnCodec's
    ``ceil(L/320)`` frames are cut to the encoder's ``floor((L − 400)/320) + 1``.
    """

    kind = "encodec"

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        bandwidth: float = DEFAULT_BANDWIDTH,
        device: str | torch.device = "cpu",
    ):
        directory = Path(directory).expanduser()
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"{directory}: no config.json; pass a local Hugging Face-layout EnCodec folder "
                "(e.g. one downloaded with `hf download facebook/encodec_24khz --local-dir DIR`)"
            )
        model = EncodecModel.from_pretrained(directory, local_files_only=True).to(device).eval()
        config = model.config
        hop = int(np.prod(config.upsampling_ratios))
        if config.sampling_rate != SAMPLE_RATE or config.audio_channels != 1 or hop != HOP_SAMPLES:
            raise ValueError(
                f"{directory}: EnCodec at {config.sampling_rate} Hz, {config.audio_channels} "
                f"channel(s), hop {hop}; the teacher needs the 24 kHz mono model (hop 320)"
            )
        if config.chunk_length_s is not None:
            raise ValueError(f"{directory}: chunked EnCodec models are not supported")
        if bandwidth not in config.target_bandwidths:
            raise ValueError(
                f"{directory}: bandwidth {bandwidth} not among {list(config.target_bandwidths)}"
            )
        self.model = model
        self.bandwidth = bandwidth
        quantizers = model.quantizer.get_num_quantizers_for_bandwidth(bandwidth)
        self.codebook_sizes = [int(config.codebook_size)] * quantizers
        self.name = f"encodec({directory.name}, {bandwidth:g} kbps)"
        state = model.state_dict()
        self.hash = teacher_hash(
            self.kind,
            {"bandwidth": bandwidth, "quantizers": quantizers, "config": _config_fields(config)},
            [state[name].detach().cpu().float().numpy() for name in sorted(state)],
        )

    @torch.inference_mode()
    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """int64 codes ``[n_q, T]`` of a mono 24 kHz waveform, encoded in one pass."""
        samples = np.asarray(waveform, dtype=np.float32).reshape(-1)
        frames = encoder_frames(samples.size)
        if frames == 0:
            raise ValueError(f"waveform has {samples.size} samples; at least 400 needed")
        device = next(self.model.parameters()).device
        signal = torch.from_numpy(samples).to(device)[None, None]
        codes = self.model.encode(signal, bandwidth=self.bandwidth).audio_codes  # [1, 1, n_q, F]
        return codes[0, 0, :, :frames].cpu().numpy().astype(np.int64)


def _config_fields(config) -> dict:
    """The config values that shape the codes (not bookkeeping such as library versions)."""
    fields = config.to_dict()
    for key in ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"):
        fields.pop(key, None)
    return fields
