"""The GPU check: extraction, probe selection, a pre-training step and device parity, one table.

On a machine with a CUDA GPU (under 8 minutes on one H200):

    python bench/gpu.py

measures, all on that GPU and in the same run:

- extraction: ``extract_corpus`` in steady state (fp32 and bf16) against the MERT model card's
  loop and the bare forward on the same GPU, and against the FLOP ceiling at the GPU's
  measured matmul rate (a MERT-v1-95M-size encoder, random weights, 30 s clips);
- the full probe selection (13 layers + the weighting × 6 learning rates × 5 seeds = 420 MLP
  probes, 5,000 tracks, up to 100 epochs) against one training run per configuration
  (target ≥ 30×);
- one MERT-95M pre-training step (bf16-mixed, the full objective) against the FLOP ceiling;
- parity with the CPU: features, probe validation scores and one training step's losses
  computed on both, with their tolerances. CUDA code is correct only once these pass.

``python bench/gpu.py --device cpu --quick`` runs the same code on the CPU with small sizes,
comparing the CPU with itself (the test suite runs it, so the script keeps working). The exit
status is 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported
from transformers import HubertModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    best_time,
    encoder_forward_flops,
    machine_line,
    matmul_rate,
    synchronize,
)
from extract import measure_extraction, write_clips  # noqa: E402
from probe import synthetic_splits, timed_naive_runs  # noqa: E402

from culturemert.devices import default_batch_size, device_name  # noqa: E402
from culturemert.evaluate.probes import ProbeSpec, train_probes  # noqa: E402
from culturemert.evaluate.selection import (  # noqa: E402
    probe_grid,
    select_probe,
)
from culturemert.evaluate.settings import ProbeSettings, SelectionConfig  # noqa: E402
from culturemert.extract import ExtractSettings, collect_inputs, extract_corpus  # noqa: E402
from culturemert.model import (  # noqa: E402
    hubert_config_from_dict,
    load_encoder,
    mert_config_dict,
    save_encoder,
)
from culturemert.pretrain.loop import make_fabric, make_optimizer  # noqa: E402
from culturemert.pretrain.objective import ObjectiveConfig, PretrainingObjective  # noqa: E402
from culturemert.pretrain.recipe import EngineConfig, OptimizerConfig  # noqa: E402

SMALL_ENCODER = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
# Tolerances of the parity checks. Features: cuDNN runs fp32 convolutions in TF32 by default
# (PyTorch's setting on Ampere and later), which moves the front end's output by ~1e-4.
FEATURE_TOLERANCE = 2e-3  # relative L2 error per layer
SCORE_TOLERANCE = 1e-3  # validation macro ROC-AUC, absolute
LOSS_TOLERANCE = 1e-3  # relative
MATMUL = {"cuda": (8192, 20), "cpu": (1024, 10)}  # size and repeats of the rate measurement


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is."""

    encoder: dict
    clips: int  # N: extraction is rated on N clips (2N are written)
    clip_seconds: float
    tracks: int
    layers: int
    dims: int
    tags: int
    learning_rates: tuple[float, ...]
    seeds: int
    max_epochs: int
    naive_configs: int
    crops: int
    crop_seconds: float
    parity_clip_seconds: float


FULL = Sizes(
    encoder={},
    clips=64,
    clip_seconds=30.0,
    tracks=5000,
    layers=13,
    dims=768,
    tags=30,
    learning_rates=(5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2),
    seeds=5,
    max_epochs=100,
    naive_configs=4,
    crops=16,
    crop_seconds=5.0,
    parity_clip_seconds=10.0,
)
QUICK = Sizes(
    encoder=SMALL_ENCODER,
    clips=3,
    clip_seconds=2.0,
    tracks=400,
    layers=3,
    dims=32,
    tags=8,
    learning_rates=(1e-3, 1e-2),
    seeds=2,
    max_epochs=3,
    naive_configs=2,
    crops=2,
    crop_seconds=1.0,
    parity_clip_seconds=1.5,
)


