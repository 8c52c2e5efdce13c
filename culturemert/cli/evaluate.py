"""``culturemert evaluate MODEL --tasks ... --data-root DIR``: probe an encoder, write results."""

from __future__ import annotations

import argparse
import sys


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
        "--tasks",
        required=True,
        type=_names,
        help="comma-separated: lyra,makam,hindustani,carnatic,fma,mtat,generic,...",
    )
    parser.add_argument("--data-root", required=True, help="folder holding one folder per task")
    parser.add_argument("--out", default="results.json", help="results file (default: %(default)s)")
    parser.add_argument(
        "--cache",
        default=None,
        help="feature cache folder (default: $CULTUREMERT_CACHE or ~/.cache/culturemert/features)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration")
    parser.add_argument(
        "--window-seconds",
        type=_window,
        default=30.0,
        help="window length; 0 embeds each track whole (attention cost grows with the square "
        "of its length; default: %(default)s)",
    )
    parser.add_argument("--pool", choices=["mean", "max", "mean+std"], default="mean")
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
        "--probes",
        type=_names,
        default=["mlp", "linear"],
        help="probe types to select from (default: mlp,linear)",
    )
    parser.add_argument(
        "--lrs",
        type=_floats,
        default=None,
        help="learning-rate grid (default: 5e-5,1e-4,5e-4,1e-3,5e-3,1e-2)",
    )
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument(
        "--device",
        default=None,
        help="where features are extracted and probes trained: cuda, cuda:1, cpu "
        "(default: this rank's GPU when there is one, else the CPU)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="the encoder's floating-point type when extracting (part of the cache key)",
    )
    parser.add_argument("--workers", type=int, default=1, help="audio-decoding processes")
    parser.add_argument("--name", default=None, help="model name shown in reports")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, save the results file, print the tables."""
    from dataclasses import replace

    from culturemert.audio import AudioError
    from culturemert.devices import resolve_device, slow_dtype_warning
    from culturemert.evaluate.datasets import DatasetError
    from culturemert.evaluate.harness import EvaluationConfig, evaluate_encoder
    from culturemert.evaluate.report import markdown_report
    from culturemert.evaluate.results import save_results
    from culturemert.evaluate.selection import SelectionConfig
    from culturemert.model import EncoderLoadError

    selection = SelectionConfig(kinds=tuple(args.probes), seeds=args.seeds)
    selection = replace(selection, probe=replace(selection.probe, max_epochs=args.max_epochs))
    if args.lrs:
        selection = replace(selection, learning_rates=args.lrs)
    config = EvaluationConfig(
        window_seconds=args.window_seconds,
        pool=args.pool,
        selection=selection,
        cache_dir=args.cache,
        max_seconds=dict(args.max_seconds),
        dtype=args.dtype,
        device=args.device,
        workers=args.workers,
    )
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    if warning := slow_dtype_warning(device, args.dtype):
        print(warning, file=sys.stderr)
    try:
        results = evaluate_encoder(
            args.model,
            args.tasks,
            args.data_root,
            config,
            name=args.name,
            progress=not args.quiet,
        )
    except (DatasetError, EncoderLoadError, AudioError, ValueError, OSError) as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    if results is None:  # a rank other than 0 under torchrun: its share is embedded
        return 0
    path = save_results(args.out, results)
    print(markdown_report([results]))
    print(f"wrote {path}")
    return 0
