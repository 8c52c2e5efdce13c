"""A pipeline file: named steps of known kinds, their settings, and the steps they read from.

A step reads another step's output through a reference string in its settings: ``"@name"`` is
that step's main product (e.g. an exported encoder folder or a results file) and
``"@name/relative/path"`` a path inside its output folder. References are the dependency
edges; the steps run in an order where every step comes after the steps it reads. Top-level
keys starting with ``x-`` are ignored: they hold YAML anchors that steps share.
"""

from __future__ import annotations

import graphlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturemert.config import ConfigError, apply_override, read_yaml

STEP_NAME = re.compile(r"[A-Za-z0-9_-]+")
REFERENCE = re.compile(r"@([A-Za-z0-9_-]+)(/.*)?")


class PipelineError(ConfigError):
    """A pipeline file that cannot run; the message names the file, the step and the field."""


@dataclass(frozen=True)
class StepSpec:
    """One declared step: its name, kind, settings (references unresolved) and inputs."""

    name: str
    kind: str
    config: dict[str, Any]
    needs: tuple[str, ...]


@dataclass(frozen=True)
class Pipeline:
    """Steps in an order that runs every step after the steps it reads."""

    steps: tuple[StepSpec, ...]
    seed: int = 0
    threads: int | None = None  # torch threads per step (None: torch's default)
    jobs: int = 1  # steps run at once; outputs do not depend on it
    source: str = "pipeline"
    description: str = ""
    by_name: dict[str, StepSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {step.name: step for step in self.steps})

    def dependants(self, names: set[str]) -> set[str]:
        """``names`` and every step that reads from them, directly or not."""
        closed = set(names)
        for step in self.steps:  # topological order: inputs are closed before their readers
            if closed.intersection(step.needs):
                closed.add(step.name)
        return closed


def iter_references(value: Any) -> Iterator[tuple[str, str]]:
    """Every ``(step, relative path)`` referenced anywhere in nested settings."""
    if isinstance(value, str):
        match = REFERENCE.fullmatch(value)
        if match:
            yield match.group(1), (match.group(2) or "").lstrip("/")
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_references(item)


def resolve_references(value: Any, products: dict[str, Path], outputs: dict[str, Path]) -> Any:
    """Settings with every reference replaced by a path: ``@step`` by its main product,
    ``@step/rel`` by ``rel`` inside its output folder."""
    if isinstance(value, str):
        match = REFERENCE.fullmatch(value)
        if not match:
            return value
        name, relative = match.group(1), (match.group(2) or "").lstrip("/")
        return str(outputs[name] / relative if relative else products[name])
    if isinstance(value, dict):
        return {key: resolve_references(item, products, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_references(item, products, outputs) for item in value]
    return value


def pipeline_from_dict(
    raw: Any, kinds: set[str] | frozenset[str], *, where: str = "pipeline"
) -> Pipeline:
    """Check a pipeline read from YAML: a ``steps`` mapping of name → {kind, settings…}."""
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), dict) or not raw["steps"]:
        raise PipelineError(f"{where}: expected a mapping with a non-empty 'steps' mapping")
    # ``x-…`` keys hold shared YAML anchors, as in docker-compose files.
    unknown = sorted(
        k
        for k in set(raw) - {"steps", "seed", "threads", "jobs", "description"}
        if not str(k).startswith("x-")
    )
    if unknown:
        raise PipelineError(
            f"{where}: unknown key {unknown[0]!r} "
            "(expected steps, seed, threads, jobs, description or x-…)"
        )
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PipelineError(f"{where}: seed must be an integer, got {seed!r}")
    threads = raw.get("threads")
    for key, value in (("threads", threads), ("jobs", raw.get("jobs", 1))):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise PipelineError(f"{where}: {key} must be a positive integer, got {value!r}")
    declared: dict[str, StepSpec] = {}
    for name, body in raw["steps"].items():
        at = f"{where}: steps.{name}"
        if not isinstance(name, str) or not STEP_NAME.fullmatch(name):
            raise PipelineError(f"{at}: step names use letters, digits, '_' and '-'")
        if not isinstance(body, dict) or "kind" not in body:
            raise PipelineError(f"{at}: expected a mapping with a 'kind'")
        kind = body["kind"]
        if kind not in kinds:
            raise PipelineError(
                f"{at}.kind: unknown kind {kind!r} (known: {', '.join(sorted(kinds))})"
            )
        config = {key: value for key, value in body.items() if key != "kind"}
        needs = tuple(dict.fromkeys(step for step, _ in iter_references(config)))
        for needed in needs:
            if needed not in raw["steps"]:
                raise PipelineError(
                    f"{at}: refers to @{needed}, which is not a step of the pipeline"
                )
            if needed == name:
                raise PipelineError(f"{at}: refers to itself")
        declared[name] = StepSpec(name, kind, config, needs)
    sorter = graphlib.TopologicalSorter({name: step.needs for name, step in declared.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = " → ".join(error.args[1])
        raise PipelineError(f"{where}: steps read from each other in a cycle: {cycle}") from None
    return Pipeline(
        steps=tuple(declared[name] for name in order),
        seed=seed,
        threads=threads,
        jobs=raw.get("jobs", 1),
        source=where,
        description=str(raw.get("description", "")),
    )


def load_pipeline(
    path: str | os.PathLike, kinds: set[str] | frozenset[str], overrides: Sequence[str] = ()
) -> Pipeline:
    """Read and check a pipeline YAML file, with ``KEY=VALUE`` overrides (``seed=3``,
    ``steps.corpus.clips_per_tradition=30``) applied to each step on its own."""
    raw = read_yaml(path, "pipeline")
    raw = json.loads(json.dumps(raw, default=str))  # YAML anchors unshared: one step per override
    try:
        for override in overrides:
            apply_override(raw, override)
    except ConfigError as error:
        raise PipelineError(f"{path}: {error}") from None
    return pipeline_from_dict(raw, kinds, where=str(path))