@dataclass
class Row:
    """One line of the table."""

    check: str
    measured: str
    reference: str
    ratio: str
    target: str = ""
    passed: bool | None = None  # None: a measurement without a pass/fail target

    def cells(self, judged: bool = True) -> list[str]:
        """The row's cells; speed targets are not judged at --quick sizes."""
        verdict = {None: "", True: "pass", False: "FAIL"}[self.passed]
        if not judged and not self.check.startswith("parity"):
            verdict = "(quick)" if self.passed is not None else ""
        return [self.check, self.measured, self.reference, self.ratio, self.target, verdict]


def extraction_rows(sizes: Sizes, device: torch.device, workers: int, tmp: Path) -> list[Row]:
    """extract_corpus (fp32, bf16) against the model-card loop, the bare forward and FLOPs."""
    config = hubert_config_from_dict(mert_config_dict(**sizes.encoder))
    model_dir = save_encoder(HubertModel(config), tmp / "encoder")
    times = measure_extraction(
        model_dir,
        ["float32", "bfloat16"],
        sizes.clips,
        sizes.clip_seconds,
        device=device,
        batch_size=default_batch_size(device, sizes.clip_seconds),
        workers=workers,
        rounds=1,
        tmp=tmp,
    )
    audio = sizes.clips * sizes.clip_seconds
    flops = encoder_forward_flops(config, int(sizes.clip_seconds * 24000)) * sizes.clips
    card = times.model_card
    rows = []
    for dtype, torch_dtype, short in (
        ("float32", torch.float32, "fp32"),
        ("bfloat16", torch.bfloat16, "bf16"),
    ):
        steady, forward = times.steady[dtype], times.forward[dtype]
        if steady <= 0:  # start-up outweighs the clips (--quick): nothing to rate
            rows.append(Row(f"extract {short}", "n/a", "clips too short to rate", ""))
            continue
        ceiling = audio / (flops / matmul_rate(*MATMUL[device.type], device, torch_dtype))
        fp32 = dtype == "float32"
        rows += [
            Row(
                f"extract {short}, audio-s/s",
                f"{audio / steady:.0f}",
                f"model-card loop fp32 {audio / card:.0f}",
                f"{card / steady:.2f}×",
                "≥ 1× (fp32)" if fp32 else "",
                card / steady >= 1 if fp32 else None,
            ),
            Row(
                f"extract {short} / bare forward",
                f"{audio / steady:.0f}",
                f"bare forward {audio / forward:.0f}",
                f"{forward / steady:.2f}",
                "≥ 0.95",
                forward / steady >= 0.95,
            ),
            Row(
                f"extract {short}: its time in the encoder",
                f"{times.in_model[dtype]:.1%}",
                "the same run's wall time",
                "",
                "≥ 95%",
                times.in_model[dtype] >= 0.95,
            ),
            Row(
                f"extract {short} / FLOP ceiling",
                f"{audio / steady:.0f}",
                f"ceiling {ceiling:.0f}",
                f"{audio / steady / ceiling:.0%}",
            ),
        ]
    return rows


def probe_rows(sizes: Sizes, device: torch.device) -> list[Row]:
    """The full selection batched against one training run per configuration."""
    train, valid, test = synthetic_splits(sizes.tracks, sizes.tags, sizes.layers, sizes.dims)
    settings = ProbeSettings(max_epochs=sizes.max_epochs)
    config = SelectionConfig(
        kinds=("mlp",), learning_rates=sizes.learning_rates, seeds=sizes.seeds, probe=settings
    )
    grid = probe_grid(config, sizes.layers)
    sample = random.Random(0).sample(grid, min(sizes.naive_configs, len(grid)))
    half = len(sample) // 2
    _, before = timed_naive_runs(sample[:half], train, valid, settings, device)
    synchronize(device)
    start = time.perf_counter()
    select_probe(train, valid, test, config, device=device, progress=False)
    synchronize(device)
    batched = time.perf_counter() - start
    _, after = timed_naive_runs(sample[half:], train, valid, settings, device)
    naive = (before + after) / len(sample) * len(grid)
    return [
        Row(
            f"probe selection, {len(grid)} probes × {sizes.tracks} tracks",
            f"{batched:.1f} s",
            f"one run per config {naive:.0f} s",
            f"{naive / batched:.1f}×",
            "≥ 30×",
            naive / batched >= 30,
        )
    ]


