"""Dataset adapters: each dataset's own metadata files -> one :class:`Dataset` shape.

``build_dataset(task, data_root)`` looks for the task's folder under ``data_root`` (``lyra/``,
``makam/``, ``hindustani/``, ``carnatic/``, ``fma/``, ``mtat/``, ``generic/``), or uses
``data_root`` itself when it is that folder. Each adapter module documents its folder layout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from culturemert.evaluate.datasets.base import SPLITS, Dataset, DatasetError
from culturemert.evaluate.datasets.ccml import build_carnatic, build_hindustani, build_makam
from culturemert.evaluate.datasets.fma import build_fma, build_fma_genre_top
from culturemert.evaluate.datasets.generic import build_generic
from culturemert.evaluate.datasets.lyra import build_lyra
from culturemert.evaluate.datasets.mtat import build_mtat

#: Task name -> adapter taking the dataset's own folder.
ADAPTERS: dict[str, Callable[[Path], Dataset]] = {
    "lyra": build_lyra,
    "makam": build_makam,
    "hindustani": build_hindustani,
    "carnatic": build_carnatic,
    "fma": build_fma,
    "fma-genre-top": build_fma_genre_top,
    "mtat": build_mtat,
    "generic": build_generic,
}

#: Task name -> its folder under a shared data root (both FMA tasks read one folder).
TASK_FOLDERS = {task: task for task in ADAPTERS} | {"fma-genre-top": "fma"}


def build_dataset(task: str, data_root: str | Path) -> Dataset:
    """Build task ``task`` from ``data_root/<folder>``, or from ``data_root`` if it is the folder."""
    if task not in ADAPTERS:
        raise DatasetError(f"unknown task {task!r}; known tasks: {', '.join(ADAPTERS)}")
    data_root = Path(data_root).expanduser()
    if not data_root.exists():
        raise DatasetError(f"{task}: data root {data_root} does not exist")
    folder = data_root / TASK_FOLDERS[task]
    if folder.is_dir():
        return ADAPTERS[task](folder)
    try:
        return ADAPTERS[task](data_root)
    except DatasetError as error:
        raise DatasetError(f"{error}\n(and there is no folder {folder})") from None


__all__ = ["ADAPTERS", "SPLITS", "TASK_FOLDERS", "Dataset", "DatasetError", "build_dataset"]
