"""Benchmark: ``culturemert extract`` against the bare forward, the model card's loop and FLOPs.

All measured in one run on the same files (30 s clips in mixed formats and sample rates) with a
MERT-v1-95M-size encoder (random weights), on one device:

- the bare forward: the decoded clips in memory, through the encoder in the batches extract
  forms (equal-length windows, ``--batch-size``), nothing else;
- ``extract_corpus`` in steady state: the time of ``B + N`` clips minus that of the first ``B``
  (a batch or two: start-up — worker processes, the first decode — cancels), rated on ``N`` clips;
- the MERT model card's recipe, one file at a time (scipy stands in for torchaudio's resampler);
- the FLOP ceiling: the encoder's analytic forward FLOPs at the measured matmul rate.

Targets: extract ≥ 95% of the bare forward's rate and never slower than the model card's loop.
Then the bfloat16 speed-up and its per-layer relative error against float32. The measurements
alternate round by round and each keeps its best round, so a drift in the machine's speed
weighs on all alike.

    python bench/extract.py [--clips 10] [--seconds 30] [--device cpu] [--no-bf16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from transformers import HubertModel, Wav2Vec2FeatureExtractor

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    best_time,
    encoder_forward_flops,
    machine_line,
    matmul_rate,
    synchronize,
)

from culturemert.audio import load_audio  # noqa: E402
from culturemert.devices import default_batch_size, resolve_device  # noqa: E402
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
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(clips):
        ext, rate, channels, subtype = FORMATS[i % len(FORMATS)]
        t = np.arange(int(seconds * rate)) / rate
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        tone = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2
        signal = tone + 0.02 * rng.standard_normal(t.shape)
        data = np.stack([signal, signal[::-1]], axis=1) if channels == 2 else signal
        paths.append(folder / f"clip{i:04d}.{ext}")
        sf.write(paths[-1], data.astype(np.float32), rate, subtype=subtype)
    return paths


def model_card_way(model_dir: Path, paths: list[Path], device: torch.device) -> list[np.ndarray]:
    """The MERT model card's recipe, one file at a time (scipy stands in for torchaudio's resampler)."""
    processor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = HubertModel.from_pretrained(model_dir).to(device).eval()
    results = []
    for path in paths:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = resample_poly(audio.mean(axis=1), 24000, rate).astype(np.float32)
        inputs = processor(audio, sampling_rate=24000, return_tensors="pt").to(device)
        with torch.no_grad():
            outputs = model(**inputs, output_hidden_states=True)
        stacked = torch.stack(outputs.hidden_states).squeeze()
        results.append(stacked.mean(-2).cpu().numpy())
    return results


def bare_forward(encoder, waveforms: list[torch.Tensor], batch_size: int) -> None:
    """The encoder alone on in-memory clips of equal length, in batches of ``batch_size``."""
    with torch.inference_mode():
        for start in range(0, len(waveforms), batch_size):
            encoder(torch.stack(waveforms[start : start + batch_size]), output_hidden_states=True)


class ModelClock:
    """Wall seconds spent inside ``encoder``'s forward passes (device work included)."""

    def __init__(self, encoder: torch.nn.Module, device: torch.device):
        self.seconds, self.device = 0.0, device
        self.hooks = [
            encoder.register_forward_pre_hook(self._start),
            encoder.register_forward_hook(self._stop),
        ]

    def _start(self, *_) -> None:
        synchronize(self.device)
        self.started = time.perf_counter()

    def _stop(self, *_) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self.started

    def remove(self) -> None:
        """Stop timing."""
        for hook in self.hooks:
            hook.remove()


@dataclass
class ExtractionTimes:
    """Best-round seconds of each way over the same N clips, and extract's features per dtype."""

    forward: dict[str, float]  # dtype -> bare forward
    steady: dict[str, float]  # dtype -> extract in steady state
    in_model: dict[str, float]  # dtype -> share of extract's steady time inside the encoder
    model_card: float  # fp32
    features: dict[str, dict[str, np.ndarray]]  # dtype -> track -> [layers, dims]


