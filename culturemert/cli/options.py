"""Options every command shares: ``--set KEY=VALUE`` on its configuration, and flags as such."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """Register the repeatable ``--set KEY=VALUE`` override of the command's configuration."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a configuration value, e.g. {example} (repeatable; VALUE is YAML)",
    )


def add_logger_option(parser: argparse.ArgumentParser, where: str) -> None:
    """Register the repeatable ``--logger tensorboard|wandb`` (also a comma list)."""
    parser.add_argument(
        "--logger",
        dest="loggers",
        action="append",
        default=None,
        metavar="NAME",
        help=f"also log to tensorboard or wandb, under {where} (repeatable or a comma list; "
        "the CSV is always written)",
    )


def add_pipeline_options(parser: argparse.ArgumentParser, example: str) -> None:
    """Register what ``run`` and ``demo`` share: ``--force``, ``--jobs``, ``--quiet``, ``--set``."""
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STEP",
        help="redo STEP and every step that reads from it (repeatable)",
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="steps run at once (default: the pipeline's jobs)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_set_option(parser, example)


def overrides(flags: dict[str, Any], given: list[str]) -> list[str]:
    """``KEY=VALUE`` overrides for the flags that were given (not None), then ``--set``'s."""
    from_flags = [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    return from_flags + list(given)
