"""``culturemert convert CHECKPOINT.pt --out DIR``: a fairseq MERT checkpoint in our layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from culturemert.cli.options import add_set_option, overrides


def add_parser(subparsers) -> None:
    """Register the ``convert`` subcommand."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a fairseq MERT checkpoint (encoder and pre-training heads)",
        description="Read a fairseq checkpoint (MERT-v1-95M_fairseq.pt, MERT-v1-330M_fairseq.pt) "
        "without running any code it names, and write DIR in Hugging Face layout (config.json, "
        "model.safetensors, preprocessor_config.json) plus heads.safetensors, the pre-training "
        "heads that continual pre-training starts from (init: DIR in a recipe).",
    )
    parser.add_argument("checkpoint", type=Path, help="fairseq checkpoint (.pt)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--no-heads",
        dest="heads",
        action="store_const",
        const=False,
        default=None,
        help="write the encoder alone (settings key heads)",
    )
    parser.add_argument("--license", help="licence for the card, e.g. cc-by-nc-4.0 (MERT's)")
    parser.add_argument("--base-model", help="the Hub repo the checkpoint came from (for the card)")
    add_set_option(parser, "heads=false")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Convert, then say what was written."""
    from culturemert.config import ConfigError, config_from_dict
    from culturemert.model.checkpoint import EncoderLoadError
    from culturemert.model.fairseq import ConvertSettings, convert_fairseq_checkpoint

    try:
        settings = config_from_dict(
            ConvertSettings,
            {},
            overrides(
                {"heads": args.heads, "license": args.license, "base_model": args.base_model},
                args.overrides,
            ),
            where="convert settings",
        )
        if not args.checkpoint.is_file():
            raise EncoderLoadError(f"{args.checkpoint}: no such file")
        converted = convert_fairseq_checkpoint(args.checkpoint, args.out, settings)
    except (ConfigError, EncoderLoadError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return 2
    config = converted.encoder.module.config
    layout = "pre-LN" if config.do_stable_layer_norm else "post-LN"
    print(
        f"wrote {args.out}: {config.num_hidden_layers} layers × {config.hidden_size} ({layout}), "
        f"{converted.encoder.preprocessing.sample_rate} Hz"
    )
    heads = converted.heads
    if heads is not None:
        cqt = f", CQT head of {heads.cqt_bins} bins" if heads.cqt_bins else ""
        print(
            f"heads: {len(heads.codebook_sizes)} codebooks × {heads.codebook_sizes[0]} codes "
            f"into {heads.final_dim}-d embeddings{cqt}"
        )
    elif settings.heads:
        print("heads: none in this checkpoint (the encoder alone was written)")
    return 0
