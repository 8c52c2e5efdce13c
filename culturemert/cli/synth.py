"""``culturemert synth --out DIR``: write a synthetic world-music corpus with manifests."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from culturemert.cli.options import add_set_option, overrides


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers") from None


def add_parser(subparsers) -> None:
    """Register the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a labelled synthetic world-music corpus (audio + manifests)",
        description="Synthesise clips of Western-, makam-, Hindustani-, Carnatic- and "
        "Greek-folk-like music with tags (mode/makam/raga, metre/usul/tala, instruments, tempo). "
        "Writes OUT/<tradition>/*.flac, OUT/<tradition>.jsonl, OUT/all.jsonl and "
        "OUT/details.jsonl. The same seed gives the same corpus.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--traditions",
        type=_names,
        default=None,
        help="comma-separated, from western,makam,hindustani,carnatic,greek-folk (default: all)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--hours", type=float, help="total corpus length, shared evenly (default 0.1)"
    )
    size.add_argument("--clips-per-tradition", type=int, help="clips per tradition")
    parser.add_argument("--clip-seconds", type=float, help="clip length (default 5)")
    parser.add_argument("--seed", type=int, help="corpus seed (default 0)")
    parser.add_argument(
        "--splits", type=_fractions, help="train,valid,test fractions (default 0.7,0.1,0.2)"
    )
    parser.add_argument("--format", choices=["flac", "wav"], help="audio format (default flac)")
    add_set_option(parser, "clip_seconds=10")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Generate the corpus and print a table of what was written."""
    from culturemert.config import config_from_dict
    from culturemert.manifest import read_manifest
    from culturemert.synth import write_corpus
    from culturemert.synth.corpus import CorpusSettings

    flags = {
        "traditions": args.traditions,
        "hours": args.hours,
        "clips_per_tradition": args.clips_per_tradition,
        "clip_seconds": args.clip_seconds,
        "seed": args.seed,
        "splits": args.splits,
        "audio_format": args.format,
    }
    try:
        settings = config_from_dict(
            CorpusSettings, {}, overrides(flags, args.overrides), where="synth settings"
        )
        if settings.hours is None and settings.clips_per_tradition is None:
            settings.hours = 0.1
        manifests = write_corpus(args.out, **asdict(settings))
    except ValueError as error:  # ConfigError included
        print(f"culturemert synth: {error}", file=sys.stderr)
        return 2
    print(
        f"{'tradition':<12} {'clips':>6} {'minutes':>8} {'train':>6} {'valid':>6} {'test':>6}  manifest"
    )
    for name, path in manifests.items():
        tracks = read_manifest(path)
        splits = [t.split for t in tracks]
        minutes = sum(t.duration or 0.0 for t in tracks) / 60
        print(
            f"{name:<12} {len(tracks):>6} {minutes:>8.1f} {splits.count('train'):>6} "
            f"{splits.count('valid'):>6} {splits.count('test'):>6}  {path}"
        )
    return 0