def measure_extraction(
    model_dir: Path,
    dtypes: list[str],
    clips: int,
    seconds: float,
    *,
    device: torch.device,
    batch_size: int,
    workers: int,
    rounds: int,
    tmp: Path,
) -> ExtractionTimes:
    """Time the bare forward and extract (alternating, best round each) and the model-card loop."""
    write_clips(tmp / "clips", clips + max(batch_size, 2), seconds)
    items = collect_inputs(tmp / "clips")
    first, lead = items[:clips], items[clips:]  # lead: start-up, rated apart
    encoders = {dtype: load_encoder(model_dir, dtype=dtype, device=device) for dtype in dtypes}

    def extract(dtype: str, chosen) -> dict[str, np.ndarray]:
        out = Path(tempfile.mkdtemp(dir=tmp))
        extract_corpus(
            encoders[dtype],
            chosen,
            out,
            settings=ExtractSettings(dtype=dtype),
            num_workers=workers,
            batch_size=batch_size,
            progress=False,
        )
        return {t: np.load(out / "features" / f"{t}.npy")[:, 0] for t, _ in chosen}

    inside = {dtype: ModelClock(encoder, device) for dtype, encoder in encoders.items()}
    waveforms = [torch.from_numpy(load_audio(path)).to(device) for _, path in first]
    for encoder in encoders.values():  # warm-up: kernels chosen, memory pooled
        bare_forward(encoder, [waveforms[0].to(encoder.dtype)], 1)
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for dtype, encoder in encoders.items():
            inputs = [w.to(encoder.dtype) for w in waveforms]
            timed = {
                "forward": lambda e=encoder, x=inputs: bare_forward(e, x, batch_size),
                "lead": lambda d=dtype: extract(d, lead),
                "lead + N": lambda d=dtype: extract(d, lead + first),
            }
            if dtype == "float32":
                timed["model card"] = lambda: model_card_way(
                    model_dir, [p for _, p in first], device
                )
            for what, function in timed.items():
                inside[dtype].seconds = 0.0
                runs.setdefault((dtype, what), []).append(best_time(function, 1, device))
                runs.setdefault((dtype, f"{what} in model"), []).append(inside[dtype].seconds)
    for clock in inside.values():
        clock.remove()
    best = {key: min(values) for key, values in runs.items()}
    # Each round's time inside the encoder against its own wall time: no drift between them.
    shares = {
        dtype: [
            (model_long - model_short) / (wall_long - wall_short)
            for wall_short, wall_long, model_short, model_long in zip(
                runs[dtype, "lead"],
                runs[dtype, "lead + N"],
                runs[dtype, "lead in model"],
                runs[dtype, "lead + N in model"],
                strict=True,
            )
        ]
        for dtype in dtypes
    }
    return ExtractionTimes(
        forward={d: best[d, "forward"] for d in dtypes},
        steady={d: best[d, "lead + N"] - best[d, "lead"] for d in dtypes},  # ≤ 0: noise only
        in_model={d: float(np.median(shares[d])) for d in dtypes},
        model_card=best["float32", "model card"],
        features={d: extract(d, first) for d in dtypes},
    )


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10, help="N: steady state is rated on N clips")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: the GPU if there is one")
    parser.add_argument("--workers", type=int, default=1, help="extract's decoding processes")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip bf16 (emulated, very slow on AVX2-only CPUs)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    batch_size = args.batch_size or default_batch_size(device, 30.0)
    dtypes = ["float32"] + ([] if args.no_bf16 else ["bfloat16"])
    torch.manual_seed(0)
    config = hubert_config_from_dict(mert_config_dict())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = save_encoder(HubertModel(config), tmp / "mert-95m")
        times = measure_extraction(
            model_dir,
            dtypes,
            args.clips,
            args.seconds,
            device=device,
            batch_size=batch_size,
            workers=args.workers,
            rounds=args.rounds,
            tmp=tmp,
        )
    rate = matmul_rate(device=device)
    audio = args.clips * args.seconds
    flops = encoder_forward_flops(config, int(args.seconds * 24000)) * args.clips
    ceiling = audio / (flops / rate)
    print(machine_line(device))
    print(
        f"audio: N = {args.clips} clips × {args.seconds:.0f} s ({audio / 60:.1f} min); batches "
        f"of {batch_size} windows; {args.workers} decoding worker(s); best of {args.rounds} "
        f"alternating rounds; fp32 matmul rate {rate / 1e9:.1f} GFLOP/s"
    )
    print(f"encoder forward: {flops / audio / 1e9:.1f} GFLOP per audio-second\n")
    print(f"{'method':<42} {'audio-s/s':>10}")
    for dtype in dtypes:
        print(f"{f'bare forward, in memory ({dtype})':<42} {audio / times.forward[dtype]:>10.2f}")
        print(
            f"{f'culturemert extract, steady ({dtype})':<42} {audio / times.steady[dtype]:>10.2f}"
        )
    print(f"{'model-card loop (fp32)':<42} {audio / times.model_card:>10.2f}")
    print(f"{'FLOP ceiling (fp32)':<42} {ceiling:>10.2f}")
    steady = times.steady["float32"]
    print("\nratios")
    print(
        f"  extract / bare forward:      {times.forward['float32'] / steady:.2f}  (target ≥ 0.95)"
    )
    print(
        f"  extract's steady time inside the encoder: {times.in_model['float32']:.1%} (the rest: "
        "decoding, pooling, writing not hidden; median over rounds)"
    )
    print(f"  extract / model-card loop:   {times.model_card / steady:.2f}×  (target ≥ 1)")
    print(f"  extract / FLOP ceiling:      {audio / steady / ceiling:.0%}")
    if args.no_bf16:
        return
    print(
        f"  bf16 extract / bare forward: {times.forward['bfloat16'] / times.steady['bfloat16']:.2f}"
    )
    print(f"  bf16 extract's time inside the encoder: {times.in_model['bfloat16']:.1%}")
    print(f"  bf16 / fp32 speed:           {steady / times.steady['bfloat16']:.2f}×")
    fp32, bf16 = times.features["float32"], times.features["bfloat16"]
    errors = np.stack(
        [
            np.linalg.norm(bf16[t] - reference, axis=-1) / np.linalg.norm(reference, axis=-1)
            for t, reference in fp32.items()
        ]
    )
    print(
        "  bf16 relative error per layer (max over clips): "
        + " ".join(f"{e:.2%}" for e in errors.max(axis=0))
    )


if __name__ == "__main__":
    main()
