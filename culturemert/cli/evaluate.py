"""``culturemert evaluate MODEL --tasks ... --data-root DIR`` (or ``--config EVAL.yaml``): probe
an encoder, write results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from culturemert.cli.options import add_logger_option, add_set_option, overrides


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in _names(text))


def _window(text: str) -> float | None:
    value = float(text)
    return None if value <= 0 else value


def _cut(text: str) -> tuple[str, float | None]:
    task, _, seconds = text.partition("=")
    if not task or not seconds:
        raise argparse.ArgumentTypeError(f"expected TASK=SECONDS or TASK=none, got {text!r}")
    return task.strip(), None if seconds.strip().lower() == "none" else float(seconds)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` and its arguments."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate an encoder by probing on tagging datasets (cached features, fast probes)",
        description=(
            "Extract (or read cached) features of every layer, select probe type, layer and "
            "learning rate on validation, report test ROC-AUC, mAP, micro-F1 and macro-F1 over "
            "seeds as mean ± std. Writes a results JSON and prints the paper's two tables."
        ),
    )
    parser.add_argument(
        "model",
        help="Hugging Face-layout encoder folder, hub id, or hand-made features as a reference "
        "(features:mfcc+chroma; kinds mfcc, logmel, chroma joined by '+')",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="evaluation config (YAML: tasks, data_root, window_seconds, selection.probe, "
        "max_seconds, ...); flags and --set override it",
    )
    parser.add_argument(
        "--tasks",
        type=_names,
        default=None,
        help="comma-separated: lyra,makam,hindustani,carnatic,fma,mtat,generic,...",
    )
    parser.add_argument("--data-root", default=None, help="folder holding one folder per task")
    parser.add_argument(
        "--out",
        default="results.json",
        help="results file (default: %(default)s); a table of each task's selected probe and "
        "scores goes beside it as CSV (results.csv)",
    )
    parser.add_argument(
        "--cache",
        default=None,
        help="feature cache folder (default: $CULTUREMERT_CACHE or ~/.cache/culturemert/features)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration (5)")
    parser.add_argument(
        "--window-seconds",
        type=_window,
        default=argparse.SUPPRESS,
        help="window length; 0 embeds each track whole (attention cost grows with the square "
        "of its length; default: 30)",
    )
    parser.add_argument("--pool", choices=["mean", "max", "mean+std"], default=None)
    parser.add_argument(
        "--max-seconds",
        type=_cut,
        action="append",
        default=[],
        metavar="TASK=SECONDS",
        help="encode only the first SECONDS of each of TASK's recordings (none: whole); "
        "defaults as in the tagging studies: makam 150, hindustani 780, carnatic 330",
    )
    parser.add_argument(
        "--probes", type=_names, default=None, help="probe types to select from (mlp,linear)"
    )
    parser.add_argument(
        "--lrs",
        type=_floats,
        default=None,
        help="learning-rate grid (default: 5e-5,1e-4,5e-4,1e-3,5e-3,1e-2)",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="(default: 100)")
    parser.add_argument(
        "--device",
        default=None,
        help="where features are extracted and probes trained: cuda, cuda:1, cpu "
        "(default: this rank's GPU when there is one, else the CPU)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="the encoder's floating-point type when extracting (part of the cache key)",
    )
    parser.add_argument("--workers", type=int, default=None, help="audio-decoding processes (1)")
    add_set_option(parser, "selection.probe.hidden=256")
    parser.add_argument("--name", default=None, help="model name shown in reports")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_logger_option(parser, "the results file's folder, logs/")
    parser.set_defaults(run=run)


def evaluation_settings(args: argparse.Namespace):
    """The :class:`EvaluationConfig` of ``--config``, the flags given and ``--set``."""
    from culturemert.evaluate.settings import evaluation_config, load_evaluation_config

    flags = {
        "tasks": args.tasks,
        "data_root": args.data_root,
        "cache_dir": args.cache,
        "pool": args.pool,
        "selection.seeds": args.seeds,
        "selection.kinds": args.probes,
        "selection.learning_rates": None if args.lrs is None else list(args.lrs),
        "selection.probe.max_epochs": args.max_epochs,
        "device": args.device,
        "dtype": args.dtype,
        "workers": args.workers,
    }
    # Values that may be None on purpose (whole recordings, whole tracks) are set when given.
    explicit = [f"max_seconds.{task}={json.dumps(seconds)}" for task, seconds in args.max_seconds]
    if hasattr(args, "window_seconds"):
        explicit.append(f"window_seconds={json.dumps(args.window_seconds)}")
    changes = explicit + overrides(flags, args.overrides)
    if args.config:
        return load_evaluation_config(args.config, changes)
    return evaluation_config({}, changes, relative_to=None)


def run(args: argparse.Namespace) -> int:
    """Evaluate, save the results file, print the tables."""
    from culturemert.audio import AudioError
    from culturemert.devices import resolve_device, slow_dtype_warning
    from culturemert.evaluate.datasets import DatasetError
    from culturemert.evaluate.harness import evaluate_encoder
    from culturemert.evaluate.report import markdown_report
    from culturemert.evaluate.results import logged_values, save_results, save_task_table
    from culturemert.loggers import log_hyperparams, opened_loggers, require_loggers
    from culturemert.model import EncoderLoadError

    out = Path(args.out)
    try:
        config = evaluation_settings(args)
        device = resolve_device(config.device)
        loggers = require_loggers(args.loggers or ())
        if out.suffix == ".csv":  # the task table's own name
            raise ValueError(f"--out {out}: name the results JSON file, e.g. results.json")
    except ValueError as error:  # a bad config value, no such device, a logger not installed
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    if warning := slow_dtype_warning(device, config.dtype):
        print(warning, file=sys.stderr)
    try:
        results = evaluate_encoder(
            args.model, None, config, name=args.name, progress=not args.quiet
        )
    except (DatasetError, EncoderLoadError, AudioError, ValueError, OSError) as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    if results is None:  # a rank other than 0 under torchrun: its share is embedded
        return 0
    path = save_results(out, results)
    table = save_task_table(out.with_suffix(".csv"), results)
    with opened_loggers(loggers, out.parent, version=out.stem) as running:  # rank 0 only
        log_hyperparams(running, *logged_values(results), step=0)
    print(markdown_report([results]))
    print(f"wrote {path} and {table}")
    return 0
