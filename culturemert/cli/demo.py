"""``culturemert demo``: the offline end-to-end run shown in the README."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    """Register the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run the offline demo (no download, CPU)",
        description="Build a small seeded encoder in MERT's checkpoint layout, embed the shared "
        "recordings with it (all layers, 5 s windows), and plot per-layer track similarity.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    parser.add_argument("--audio", type=Path, default=None, help="folder of recordings")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table and figure path."""
    from culturemert.demo import find_shared_audio, run_demo

    audio = args.audio or find_shared_audio()
    if audio is None:
        print("no recordings found: pass --audio DIR (a folder of audio files)", file=sys.stderr)
        return 2
    result = run_demo(args.out, audio, seed=args.seed)
    print(f"\n{'track':<36} {'format':<6} {'windows':>7} {'‖features‖':>11}")
    for track, fmt, windows, norm in result["rows"]:
        print(f"{track:<36} {fmt:<6} {windows:>7} {norm:>11.2f}")
    report = result["report"]
    print(
        f"\n{report.done} embedded now, {report.skipped} reused, {len(report.failures)} failed; "
        f"encoder: {result['encoder']}\nfigure: {result['figure']}"
    )
    return 1 if report.failures else 0
