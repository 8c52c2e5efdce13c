"""``culturemert demo``: the CultureMERT experiment in miniature, offline on a CPU."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from culturemert.cli.options import add_pipeline_options


def add_parser(subparsers) -> None:
    """Register the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run the CultureMERT experiment in miniature (synthetic music, CPU, no download)",
        description="Run the shipped demo pipeline: a tiny encoder pre-trained on Western-like "
        "synthetic music; two-stage continual pre-training on four other synthetic traditions "
        "together and on each alone; a task-arithmetic merge with λ chosen on validation; "
        "probing of every encoder on every tradition's tags; an HTML report. Outputs are cached "
        "in OUT, so a second run only redoes what changed.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    parser.add_argument("--seed", type=int, default=None, help="pipeline seed (default: 0)")
    parser.add_argument(
        "--scale",
        choices=("small", "full"),
        default="small",
        help="small: the shipped demo (minutes); full: five pre-training replicas and twice the "
        "clips, for tighter intervals (25 minutes on 2 cores)",
    )
    add_pipeline_options(parser, "steps.corpus.clips_per_tradition=60")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; print what ran, the headline tables and the report's path."""
    from culturemert.cli.run import print_outcomes
    from culturemert.config import ConfigError
    from culturemert.demo import SCALES, run_demo
    from culturemert.evaluate.report import markdown_table, read_tables
    from culturemert.pipeline import StepError

    try:
        outcomes, report = run_demo(
            args.out,
            seed=args.seed,
            force=args.force,
            jobs=args.jobs,
            overrides=[*SCALES[args.scale], *args.overrides],
            progress=not args.quiet,
        )
    except (ConfigError, StepError) as error:  # pipeline errors are configuration errors
        print(f"culturemert demo: {error}", file=sys.stderr)
        return 1
    print_outcomes(outcomes)
    # The headline tables; the Markdown and HTML reports hold everything else.
    for title, rows in read_tables(report.parent).items():
        if title.startswith(("Claims", "ROC-AUC", "λ sweep")):
            print(f"\n{title}\n\n{markdown_table(rows)}")
    print(f"\nreport: {report}")
    return 0
