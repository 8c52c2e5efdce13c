"""``culturemert card``: (re)write an encoder folder's model card, adding evaluation tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from culturemert.cli.options import add_set_option, overrides


def add_parser(subparsers) -> None:
    """Register the ``card`` subcommand."""
    parser = subparsers.add_parser(
        "card",
        help="(re)write an encoder folder's model card (README.md), with evaluation tables",
        description="Rewrite DIR's README.md card: its Hub metadata (licence, base model) and "
        "sections on how the encoder was made are kept; with --results, an Evaluation section "
        "holds the paper's two tables (ROC-AUC / mAP, micro-F1 / macro-F1) for those results. "
        "A folder without a card gets a fresh one.",
    )
    parser.add_argument("directory", metavar="DIR", help="encoder folder")
    parser.add_argument(
        "--results", nargs="+", default=[], metavar="RESULTS.json", help="culturemert evaluate's"
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="add the published MERT-v1-95M, CultureMERT-95M and CultureMERT-TA-95M rows",
    )
    parser.add_argument("--license", metavar="ID", help="set the licence (e.g. cc-by-nc-4.0)")
    parser.add_argument(
        "--base-model", dest="base_model", metavar="REPO_ID", help="set the Hub base model"
    )
    parser.add_argument("--out", metavar="FILE", help="where to write (default DIR/README.md)")
    add_set_option(parser, "license=cc-by-nc-4.0")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read the options and results, rewrite the card, say where it went."""
    from culturemert.atomic import write_text
    from culturemert.config import ConfigError, config_from_dict
    from culturemert.evaluate.report import card_section, load_paper_results
    from culturemert.evaluate.results import ResultsError, load_results
    from culturemert.model.card import CARD_FILE, CardError, CardOptions, revise_card

    flags = {"license": args.license, "base_model": args.base_model, "paper": args.paper or None}
    directory = Path(args.directory)
    try:
        options = config_from_dict(
            CardOptions, {}, overrides(flags, args.overrides), where="card options"
        )
        if not directory.is_dir():
            raise CardError(f"{directory}: no such folder (expected an encoder folder)")
        runs = [load_results(path) for path in args.results]
        if options.paper:
            runs = load_paper_results() + runs
        text = revise_card(
            directory,
            sections=[card_section(runs)] if runs else [],
            license=options.license,
            base_model=options.base_model,
        )
        out = write_text(args.out or directory / CARD_FILE, text)
    except (ConfigError, ResultsError, CardError, OSError) as error:
        print(f"card: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
