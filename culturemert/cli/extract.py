"""``culturemert extract MODEL INPUT --out DIR``: embed a folder or a manifest of audio."""

from __future__ import annotations

import argparse
import sys

from culturemert.cli.options import add_set_option


def _layers(text: str):
    return "all" if text == "all" else [int(part) for part in text.split(",")]


def _window(text: str) -> float | None:
    value = float(text)
    return None if value <= 0 else value


def add_parser(subparsers) -> None:
    """Register the ``extract`` subcommand."""
    parser = subparsers.add_parser(
        "extract",
        help="embed audio with an encoder (all layers, pooled over time per window, or frames)",
        description="Embed every track of a folder (recursively) or a CSV/JSONL manifest with a "
        "path column. Writes OUT/features/<track>.npy, OUT/index.jsonl and OUT/failures.tsv; "
        "re-running skips finished tracks. Under torchrun each rank takes its share.",
    )
    parser.add_argument("model", help="Hugging Face-layout directory or hub id")
    parser.add_argument("input", help="folder of audio files, or a .jsonl/.csv/.tsv manifest")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--layers", type=_layers, default="all", help="'all' or e.g. 4,8,12")
    parser.add_argument(
        "--pool",
        choices=["mean", "max", "mean+std", "none"],
        default="mean",
        help="pooling over each window's frames; 'none' keeps every frame ([layers, frames, "
        "dims], 75 per second) and writes their times to OUT/timestamps/<track>.npy",
    )
    parser.add_argument(
        "--window-seconds",
        type=_window,
        default=30.0,
        help="window length; features are [layers, windows, dims]. 0 embeds each track whole "
        "([layers, dims]; attention cost grows with the square of the length). "
        "Default: %(default)s, the evaluation protocol's window",
    )
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
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="windows per forward pass (default: about 30 s of audio on a CPU, 16 on a GPU)",
    )
    add_set_option(parser, "max_seconds=60")
    parser.set_defaults(run=run)


def whole_track_warning(paths, limit: float) -> str | None:
    """A warning naming how many tracks are longer than ``limit`` seconds, or None."""
    from culturemert.audio import audio_duration

    durations = [audio_duration(path) for path in paths]
    long = [d for d in durations if d > limit]
    if not long:
        return None
    return (
        f"warning: {len(long)} track(s) longer than {limit:g} s (longest {max(long):.0f} s) "
        "are embedded whole: attention cost and memory grow with the square of the length, "
        f"far beyond MERT's 5 s training crops. --window-seconds {limit:g} embeds them in windows."
    )


def extract_settings(args: argparse.Namespace):
    """The :class:`ExtractSettings` of the flags and ``--set`` (rate and normalisation: the
    checkpoint's, unless set), and whether normalisation was set."""
    from culturemert.config import ConfigError, apply_override, config_from_dict
    from culturemert.extract import ExtractSettings

    raw = {
        "dtype": args.dtype,
        "layers": args.layers,
        "pool": args.pool,
        "window_seconds": args.window_seconds,
        "drop_last": args.drop_last,
    }
    if args.normalize is not None:
        raw["normalize"] = args.normalize
    try:
        for override in args.overrides:
            apply_override(raw, override)
    except ConfigError as error:
        raise ConfigError(f"extract settings: {error}") from None
    return config_from_dict(ExtractSettings, raw, where="extract settings"), "normalize" in raw


def run(args: argparse.Namespace) -> int:
    """Load the encoder, embed this rank's share, and report failures."""
    from dataclasses import replace

    from culturemert.devices import distributed_position, resolve_device, slow_dtype_warning
    from culturemert.extract import WINDOW_SECONDS, collect_inputs, extract_corpus
    from culturemert.model import EncoderLoadError, open_encoder

    rank, world_size, _ = distributed_position()
    try:
        settings, normalize_set = extract_settings(args)
        items = collect_inputs(args.input)
        device = resolve_device(args.device)
    except (OSError, ValueError) as error:
        print(f"extract: {error}", file=sys.stderr)
        return 2
    if not items:
        print(f"{args.input}: no audio files found", file=sys.stderr)
        return 1
    if settings.window_seconds is None and rank == 0:
        warning = whole_track_warning([path for _, path in items], WINDOW_SECONDS)
        if warning:
            print(warning, file=sys.stderr)
    if warning := slow_dtype_warning(device, settings.dtype):
        print(warning, file=sys.stderr)
    try:
        encoder = open_encoder(
            args.model,
            attn_implementation=args.attn_implementation,
            dtype=settings.dtype,
            device=device,
        )
    except EncoderLoadError as error:
        print(f"extract: {error}", file=sys.stderr)
        return 2
    preprocessing = encoder.preprocessing
    settings = replace(
        settings,
        sample_rate=preprocessing.sample_rate,
        normalize=settings.normalize if normalize_set else preprocessing.do_normalize,
    )
    try:
        report = extract_corpus(
            encoder,
            items,
            args.out,
            settings=settings,
            model=str(args.model),
            num_workers=args.workers,
            rank=rank,
            world_size=world_size,
            batch_size=args.batch_size,
        )
    except ValueError as error:  # clashing track ids, other settings in --out
        print(f"extract: {error}", file=sys.stderr)
        return 2
    print(
        f"embedded {report.done} tracks ({report.audio_seconds:.1f} s of audio), "
        f"skipped {report.skipped} already done, {len(report.failures)} failed"
    )
    for path, reason in report.failures[:10]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return 1 if report.failures else 0
