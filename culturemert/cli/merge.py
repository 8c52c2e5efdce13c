"""``culturemert merge``: merge encoders in weight space, optionally sweeping λ with a scorer."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from culturemert.cli.options import add_logger_option, add_set_option, overrides


def add_parser(subparsers) -> None:
    """Register the ``merge`` subcommand."""
    parser = subparsers.add_parser(
        "merge",
        help="merge encoders in weight space (task arithmetic, TIES, DARE, linear)",
        description="Merge fine-tuned or continually pre-trained encoders onto their base, "
        "tensor by tensor. Flags override the values of --recipe. With --sweep, merges at "
        "every λ, scores each merge with --select-on and keeps the best in --out.",
    )
    parser.add_argument("--recipe", help="YAML recipe (keys as the long flags below)")
    parser.add_argument("--base", metavar="DIR", help="base model: directory or hub id")
    parser.add_argument("--models", nargs="+", metavar="DIR", help="models to merge onto it")
    parser.add_argument(
        "--method",
        choices=["task_arithmetic", "ties", "dare", "linear"],
        help="default task_arithmetic",
    )
    parser.add_argument(
        "--lambda", dest="lam", type=float, nargs="+", metavar="λ", help="λ, or one per model"
    )
    parser.add_argument("--weights", type=float, nargs="+", metavar="W", help="one per model")
    parser.add_argument("--density", type=float, help="TIES: fraction kept (default 0.2)")
    parser.add_argument(
        "--scope",
        choices=["global", "tensor"],
        help="TIES trim over the whole model (default, as in the paper) or per tensor",
    )
    parser.add_argument("--drop", type=float, help="DARE: drop probability (default 0.5)")
    parser.add_argument(
        "--combine",
        choices=["task_arithmetic", "ties"],
        help="DARE: how the surviving entries are combined (default task_arithmetic)",
    )
    parser.add_argument("--seed", type=int, help="DARE: seed of the drop masks (default 0)")
    parser.add_argument(
        "--weight-norm",
        choices=["effective", "raw"],
        dest="weight_norm",
        help="merge the weight-normed positional conv as g·v/‖v‖ (default) or as raw g and v",
    )
    parser.add_argument(
        "--non-encoder",
        choices=["base", "merge", "drop"],
        dest="non_encoder",
        help="masked_spec_embed and pre-training heads (default: from the base)",
    )
    parser.add_argument(
        "--include", nargs="+", metavar="REGEX", help="tensors to merge whatever the policy"
    )
    parser.add_argument(
        "--exclude", nargs="+", metavar="REGEX", help="tensors to take from the base"
    )
    parser.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], help="default: the base's"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--sweep", metavar="GRID", help="λ grid: start:stop:step (stop included) or a,b,c"
    )
    parser.add_argument(
        "--select-on",
        dest="select_on",
        metavar="SCORER",
        help="scorer for --sweep: an evaluation config (YAML: tasks, data_root, ...; scores "
        "validation ROC-AUC), module:function taking the merged directory and returning a "
        "float, or module:factory=ARG where factory(ARG) returns such a function",
    )
    parser.add_argument("--metric", default="score", help="name of the score in the table")
    parser.add_argument("--minimize", action="store_true", help="lower scores are better")
    parser.add_argument(
        "--license",
        metavar="ID",
        help="licence for the card when the inputs' cards name none (e.g. cc-by-nc-4.0)",
    )
    parser.add_argument(
        "--allow-non-finite",
        action="store_true",
        help="merge input tensors holding NaN or infinity with a warning instead of refusing",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_logger_option(parser, "OUT/logs, with --sweep")
    add_set_option(parser, "density=0.3")
    parser.set_defaults(run=run)


_RECIPE_FLAGS = (
    "base",
    "models",
    "method",
    "weights",
    "density",
    "scope",
    "drop",
    "combine",
    "seed",
    "weight_norm",
    "non_encoder",
    "include",
    "exclude",
    "dtype",
)


def run(args: argparse.Namespace) -> int:
    """Build the recipe, merge (or sweep λ), and print where the result is."""
    from culturemert.config import read_yaml
    from culturemert.loggers import require_loggers
    from culturemert.merge import MergeInputError, merge_checkpoints, recipe_from_dict
    from culturemert.merge.sweep import parse_grid, resolve_scorer, sweep_lambda
    from culturemert.model import EncoderLoadError

    try:
        raw = read_yaml(args.recipe, "merge recipe") if args.recipe else {}
        flags = {key: getattr(args, key) for key in _RECIPE_FLAGS}
        if args.lam:
            flags["lambda"] = args.lam[0] if len(args.lam) == 1 else args.lam
        changes = overrides(flags, args.overrides)
        if not ({"base", "models"} <= set(raw) | {c.split("=")[0] for c in changes}):
            raise MergeInputError("give --base and --models, or a --recipe that has them")
        recipe = recipe_from_dict(raw, changes, where=args.recipe or "command line")
        loggers = require_loggers(args.loggers or ())
        if loggers and not args.sweep:
            raise MergeInputError("--logger records a --sweep; a single merge has nothing to log")
        started = time.perf_counter()
        if not args.sweep:
            out = merge_checkpoints(
                recipe,
                args.out,
                license=args.license,
                allow_non_finite=args.allow_non_finite,
                progress=not args.quiet,
            )
            print(
                f"merged {len(recipe.models)} models by {recipe.method} into {out} "
                f"in {time.perf_counter() - started:.1f} s"
            )
            return 0
        if not args.select_on:
            raise MergeInputError("--sweep needs --select-on to score each merge")
        if Path(args.select_on).suffix in (".yaml", ".yml"):
            from culturemert.evaluate.harness import validation_scorer

            scorer = validation_scorer(args.select_on)
        else:
            scorer = resolve_scorer(args.select_on)
        result = sweep_lambda(
            recipe,
            parse_grid(args.sweep),
            scorer,
            args.out,
            metric=args.metric,
            maximize=not args.minimize,
            progress=not args.quiet,
            loggers=loggers,
            license=args.license,
            allow_non_finite=args.allow_non_finite,
        )
    except (MergeInputError, EncoderLoadError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print((result.output / "sweep.md").read_text(), end="")
    print(
        f"best λ = {result.best_lambda:g} ({args.metric} {result.best_score:.4f}), kept in "
        f"{result.output} (table: sweep.csv, plot: sweep.png) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0
