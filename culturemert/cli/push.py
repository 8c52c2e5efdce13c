"""``culturemert push``: upload an encoder folder and its card to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys

from culturemert.cli.options import add_set_option, overrides


def add_parser(subparsers) -> None:
    """Register the ``push`` subcommand."""
    parser = subparsers.add_parser(
        "push",
        help="upload an encoder folder (weights, config, card) to the Hugging Face Hub",
        description="Check that DIR loads (culturemert.model.load_encoder) and that its "
        "README.md card is valid (licence, library_name), create the model repository REPO_ID "
        "if needed, and upload the encoder files and the card; other files stay behind. "
        "Needs the network and a token with write access (`hf auth login` or HF_TOKEN).",
    )
    parser.add_argument("directory", metavar="DIR", help="encoder folder")
    parser.add_argument("repo_id", metavar="REPO_ID", help="e.g. my-org/my-encoder")
    parser.add_argument(
        "--private", action="store_true", default=None, help="create the repository private"
    )
    parser.add_argument("--revision", metavar="REV", help="branch to upload to (made if missing)")
    parser.add_argument("--message", metavar="TEXT", help="commit message")
    add_set_option(parser, "private=true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check the folder, upload it, print the commit."""
    from culturemert.config import ConfigError, config_from_dict
    from culturemert.model.hub import PushError, PushOptions, push_encoder

    flags = {"private": args.private, "revision": args.revision, "message": args.message}
    try:
        options = config_from_dict(
            PushOptions, {}, overrides(flags, args.overrides), where="push options"
        )
        pushed = push_encoder(args.directory, args.repo_id, options)
    except (ConfigError, PushError) as error:
        print(f"push: {error}", file=sys.stderr)
        return 2
    print(f"pushed {', '.join(pushed.files)} from {args.directory} to {pushed.url}")
    return 0
