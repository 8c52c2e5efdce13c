"""Per-step training metrics as CSV (always) and TensorBoard (when ``tensorboard`` is installed).

The CSV is appended and flushed row by row, so a killed run keeps what it logged; a resumed run
first drops the rows logged after its checkpoint, so the file reads as one unbroken run.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

from culturemert.atomic import atomic_path

STEP_COLUMN = "global_step"


class MetricsLog:
    """Rows of metrics keyed by ``global_step``, written to ``directory/metrics.csv``."""

    def __init__(self, directory: Path, *, resume_after: int | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.csv"
        rows: list[dict[str, str]] = []
        if resume_after is not None and self.path.is_file():
            with self.path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r[STEP_COLUMN]) <= resume_after]
        self.columns: list[str] = list(rows[0]) if rows else []
        self._rewrite(rows)
        self.tensorboard = None
        if importlib.util.find_spec("tensorboard") is not None:
            from lightning.fabric.loggers import TensorBoardLogger

            self.tensorboard = TensorBoardLogger(directory, name="tensorboard")

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (new columns rewrite the header); mirror it to TensorBoard."""
        if any(key not in self.columns for key in row):
            with self.path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            self.columns += [key for key in row if key not in self.columns]
            self._rewrite(rows)
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.columns).writerow(row)
        if self.tensorboard is not None:
            step = int(row[STEP_COLUMN])
            numbers = {k: v for k, v in row.items() if isinstance(v, (int, float))}
            self.tensorboard.log_metrics(numbers, step=step)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.path) as staging, staging.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns)
            if self.columns:
                writer.writeheader()
            writer.writerows(rows)
