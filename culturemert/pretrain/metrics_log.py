"""Per-step training metrics as CSV (always) and through the recipe's experiment loggers.

The CSV is appended and flushed row by row, so a killed run keeps what it logged; a resumed run
first drops the rows logged after its checkpoint, so the file reads as one unbroken run (and
TensorBoard is told to purge the same steps).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from culturemert.atomic import atomic_path
from culturemert.loggers import close_loggers, log_hyperparams, log_metrics, make_loggers

STEP_COLUMN = "global_step"


class MetricsLog:
    """Rows of metrics keyed by ``global_step``, written to ``directory/metrics.csv`` and to the
    ``loggers`` named (under ``directory/logs``), with ``hparams`` recorded beside the first row."""

    def __init__(
        self,
        directory: Path,
        *,
        resume_after: int | None = None,
        loggers: Sequence[str] = (),
        hparams: Mapping[str, Any] | None = None,
    ):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.csv"
        rows: list[dict[str, str]] = []
        if resume_after is not None and self.path.is_file():
            with self.path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r[STEP_COLUMN]) <= resume_after]
        self.columns: list[str] = list(rows[0]) if rows else []
        self._rewrite(rows)
        purge = None if resume_after is None else resume_after + 1
        self.loggers = make_loggers(loggers, directory, purge_step=purge)
        self._hparams = dict(hparams or {})

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (new columns rewrite the header); send its numbers to the loggers."""
        if any(key not in self.columns for key in row):
            with self.path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            self.columns += [key for key in row if key not in self.columns]
            self._rewrite(rows)
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.columns).writerow(row)
        if self.loggers:
            step = int(row[STEP_COLUMN])
            numbers = {
                k: v for k, v in row.items() if isinstance(v, (int, float)) and k != STEP_COLUMN
            }
            if self._hparams:  # once, with the first row's numbers as their metrics
                log_hyperparams(self.loggers, self._hparams, numbers, step)
                self._hparams = {}
            else:
                log_metrics(self.loggers, numbers, step)

    def close(self, status: str = "success") -> None:
        """Flush and close the loggers."""
        close_loggers(self.loggers, status)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.path) as staging, staging.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns)
            if self.columns:
                writer.writeheader()
            writer.writerows(rows)
