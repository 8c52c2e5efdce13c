"""Benchmark: continual pre-training throughput of a MERT-v1-95M-size encoder on this machine.

Two comparisons, measured in one run with MERT's full objective (8 EnCodec-size codebooks, CQT
head, noise mixing) on 5 s crops, through the same Fabric training step the loop uses:

1. training throughput (audio-seconds per second, fed from in-memory batches) against the
   ceiling implied by the encoder's FLOPs — forward + backward ≈ 3 × the analytic forward
   count (CNN, projection, positional convolution, transformer layers with attention) — at
   the fp32 matrix-multiply rate measured here; target ≥ 50%;
2. the data pipeline (manifest → random crops decoded in a DataLoader worker → codes sliced
   from target files) against the same steps on in-memory batches; target ≤ 5% overhead.

    python bench/pretrain.py [--steps 3] [--batch 2]
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
from transformers import HubertModel

sys.path.insert(0, str(Path(__file__).parent))
from common import encoder_forward_flops, machine_line, matmul_rate  # noqa: E402

from culturemert.manifest import Track, write_manifest  # noqa: E402
from culturemert.model import hubert_config_from_dict, mert_config_dict  # noqa: E402
from culturemert.pretrain.data import (  # noqa: E402
    CropDataset,
    crop_loader,
    mixture_sources,
    read_corpus,
)
from culturemert.pretrain.loop import make_fabric, make_optimizer  # noqa: E402
from culturemert.pretrain.objective import ObjectiveConfig, PretrainingObjective  # noqa: E402
from culturemert.pretrain.recipe import EngineConfig, MixtureConfig, OptimizerConfig  # noqa: E402
from culturemert.teachers import encoder_frames, teacher_hash  # noqa: E402
from culturemert.teachers.cqt import CQT_BINS  # noqa: E402
from culturemert.teachers.targets import compute_targets, load_targets  # noqa: E402

CROP_SECONDS = 5.0
CROP = int(CROP_SECONDS * 24000)
CQT_KERNEL = (
    65536  # nnAudio's widest CQT kernel for MERT's settings (mert-model-and-objective §5.7)
)


class RandomCodes:
    """Stands in for EnCodec: 8 × 1024 codes per frame, random but fixed per track length."""

    name = "random-codes"
    codebook_sizes = [1024] * 8
    hash = teacher_hash("random-codes", {"codebooks": 8, "size": 1024})

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(len(waveform))
        return rng.integers(0, 1024, (8, encoder_frames(len(waveform))))


def write_corpus(folder: Path, tracks: int, seconds: float) -> tuple[Path, Path]:
    """Tone-and-noise tracks at 24 kHz, their manifest, and their precomputed targets."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(tracks):
        t = np.arange(int(seconds * 24000)) / 24000
        signal = 0.2 * np.sin(2 * np.pi * 110 * (index + 1) * t) + 0.02 * rng.standard_normal(
            t.size
        )
        path = folder / f"track{index}.flac"
        sf.write(path, signal.astype(np.float32), 24000, subtype="PCM_16")
        rows.append(Track(f"track{index}", path.name, tradition="bench", duration=seconds))
    manifest = write_manifest(folder / "corpus.jsonl", rows)
    compute_targets(RandomCodes(), rows, folder, folder / "targets", progress=False)
    return manifest, folder / "targets"


def lockstep_times(step, in_memory: list[dict], pipeline) -> tuple[float, float]:
    """Total step seconds fed from memory and from the pipeline, alternating step by step.

    Alternating keeps both measurements under the same load on a shared machine. Pipeline
    steps include waiting for their batch; its first batch is fetched before timing.
    """
    batches = iter(pipeline)
    pending = next(batches)
    memory_time = pipeline_time = 0.0
    for batch in in_memory:
        start = time.perf_counter()
        step(batch)
        memory_time += time.perf_counter() - start
        start = time.perf_counter()
        step(pending)
        pending = next(batches, None)
        pipeline_time += time.perf_counter() - start
    return memory_time, pipeline_time


def main() -> None:
    """Measure and print both comparisons."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per feed")
    parser.add_argument("--batch", type=int, default=2, help="5 s crops per step")
    args = parser.parse_args()
    print(machine_line())

    config = hubert_config_from_dict(mert_config_dict())
    torch.manual_seed(0)
    objective = PretrainingObjective(HubertModel(config), ObjectiveConfig([1024] * 8)).train()
    fabric = make_fabric(EngineConfig(accelerator="cpu"))
    optimizer = make_optimizer(list(objective.parameters()), OptimizerConfig(), lr=1e-5)
    model, optimizer = fabric.setup(objective, optimizer)
    generator = torch.Generator().manual_seed(0)

    def step(batch: dict) -> None:
        output = model(batch["waveforms"], batch["codes"], generator=generator)
        fabric.backward(output.loss)
        fabric.clip_gradients(model, optimizer, max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as tmp:
        manifest, targets = write_corpus(Path(tmp), tracks=4, seconds=30.0)
        sources = mixture_sources(
            MixtureConfig(traditions=["bench"]), read_corpus([manifest]), [], CROP_SECONDS
        )
        dataset = CropDataset(sources, load_targets(targets, RandomCodes.hash), CROP, 0, 0)
        rate = matmul_rate()
        in_memory = list(crop_loader(dataset, args.batch, 0, args.steps))
        step(in_memory[0])  # warm-up: allocations, kernel selection
        pipeline = crop_loader(dataset, args.batch, args.steps, 2 * args.steps, num_workers=1)
        memory_time, pipeline_time = lockstep_times(step, in_memory, pipeline)
        rate = max(rate, matmul_rate())  # the machine's best rate: a conservative ceiling
    forward = encoder_forward_flops(config, CROP)
    cqt = 2 * 2 * CQT_BINS * CQT_KERNEL * (CROP // 320 + 1)  # real + imaginary kernels, no backward
    audio = args.steps * args.batch * CROP_SECONDS
    measured = audio / memory_time
    ceiling = rate * CROP_SECONDS / (3 * forward)
    ceiling_with_cqt = rate * CROP_SECONDS / (3 * forward + cqt)
    print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s (fp32 torch.mm, best before/after)")
    print(
        f"per 5 s crop: encoder forward {forward / 1e9:.1f} GFLOP, training ≈ 3× = "
        f"{3 * forward / 1e9:.1f} GFLOP; CQT target {cqt / 1e9:.1f} GFLOP"
    )
    print(f"\n{'':<44}{'audio s/s':>10}{'ratio':>9}")
    print(f"{'ceiling: 3 × encoder FLOPs at matmul rate':<44}{ceiling:>10.2f}{'1.00':>9}")
    print(
        f"{'training, in-memory batches':<44}{measured:>10.2f}{measured / ceiling:>9.2f}"
        f"   (target ≥ 0.50; {measured / ceiling_with_cqt:.2f} counting the CQT target too)"
    )
    overhead = pipeline_time / memory_time - 1
    print(
        f"{'training, data pipeline (1 worker)':<44}{audio / pipeline_time:>10.2f}"
        f"{memory_time / pipeline_time:>9.2f}   (overhead {overhead:+.1%} vs in-memory; "
        "target ≤ 5%)"
    )


if __name__ == "__main__":
    main()
