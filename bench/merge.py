"""Benchmark: `culturemert merge` against a plain in-memory torch merge, MERT-v1-95M size.

Five random fp32 safetensors checkpoints in MERT-v1-95M's layout (a base and four "adapted"
ones) are merged by task arithmetic (λ 0.2) and by TIES (density 0.2, whole-model trim, λ 1).
Every run is its own process, started cold, so wall time includes start-up and peak resident
memory (ru_maxrss from wait4) belongs to that run alone. The baseline loads all five state dicts
with safetensors and applies the same formula in memory (TIES threshold by torch.kthvalue over
each whole task vector).

    .venv/bin/python bench/merge.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine_line
from safetensors.torch import load_file, save_file

from culturemert.model import hubert_config_from_dict, mert_config_dict

BASELINE = r"""
import sys, torch
from safetensors.torch import load_file, save_file
method, out, *paths = sys.argv[1:]
G, V = (f"encoder.pos_conv_embed.conv.parametrizations.weight.original{i}" for i in (0, 1))
states = [load_file(p) for p in paths]
for state in states:  # the positional conv as its effective weight, as culturemert merges it
    state["conv"] = torch._weight_norm(state.pop(V), state.pop(G), 2)
base, *models = states
names = [n for n in base if n != "masked_spec_embed"]  # that one stays the base's
merged = {"masked_spec_embed": base["masked_spec_embed"]}
if method == "task_arithmetic":
    for name in names:
        merged[name] = base[name] + 0.2 * sum(m[name] - base[name] for m in models)
else:
    thresholds = []
    for m in models if method == "ties" else []:
        flat = torch.cat([(m[n] - base[n]).reshape(-1) for n in names]).abs_()
        k = round(0.2 * flat.numel())
        thresholds.append(torch.kthvalue(flat, flat.numel() - k + 1).values)
        del flat
    for name in names:
        tensor = base[name]
        taus = torch.stack([m[name] - tensor for m in models])
        if method == "ties-tensor":
            flat = taus.reshape(len(models), -1).abs()
            k = max(1, round(0.2 * flat.shape[1]))
            thresholds = torch.kthvalue(flat, flat.shape[1] - k + 1, dim=1).values
        taus *= taus.abs() >= torch.stack(list(thresholds)).reshape(-1, *[1] * tensor.dim())
        sign = taus.sum(0).sign()
        agree = (taus * sign) > 0
        mean = (taus * agree).sum(0) / agree.sum(0).clamp(min=1)
        merged[name] = tensor + mean
conv = merged.pop("conv")
merged[G], merged[V] = torch.norm_except_dim(conv, 2, 2), conv
save_file(merged, out)
"""


def make_checkpoints(root: Path) -> list[Path]:
    """Base + four models in MERT-v1-95M's config, random weights, fp32 safetensors."""
    from transformers import HubertModel

    raw = mert_config_dict()
    with torch.device("meta"):
        shapes = {
            k: v.shape for k, v in HubertModel(hubert_config_from_dict(raw)).state_dict().items()
        }
    generator = torch.Generator().manual_seed(0)
    base = {name: 0.05 * torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    directories = []
    for i in range(5):
        directory = root / ("base" if i == 0 else f"model{i}")
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(raw))
        state = (
            base
            if i == 0
            else {
                name: t + 0.002 * torch.randn(t.shape, generator=generator)
                for name, t in base.items()
            }
        )
        save_file(
            {k: v.abs() if k.endswith("original0") else v for k, v in state.items()},
            directory / "model.safetensors",
        )
        directories.append(directory)
    return directories


def timed_run(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (GB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"failed: {' '.join(command)}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", help="reuse/keep the checkpoints in this directory")
    args = parser.parse_args()
    print(machine_line(), f"load average {os.getloadavg()[0]:.1f}")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="merge-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "model4" / "model.safetensors").is_file():
        print("writing five 95M-parameter checkpoints ...", flush=True)
        for child in root.iterdir():
            subprocess.run(["rm", "-rf", str(child)], check=True)
        directories = make_checkpoints(root)
    else:
        directories = [root / "base"] + [root / f"model{i}" for i in range(1, 5)]
    weights = [str(d / "model.safetensors") for d in directories]
    python = sys.executable
    rows = []
    for method, label, extra in (
        ("task_arithmetic", "task arithmetic", ["--lambda", "0.2"]),
        ("ties", "TIES (global trim)", ["--lambda", "1", "--density", "0.2"]),
        ("ties-tensor", "TIES (per-tensor trim)", ["--lambda", "1", "--scope", "tensor"]),
    ):
        ours_out = root / f"out-{method}"
        ours = [str(Path(python).parent / "culturemert"), "merge", "--base", str(directories[0])]
        ours += ["--models", *map(str, directories[1:]), "--method", method.split("-")[0], *extra]
        ours += ["--out", str(ours_out), "--quiet"]
        plain_out = root / f"plain-{method}.safetensors"
        plain = [python, "-c", BASELINE, method, str(plain_out), *weights]
        ours_run, plain_run = timed_run(ours), timed_run(plain)
        a, b = load_file(ours_out / "model.safetensors"), load_file(plain_out)
        difference = max((a[n] - b[n]).abs().max().item() for n in b)
        rows.append((label, ours_run, plain_run, difference))
    print(f"\n{'wall s / CPU s / peak RSS GB':28} {'culturemert merge':>22} {'plain torch':>22}")
    for label, ours_run, plain_run, _ in rows:
        ours_text = "{:6.1f} {:6.1f} {:6.2f}".format(*ours_run)
        plain_text = "{:6.1f} {:6.1f} {:6.2f}".format(*plain_run)
        print(f"{label:28} {ours_text:>22} {plain_text:>22}")
    print("\nratios (plain torch ÷ culturemert merge; > 1 means culturemert is better):")
    for label, ours_run, plain_run, difference in rows:
        wall, cpu, memory = (p / o for p, o in zip(plain_run, ours_run, strict=True))
        print(
            f"{label:28} wall {wall:4.2f}×  CPU {cpu:4.2f}×  memory {memory:4.1f}×  "
            f"max |Δ| between outputs {difference:.1e}"
        )
    print("targets (2 cores): task arithmetic ≤ 4 s and ≤ 1 GB, TIES ≤ 10 s")


if __name__ == "__main__":
    main()
