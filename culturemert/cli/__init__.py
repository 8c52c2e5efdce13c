"""The ``culturemert`` command: parse, call the library, print.

Each subcommand lives in its own module here with an ``add_parser(subparsers)`` function that
registers its arguments and sets ``run=callable(args) -> int``. Modules import the library
lazily inside ``run`` so that ``culturemert --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from culturemert import __version__

COMMANDS = [
    "demo",
    "run",
    "synth",
    "extract",
    "targets",
    "pretrain",
    "convert",
    "merge",
    "evaluate",
    "report",
    "card",
    "push",
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="culturemert",
        description="Embed, adapt, merge and evaluate music encoders across musical traditions.",
    )
    parser.add_argument("--version", action="version", version=f"culturemert {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"culturemert.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``culturemert`` console script."""
    args = build_parser().parse_args(argv)
    # Our own progress bars say what is happening; the Hub's per-file bars only add noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
