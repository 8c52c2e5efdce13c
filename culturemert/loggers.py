"""Experiment loggers beside the CSV every command writes: Lightning's TensorBoard and W&B loggers.

Names come from ``--logger`` (repeatable, or a comma list) or a command's config; the loggers
write under ``OUT/logs/`` (``logs/tensorboard/[RUN]``, ``logs/wandb``). Callers build them only
on rank 0, so under torchrun one process logs.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOGGERS = ("tensorboard", "wandb")

# What each logger imports, and what installs it.
_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
_INSTALL = {
    "tensorboard": "pip install 'culturemert[tensorboard]'",
    "wandb": "pip install 'culturemert[wandb]'",
}


class LoggerError(ValueError):
    """A logger that is unknown or not installed; the message says which and what to do."""


def logger_names(values: Iterable[str], where: str = "--logger") -> tuple[str, ...]:
    """Known logger names from ``values`` (each may be a comma list), in order, once each."""
    names: list[str] = []
    for value in values:
        for name in (part.strip().lower() for part in str(value).split(",")):
            if name and name not in LOGGERS:
                raise LoggerError(f"{where}: unknown logger {name!r}; use {' or '.join(LOGGERS)}")
            if name and name not in names:
                names.append(name)
    return tuple(names)


def require_loggers(names: Iterable[str], where: str = "--logger") -> tuple[str, ...]:
    """Check that every named logger is known and importable, before any work starts."""
    names = logger_names(names, where)
    for name in names:
        if not any(_importable(module) for module in _MODULES[name]):
            raise LoggerError(
                f"{where}: the {name} logger needs {' or '.join(_MODULES[name])} (not installed); "
                f"install it with: {_INSTALL[name]}"
            )
    return names


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def make_loggers(
    names: Iterable[str],
    out_dir: str | os.PathLike,
    *,
    version: str = "",
    name: str | None = None,
    purge_step: int | None = None,
) -> list[Any]:
    """Lightning loggers for ``names``, writing under ``out_dir/logs``.

    ``version`` is a folder under ``logs/tensorboard`` (for several runs sharing ``out_dir``);
    ``name`` is the W&B run's (default: ``version``, else the output folder's name).
    ``purge_step`` makes TensorBoard drop what an interrupted run logged from that step on, so
    a resumed run reads as one.
    """
    names = require_loggers(names)
    root = Path(out_dir) / "logs"
    loggers: list[Any] = []
    if "tensorboard" in names:
        from lightning.fabric.loggers import TensorBoardLogger

        loggers.append(
            TensorBoardLogger(
                root,
                name="tensorboard",
                version=version,
                default_hp_metric=False,
                purge_step=purge_step,
                # tensorboardX names event files by the second: without a finer suffix a resumed
                # run starting within the same second would overwrite the first run's file.
                filename_suffix=f".{time.time_ns()}",
            )
        )
    if "wandb" in names:
        from lightning.pytorch.loggers import WandbLogger

        root.mkdir(parents=True, exist_ok=True)  # W&B writes into an existing folder only
        loggers.append(
            WandbLogger(
                name=name or version or Path(out_dir).resolve().name,
                save_dir=root,
                project=os.environ.get("WANDB_PROJECT", "culturemert"),
            )
        )
    return loggers


@contextmanager
def opened_loggers(
    names: Iterable[str], out_dir: str | os.PathLike, **options: Any
) -> Iterator[list[Any]]:
    """:func:`make_loggers` for a block: closed when it ends, as failed when it raises."""
    loggers = make_loggers(names, out_dir, **options)
    status = "failed"
    try:
        yield loggers
        status = "success"
    finally:
        close_loggers(loggers, status)


def log_metrics(loggers: Sequence[Any], metrics: Mapping[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` to every logger and flush, so a killed run keeps them."""
    for logger in loggers:
        logger.log_metrics(dict(metrics), step=step)
        logger.save()


def log_hyperparams(
    loggers: Sequence[Any], params: Mapping[str, Any], metrics: Mapping[str, float], step: int
) -> None:
    """Record ``params`` with the metrics they produced (TensorBoard's hparams view pairs them)."""
    from lightning.fabric.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):  # it logs the metrics with the hparams
            logger.log_hyperparams(dict(params), metrics=dict(metrics), step=step)
        else:
            logger.log_hyperparams(dict(params))
            logger.log_metrics(dict(metrics), step=step)
        logger.save()


def close_loggers(loggers: Sequence[Any], status: str = "success") -> None:
    """Flush and close every logger (a W&B run is finished, so its files are complete)."""
    for logger in loggers:
        logger.finalize(status)
        finish = getattr(logger.experiment, "finish", None)  # a W&B run; TensorBoard has none
        if finish is not None:
            finish(exit_code=0 if status == "success" else 1)
