"""Benchmark: corpus extraction against the model-card way, the pure forward, and the FLOP ceiling.

All measured in one run on the same files (30 s clips in mixed formats and sample rates) with a
MERT-v1-95M-size encoder (random weights). Prints audio-seconds per second and ratios, then the
bfloat16 speed-up and its per-layer relative error against float32.

    python bench/extract.py [--clips 3] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from transformers import HubertModel, Wav2Vec2FeatureExtractor

sys.path.insert(0, str(Path(__file__).parent))
from common import best_time, encoder_forward_flops, machine_line, matmul_rate  # noqa: E402

from culturemert.extract import ExtractSettings, collect_inputs, extract_corpus  # noqa: E402
from culturemert.model import (  # noqa: E402
    hubert_config_from_dict,
    load_encoder,
    mert_config_dict,
    save_encoder,
)

FORMATS = [("flac", 44100, 2, "PCM_16"), ("ogg", 22050, 1, "VORBIS"), ("wav", 48000, 1, "PCM_24")]


def write_clips(folder: Path, clips: int, seconds: float) -> list[Path]:
    """Music-like test clips: harmonic tones with vibrato plus noise, in mixed formats and rates."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(clips):
        ext, rate, channels, subtype = FORMATS[i % len(FORMATS)]
        t = np.arange(int(seconds * rate)) / rate
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        tone = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2
        signal = tone + 0.02 * rng.standard_normal(t.shape)
        data = np.stack([signal, signal[::-1]], axis=1) if channels == 2 else signal
        paths.append(folder / f"clip{i}.{ext}")
        sf.write(paths[-1], data.astype(np.float32), rate, subtype=subtype)
    return paths


def model_card_way(model_dir: Path, paths: list[Path]) -> list[np.ndarray]:
    """The MERT model card's recipe, one file at a time (scipy stands in for torchaudio's resampler)."""
    processor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = HubertModel.from_pretrained(model_dir).eval()
    results = []
    for path in paths:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = resample_poly(audio.mean(axis=1), 24000, rate).astype(np.float32)
        inputs = processor(audio, sampling_rate=24000, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs, output_hidden_states=True)
        stacked = torch.stack(outputs.hidden_states).squeeze()
        results.append(stacked.mean(-2).numpy())
    return results


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip bf16 (emulated, very slow on AVX2-only CPUs)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_clips(tmp, args.clips, args.seconds)
        model_dir = save_encoder(
            HubertModel(hubert_config_from_dict(mert_config_dict())), tmp / "mert-95m"
        )
        audio_seconds = args.clips * args.seconds
        items = collect_inputs(tmp)

        def ours(dtype: str, window_seconds: float | None = None) -> dict[str, np.ndarray]:
            encoder = load_encoder(model_dir, dtype=dtype)
            out = Path(tempfile.mkdtemp(dir=tmp))
            settings = ExtractSettings(dtype=dtype, window_seconds=window_seconds)
            extract_corpus(encoder, items, out, settings=settings, progress=False)
            return {t: np.load(out / "features" / f"{t}.npy") for t, _ in items}

        encoder = load_encoder(model_dir)
        waveforms = [torch.randn(1, int(args.seconds * 24000)) for _ in paths]

        def forward_only() -> None:
            with torch.inference_mode():
                for x in waveforms:
                    encoder(x, output_hidden_states=True)

        times = {
            "culturemert extract (fp32)": best_time(lambda: ours("float32"), args.rounds),
            "model-card way (fp32)": best_time(lambda: model_card_way(model_dir, paths), 1),
            "forward only, in memory": best_time(forward_only, args.rounds),
        }
        rate = matmul_rate()
        flops = encoder_forward_flops(encoder.config, int(args.seconds * 24000)) * args.clips
        ceiling = audio_seconds / (flops / rate)
        # Not the same features: 5 s windows (MERT's pre-training context) batched per clip.
        times["extract, 5 s windows (fp32)"] = best_time(lambda: ours("float32", 5.0), 1)
        fp32 = ours("float32")
        if not args.no_bf16:
            started = time.perf_counter()
            bf16 = ours("bfloat16")  # one run: emulated bf16 is slow without native support
            times["culturemert extract (bf16)"] = time.perf_counter() - started

    print(machine_line())
    print(
        f"audio: {args.clips} clips × {args.seconds:.0f} s; fp32 matmul rate {rate / 1e9:.1f} GFLOP/s"
    )
    print(f"encoder forward: {flops / audio_seconds / 1e9:.1f} GFLOP per audio-second")
    print(f"\n{'method':<30} {'audio-s/s':>10}")
    for name, seconds in times.items():
        print(f"{name:<30} {audio_seconds / seconds:>10.2f}")
    print(f"{'FLOP ceiling (fp32)':<30} {ceiling:>10.2f}")
    ours_fp32 = times["culturemert extract (fp32)"]
    print("\nratios")
    print(
        f"  extract / model-card way:   {times['model-card way (fp32)'] / ours_fp32:.2f}×  (target ≥ 1.2)"
    )
    print(
        f"  extract / FLOP ceiling:     {audio_seconds / ours_fp32 / ceiling:.0%}  (target ≥ 80%)"
    )
    print(
        f"  forward / FLOP ceiling:     {audio_seconds / times['forward only, in memory'] / ceiling:.0%}"
    )
    if args.no_bf16:
        return
    print(
        f"  bf16 / fp32 speed:          {ours_fp32 / times['culturemert extract (bf16)']:.2f}×  (target ≥ 2)"
    )
    errors = np.stack(
        [
            np.linalg.norm(bf16[t] - fp32[t], axis=-1) / np.linalg.norm(fp32[t], axis=-1)
            for t in fp32
        ]
    )
    print(
        "  bf16 relative error per layer (max over clips): "
        + " ".join(f"{e:.2%}" for e in errors.max(axis=0))
        + "  (target ≤ 2%)"
    )


if __name__ == "__main__":
    main()
