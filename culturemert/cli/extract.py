"""``culturemert extract MODEL INPUT --out DIR``: embed a folder or a manifest of audio."""

from __future__ import annotations

import argparse
import sys


def _layers(text: str):
    return "all" if text == "all" else [int(part) for part in text.split(",")]


def add_parser(subparsers) -> None:
    """Register the ``extract`` subcommand."""
    parser = subparsers.add_parser(
        "extract",
        help="embed audio with an encoder (all layers, pooled over time)",
        description="Embed every track of a folder (recursively) or a CSV/JSONL manifest with a "
        "path column. Writes OUT/features/<track>.npy, OUT/index.jsonl and OUT/failures.tsv; "
        "re-running skips finished tracks. Under torchrun each rank takes its share.",
    )
    parser.add_argument("model", help="Hugging Face-layout directory or hub id")
    parser.add_argument("input", help="folder of audio files, or a .jsonl/.csv/.tsv manifest")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--layers", type=_layers, default="all", help="'all' or e.g. 4,8,12")
    parser.add_argument("--pool", choices=["mean", "max", "mean+std"], default="mean")
    parser.add_argument("--window-seconds", type=float, default=None)
    parser.add_argument("--drop-last", action="store_true", help="drop a last partial window")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--device", default=None, help="default: this rank's GPU, else CPU")
    parser.add_argument("--attn-implementation", choices=["sdpa", "eager"], default=None)
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="zero-mean/unit-variance input (default: the checkpoint's preprocessor config)",
    )
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the encoder, embed this rank's share, and report failures."""
    import torch

    from culturemert.extract import (
        ExtractSettings,
        collect_inputs,
        cpu_has_native_bfloat16,
        default_device,
        distributed_position,
        extract_corpus,
        preprocessing_settings,
    )
    from culturemert.model import load_encoder

    rank, world_size, local_rank = distributed_position()
    items = collect_inputs(args.input)
    if not items:
        print(f"{args.input}: no audio files found", file=sys.stderr)
        return 1
    device = torch.device(args.device) if args.device else default_device(local_rank)
    if device.type == "cpu" and args.dtype != "float32" and not cpu_has_native_bfloat16():
        print(
            f"warning: this CPU has no native {args.dtype} arithmetic; expect it to run several "
            "times slower than float32",
            file=sys.stderr,
        )
    encoder = load_encoder(
        args.model,
        attn_implementation=args.attn_implementation,
        dtype=getattr(torch, args.dtype),
        device=device,
    )
    sample_rate, normalize = preprocessing_settings(encoder, args.normalize)
    settings = ExtractSettings(
        model=str(args.model),
        dtype=args.dtype,
        layers=args.layers,
        pool=args.pool,
        window_seconds=args.window_seconds,
        drop_last=args.drop_last,
        normalize=normalize,
        sample_rate=sample_rate,
    )
    report = extract_corpus(
        encoder,
        items,
        args.out,
        settings=settings,
        num_workers=args.workers,
        rank=rank,
        world_size=world_size,
        batch_size=args.batch_size,
    )
    print(
        f"embedded {report.done} tracks ({report.audio_seconds:.1f} s of audio), "
        f"skipped {report.skipped} already done, {len(report.failures)} failed"
    )
    for path, reason in report.failures[:10]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return 1 if report.failures else 0