def pretraining_batch(
    sizes: Sizes, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tone-and-noise 5 s crops and random 8 × 1024 codes at 75 Hz."""
    samples = int(sizes.crop_seconds * 24000)
    t = torch.arange(samples) / 24000
    tones = torch.stack(
        [0.2 * torch.sin(2 * np.pi * 110 * (i + 1) * t) for i in range(sizes.crops)]
    )
    waveforms = tones + 0.02 * torch.randn(tones.shape, generator=generator)
    codes = torch.randint(0, 1024, (sizes.crops, 8, samples // 320 + 1), generator=generator)
    return waveforms, codes


def objective_for(sizes: Sizes, seed: int = 0) -> PretrainingObjective:
    """MERT's objective (8 codebooks, CQT head) on a freshly initialised encoder."""
    torch.manual_seed(seed)
    config = hubert_config_from_dict(mert_config_dict(**sizes.encoder))
    return PretrainingObjective(HubertModel(config), ObjectiveConfig([1024] * 8))


def pretraining_rows(sizes: Sizes, device: torch.device) -> list[Row]:
    """Updates per second of the training step the loop runs, against the FLOP ceiling."""
    precision = "bf16-mixed" if device.type == "cuda" else "32"
    fabric = make_fabric(EngineConfig(accelerator=device.type, devices=1, precision=precision))
    objective = objective_for(sizes).train()
    optimizer = make_optimizer(list(objective.parameters()), OptimizerConfig(), lr=1e-5)
    model, optimizer = fabric.setup(objective, optimizer)
    generator = torch.Generator().manual_seed(0)
    waveforms, codes = (x.to(fabric.device) for x in pretraining_batch(sizes, generator))

    def step() -> None:
        output = model(waveforms, codes, generator=generator)
        fabric.backward(output.loss)
        fabric.clip_gradients(model, optimizer, max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    steps = 3
    seconds = best_time(lambda: [step() for _ in range(steps)], 1, fabric.device) / steps
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    rate = matmul_rate(*MATMUL[device.type], fabric.device, dtype)
    samples = int(sizes.crop_seconds * 24000)
    flops = 3 * encoder_forward_flops(objective.encoder.config, samples) * sizes.crops
    audio = sizes.crops * sizes.crop_seconds
    return [
        Row(
            f"pre-training step ({precision}), audio-s/s",
            f"{audio / seconds:.1f}",
            f"ceiling {audio / (flops / rate):.1f}",
            f"{flops / rate / seconds:.0%}",
        )
    ]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖ in float64."""
    got, want = got.double().cpu(), want.double().cpu()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def parity_rows(sizes: Sizes, device: torch.device, tmp: Path) -> list[Row]:
    """Features, probe scores and one training step's losses on ``device`` against the CPU."""
    cpu = torch.device("cpu")
    config = hubert_config_from_dict(mert_config_dict(**sizes.encoder))
    model_dir = save_encoder(HubertModel(config), tmp / "parity-encoder")
    clips = write_clips(tmp / "parity-clips", 2, sizes.parity_clip_seconds)
    features = {}
    for where in (cpu, device):
        encoder = load_encoder(model_dir, device=where)
        out = tmp / f"parity-{where.type}"
        items = collect_inputs(tmp / "parity-clips")
        extract_corpus(
            encoder, items, out, settings=ExtractSettings(), num_workers=0, progress=False
        )
        features[where.type] = [
            torch.from_numpy(np.load(out / "features" / f"{c.stem}.npy")) for c in clips
        ]
    feature_error = max(
        relative_error(got[layer], want[layer])
        for got, want in zip(features[device.type], features["cpu"], strict=True)
        for layer in range(len(want))
    )

    train, valid, _ = synthetic_splits(1500 if sizes is FULL else 300, 10, 4, 64, seed=1)
    score_gap = 0.0
    for kind in ("mlp", "linear"):  # dropout on for the MLP
        settings = ProbeSettings(kind, hidden=64, max_epochs=20 if sizes is FULL else 4)
        specs = [
            ProbeSpec(layer, lr, seed)
            for layer in (1, 3, -1)
            for lr in (1e-3, 1e-2)
            for seed in (0, 1)
        ]
        scores = [
            train_probes(specs, train, valid, settings, device=where, progress=False).best_score
            for where in (cpu, device)
        ]
        score_gap = max(score_gap, float(np.abs(scores[0] - scores[1]).max()))

    losses = {}
    reference = objective_for(sizes, seed=1).eval()  # eval: no dropout, no noise mixing
    generator = torch.Generator().manual_seed(1)
    waveforms, codes = pretraining_batch(replace(sizes, crops=2), generator)
    mask = reference.draw_mask(2, reference.frame_count(waveforms.shape[1]), generator)
    for where in (cpu, device):
        objective = copy.deepcopy(reference).to(where)
        optimizer = make_optimizer(list(objective.parameters()), OptimizerConfig(), lr=1e-4)
        batch = (waveforms.to(where), codes.to(where))
        first = objective(*batch, mask=mask).loss
        first.backward()
        optimizer.step()
        with torch.no_grad():
            second = objective(*batch, mask=mask).loss
        losses[where.type] = torch.stack([first.detach(), second]).cpu()
    loss_error = float(((losses[device.type] - losses["cpu"]).abs() / losses["cpu"].abs()).max())

    other = device.type.upper() if device.type != "cpu" else "CPU (itself)"
    return [
        Row(
            f"parity: features, {other} vs CPU",
            f"{feature_error:.1e}",
            "relative L2 per layer",
            "",
            f"≤ {FEATURE_TOLERANCE:g}",
            feature_error <= FEATURE_TOLERANCE,
        ),
        Row(
            f"parity: probe validation ROC-AUC, {other} vs CPU",
            f"{score_gap:.1e}",
            "max abs difference, MLP and linear",
            "",
            f"≤ {SCORE_TOLERANCE:g}",
            score_gap <= SCORE_TOLERANCE,
        ),
        Row(
            f"parity: training step losses, {other} vs CPU",
            f"{loss_error:.1e}",
            "relative, before and after one AdamW step",
            "",
            f"≤ {LOSS_TOLERANCE:g}",
            loss_error <= LOSS_TOLERANCE,
        ),
    ]


def print_table(rows: list[Row], judged: bool) -> None:
    """The rows as a Markdown table (speed targets unjudged unless ``judged``)."""
    header = ["check", "measured", "against", "ratio", "target", ""]
    cells = [header] + [row.cells(judged) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    for number, line in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print the table; 1 when a parity check fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the device to check (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds on a CPU)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU here; try --device cpu --quick", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    workers = args.workers if args.workers is not None else (0 if args.quick else 8)
    print(machine_line("cpu"))
    if device.type == "cuda":
        print(f"device: {device_name(device)}")
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for part in (
            lambda: extraction_rows(sizes, device, workers, tmp),
            lambda: probe_rows(sizes, device),
            lambda: pretraining_rows(sizes, device),
            lambda: parity_rows(sizes, device, tmp),
        ):
            rows += part()
            print(f"  ... {rows[-1].check}: {time.perf_counter() - started:.0f} s", flush=True)
    print()
    print_table(rows, judged=not args.quick)
    if args.quick:
        print("(quick: sizes too small for the speed targets; parity is judged)")
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    parity = [row for row in rows if row.check.startswith("parity")]
    return 0 if all(row.passed for row in parity) else 1


if __name__ == "__main__":
    sys.exit(main())
