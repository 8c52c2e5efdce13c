"""``culturemert report``: compare evaluation runs (and the paper's numbers) as Markdown and HTML."""

from __future__ import annotations

import argparse
import sys

from culturemert.cli.options import add_set_option, overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report`` and its arguments."""
    parser = subparsers.add_parser(
        "report",
        help="compare evaluation results side by side (Markdown tables, HTML page with plots)",
        description=(
            "Print the paper's two tables (ROC-AUC / mAP and micro-F1 / macro-F1 per dataset, "
            "models as rows) for the given results files, and write report.md and a "
            "self-contained report.html (heatmap, per-family bars) into --out."
        ),
    )
    parser.add_argument("results", nargs="*", metavar="RESULTS.json", help="results files")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="add the published MERT-v1-95M, CultureMERT-95M and CultureMERT-TA-95M rows",
    )
    parser.add_argument("--title", help="the page's title (default: culturemert evaluation report)")
    parser.add_argument("--intro", help="a paragraph under the title")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the report")
    add_set_option(parser, "'title=Makam adaptation'")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the runs, print the Markdown tables, write the report files."""
    from culturemert.config import ConfigError, config_from_dict
    from culturemert.evaluate.report import ReportOptions, load_paper_results, write_report
    from culturemert.evaluate.results import ResultsError, load_results

    flags = {"paper": args.paper or None, "title": args.title, "intro": args.intro}
    try:
        options = config_from_dict(
            ReportOptions, {}, overrides(flags, args.overrides), where="report options"
        )
    except ConfigError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    if not args.results and not options.paper:
        print("report: give at least one RESULTS.json, or --paper", file=sys.stderr)
        return 2
    try:
        runs = [load_results(path) for path in args.results]
    except ResultsError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    if options.paper:
        runs = load_paper_results() + runs
    markdown, page = write_report(runs, args.out, title=options.title, intro=options.intro)
    print(markdown.read_text(encoding="utf-8"))
    print(f"wrote {markdown} and {page}")
    return 0
