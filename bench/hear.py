"""Benchmark: the HEAR API's cost over the bare encoder, and the torch resampler against soxr.

Measured in one run, on the device given (a randomly initialised MERT-v1-95M-sized encoder,
or ``--small`` for a quick look):

1. ``get_timestamp_embeddings`` on a batch of 48 kHz sounds (HEAR's rate) against the
   baseline: the bare ``HubertModel`` forward over the same sounds already at 24 kHz, in the
   same batches. The ratio is what the API adds (resampling on the device, windowing,
   concatenating the layers).
2. ``culturemert.resampling.resample`` (48 kHz → 24 kHz and 44.1 kHz → 24 kHz) on the
   device against ``soxr.resample`` (HQ) on the CPU, one sound at a time, as audio seconds
   per wall-clock second, and the largest difference between the two away from the ends. The
   sounds are white noise, so that difference is the two filters' transition bands (0.93–1.01
   of 12 kHz) disagreeing; below 0.9 of it they agree within 1e-4 (tests/test_resampling.py).

    python bench/hear.py [--device cuda] [--sounds 16] [--seconds 10] [--small]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soxr
import torch
from transformers import HubertConfig, HubertModel

sys.path.insert(0, str(Path(__file__).parent))
from common import best_time, machine_line  # noqa: E402

import culturemert.hear as hear  # noqa: E402
from culturemert.model import Encoder, save_encoder  # noqa: E402
from culturemert.model.checkpoint import Preprocessing  # noqa: E402
from culturemert.resampling import resample  # noqa: E402


def encoder_config(small: bool) -> HubertConfig:
    """MERT-v1-95M's layout (HuBERT base), or a 2-layer, 64-wide one."""
    if small:
        return HubertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
    return HubertConfig()


def main() -> None:
    """Print the two tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sounds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(machine_line(device))

    torch.manual_seed(0)
    module = HubertModel(encoder_config(args.small)).eval()
    rng = np.random.default_rng(0)
    n_48k = int(args.seconds * 48000)
    audio = torch.from_numpy(rng.uniform(-0.5, 0.5, (args.sounds, n_48k)).astype(np.float32))
    with tempfile.TemporaryDirectory() as folder:
        save_encoder(Encoder(module, Preprocessing(24000)), Path(folder) / "encoder")
        model = hear.load_model(str(Path(folder) / "encoder"), device=device)
    audio = audio.to(device)
    at_24k = resample(audio, 48000, 24000)
    batch = 16 if device.type == "cuda" else max(1, round(30 / args.seconds))

    @torch.inference_mode()
    def bare() -> None:
        for start in range(0, len(at_24k), batch):
            model.module(at_24k[start : start + batch], output_hidden_states=True)

    api = best_time(lambda: hear.get_timestamp_embeddings(audio, model), device=device)
    baseline = best_time(bare, device=device)
    total = args.sounds * args.seconds
    print(f"\n{args.sounds} sounds of {args.seconds:g} s, {model.scene_embedding_size} dims")
    print("| way | seconds | audio s per s | vs bare forward |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| bare forward at 24 kHz (baseline) | {baseline:.2f} | {total / baseline:.0f} | 1.00× |"
    )
    print(
        f"| get_timestamp_embeddings at 48 kHz | {api:.2f} | {total / api:.0f} "
        f"| {baseline / api:.2f}× |"
    )

    print("\n| resampling | torch on device, audio s per s | soxr HQ, audio s per s | max diff |")
    print("| --- | ---: | ---: | ---: |")
    for rate in (48000, 44100):
        signal = np.stack([soxr.resample(row, 48000, rate) for row in audio.cpu().numpy()])
        on_device = torch.from_numpy(signal).to(device)
        ours = best_time(lambda: resample(on_device, rate, 24000), device=device)  # noqa: B023
        theirs = best_time(lambda: [soxr.resample(row, rate, 24000, "HQ") for row in signal])  # noqa: B023
        got = resample(on_device, rate, 24000).cpu().numpy()[:, 1200:-1200]
        expected = np.stack([soxr.resample(row, rate, 24000, "HQ") for row in signal])[
            :, 1200:-1200
        ]
        print(
            f"| {rate / 1000:g} kHz → 24 kHz | {total / ours:.0f} | {total / theirs:.0f} "
            f"| {np.abs(got - expected).max():.1e} |"
        )


if __name__ == "__main__":
    main()
