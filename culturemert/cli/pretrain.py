"""``culturemert pretrain RECIPE``: continual pre-training of an encoder, stage by stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from culturemert.cli.options import add_logger_option, add_set_option


def add_parser(subparsers) -> None:
    """Register the ``pretrain`` subcommand."""
    parser = subparsers.add_parser(
        "pretrain",
        help="continue pre-training an encoder with MERT's objective, following a YAML recipe",
        description="Run a continual pre-training recipe (stages of trainable parameters, data "
        "mixture, LR schedule) on Lightning Fabric. Checkpoints go to OUT/checkpoints/last.ckpt, "
        "metrics to OUT/metrics.csv, and every stage exports its encoder in Hugging Face layout "
        "to OUT/stages/<index>-<name>/. For several GPUs or nodes launch under torchrun or SLURM "
        "with matching --devices and engine.num_nodes.",
        epilog="examples:\n"
        "  culturemert pretrain recipes/culturemert-95m.yaml --out runs/cm95 "
        "--set teacher.hash=HASH\n"
        "  culturemert pretrain recipes/cpt-lyra.yaml --set stages.0.steps=100 "
        "--set 'stages.full.trainable=[encoder, heads]' --check\n"
        "  torchrun --nproc-per-node 8 --no-python culturemert pretrain RECIPE --devices 8 "
        "--set engine.strategy=ddp\n"
        "  culturemert pretrain RECIPE --out runs/cm95 --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", type=Path, help="YAML recipe (see recipes/)")
    add_set_option(parser, "stages.0.steps=10")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    parser.add_argument("--devices", type=int, help="devices per node (engine.devices)")
    parser.add_argument(
        "--precision",
        choices=["32", "bf16-mixed", "16-mixed"],
        help="numeric precision (engine.precision)",
    )
    add_logger_option(parser, "OUT/logs (engine.loggers)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the recipe, manifests, targets and the starting encoder with its stored "
        "heads, print the stages, and stop",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the recipe with its overrides, then check it or train."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from culturemert.loggers import LoggerError, logger_names, require_loggers
    from culturemert.manifest import ManifestError
    from culturemert.model import EncoderLoadError, NonFiniteWeightsError
    from culturemert.pretrain.data import DataError
    from culturemert.pretrain.loop import (
        NonFiniteLossError,
        RunError,
        build_objective,
        plan_stages,
        train,
    )
    from culturemert.pretrain.recipe import RecipeError, load_recipe
    from culturemert.teachers.targets import TargetsError

    overrides = list(args.overrides)
    if args.devices is not None:
        overrides.append(f"engine.devices={args.devices}")
    if args.precision is not None:
        overrides.append(f"engine.precision={args.precision}")
    out = args.out or Path("runs") / args.recipe.stem
    try:
        if args.loggers is not None:
            overrides.append(f"engine.loggers={json.dumps(logger_names(args.loggers))}")
        recipe = load_recipe(args.recipe, overrides)
        require_loggers(recipe.engine.loggers, "--logger" if args.loggers else "engine.loggers")
        if args.check:
            plans, _ = plan_stages(
                recipe, world_size=recipe.engine.devices * recipe.engine.num_nodes
            )
            _print_plan(plans)
            build_objective(recipe)  # the starting encoder loads and its stored heads fit
            print(
                f"init: {recipe.init} loads; stored pre-training heads, if any, fit the objective"
            )
            return 0
        exported = train(recipe, out, resume=args.resume)
    except (
        RecipeError,
        LoggerError,
        DataError,
        TargetsError,
        ManifestError,
        EncoderLoadError,
        RunError,
        NonFiniteLossError,
        NonFiniteWeightsError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if rank_zero_only.rank == 0:  # every rank returns the same folders: say it once
        for directory in exported:
            print(f"exported {directory}")
    return 0


def _print_plan(plans) -> None:
    """One line per stage: what trains, on which mixture, for how long."""
    print(
        f"{'stage':<16} {'trainable':<22} {'steps':>7} {'audio h':>9} {'micro-batch':>11}  mixture"
    )
    for plan in plans:
        stage = plan.config
        hours = stage.steps * stage.batch_seconds / 3600
        mixture = ", ".join(f"{s.name} {s.probability:.0%}" for s in plan.sources)
        trainable = ",".join(stage.trainable)
        print(
            f"{stage.name:<16} {trainable:<22} {stage.steps:>7} {hours:>9.1f} "
            f"{plan.micro_batch:>11}  {mixture}"
        )
