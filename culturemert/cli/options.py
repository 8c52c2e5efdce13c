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


def overrides(flags: dict[str, Any], given: list[str]) -> list[str]:
    """``KEY=VALUE`` overrides for the flags that were given (not None), then ``--set``'s."""
    from_flags = [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    return from_flags + list(given)
