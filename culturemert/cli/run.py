"""``culturemert run PIPELINE.yaml``: run a declared pipeline, redoing only what changed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from culturemert.cli.options import add_pipeline_options


def add_parser(subparsers) -> None:
    """Register the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="run a pipeline of steps (synth, targets, pretrain, merge, evaluate, report)",
        description="Run the steps of a pipeline YAML file in dependency order. Each step's "
        "output goes to OUT/<step>/ and is kept while its settings, its inputs and the library "
        "version stay the same, so a re-run only redoes what changed. A step reads another's "
        "output through '@step' (its main product) or '@step/relative/path'.",
        epilog="step kinds: synth, targets (k-means teacher), encoder (random init), pretrain, "
        "merge (with a λ sweep), evaluate (probing), report\n\n"
        "examples:\n"
        "  culturemert run culturemert/recipes/demo.yaml --out runs/demo\n"
        "  culturemert run my-pipeline.yaml --force merged   # redo 'merged' and what reads it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pipeline", type=Path, help="pipeline YAML file")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<pipeline name>)")
    add_pipeline_options(parser, "steps.corpus.clips_per_tradition=30")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the pipeline, run it, print what ran and where each product is."""
    from culturemert.config import ConfigError
    from culturemert.pipeline import StepError, load_pipeline, run_pipeline
    from culturemert.pipeline.steps import STEP_KINDS

    out = args.out or Path("runs") / args.pipeline.stem
    try:
        pipeline = load_pipeline(args.pipeline, set(STEP_KINDS), args.overrides)
        outcomes = run_pipeline(
            pipeline, out, STEP_KINDS, force=args.force, jobs=args.jobs, progress=not args.quiet
        )
    except (ConfigError, StepError) as error:  # pipeline errors are configuration errors
        print(f"culturemert run: {error}", file=sys.stderr)
        return 1
    print_outcomes(outcomes)
    return 0


def print_outcomes(outcomes) -> None:
    """One line per step: what it is, whether it ran, how long it took, its product."""
    print(f"\n{'step':<22} {'kind':<10} {'status':<7} {'seconds':>8}  product")
    for outcome in outcomes:
        print(
            f"{outcome.name:<22} {outcome.kind:<10} {outcome.status:<7} "
            f"{outcome.seconds:>8.1f}  {outcome.product}"
        )
