"""A pipeline file: named steps of known kinds, their settings, and the steps they read from.

A step reads another step's output through a reference string in its settings: ``"@name"`` is
that step's main product (e.g. an exported encoder folder or a results file) and
``"@name/relative/path"`` a path inside its output folder. References are the dependency
edges; the steps run in an order where every step comes after the steps it reads. Top-level
keys starting with ``x-`` are ignored: they hold YAML anchors that steps share.

Repeat runs: with ``replicates: N`` at the top, a step marked ``replicate: true`` (and every
step that reads from one) runs N times as ``name.1`` … ``name.N``, each with its own seed;
replica r reads replica r of its inputs, so the replicas pair up by seed along the whole chain.
A step marked ``gather: true`` runs once and sees every replica: a reference to a replicated
step becomes the list of its replicas' paths (spliced in place inside a list).
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
REFERENCE = re.compile(r"@([A-Za-z0-9_-]+(?:\.[0-9]+)?)(/.*)?")  # ".r": replica r


class PipelineError(ConfigError):
    """A pipeline file that cannot run; the message names the file, the step and the field."""


@dataclass(frozen=True)
class StepSpec:
    """One declared step: its name, kind, settings (references unresolved) and inputs."""

    name: str
    kind: str
    config: dict[str, Any]
    needs: tuple[str, ...]
    declared: str = ""  # the name in the pipeline file (``name`` is ``declared.r`` for replicas)
    replica: int | None = None  # 1…N for a replica of a replicated step

    def __post_init__(self) -> None:
        object.__setattr__(self, "declared", self.declared or self.name)


@dataclass(frozen=True)
class Pipeline:
    """Steps in an order that runs every step after the steps it reads."""

    steps: tuple[StepSpec, ...]
    seed: int = 0
    threads: int | None = None  # torch threads per step (None: torch's default)
    jobs: int = 1  # steps run at once; outputs do not depend on it
    replicates: int = 1  # runs of each replicated step, with seeds of their own
    source: str = "pipeline"
    description: str = ""
    by_name: dict[str, StepSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {step.name: step for step in self.steps})

    def expanded(self, names: set[str]) -> set[str]:
        """Step names with each declared name of a replicated step replaced by its replicas."""
        return {step.name for step in self.steps if step.name in names or step.declared in names}

    def dependants(self, names: set[str]) -> set[str]:
        """``names`` and every step that reads from them, directly or not."""
        closed = self.expanded(names)
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


def retarget_references(value: Any, targets: dict[str, str | list[str]]) -> Any:
    """Settings with ``@step`` references to the steps in ``targets`` pointed elsewhere: at one
    other step (a name), or at several (a list of names: a list of references, spliced in place
    when the reference is an item of a list)."""
    if isinstance(value, str):
        match = REFERENCE.fullmatch(value)
        if not match or match.group(1) not in targets:
            return value
        target, relative = targets[match.group(1)], match.group(2) or ""
        if isinstance(target, str):
            return f"@{target}{relative}"
        return [f"@{name}{relative}" for name in target]
    if isinstance(value, dict):
        return {key: retarget_references(item, targets) for key, item in value.items()}
    if isinstance(value, list):
        items = []
        for item in value:
            new = retarget_references(item, targets)
            spliced = isinstance(item, str) and isinstance(new, list)
            items.extend(new) if spliced else items.append(new)
        return items
    return value


def expand_replicas(
    steps: Sequence[StepSpec], replicates: int, roots: set[str], gathers: set[str]
) -> list[StepSpec]:
    """The steps with every replicated one (a root, or a reader of a replicated step that does
    not gather) written out ``replicates`` times, references retargeted replica by replica."""
    replicated: set[str] = set()
    for step in steps:  # topological order: inputs are settled before their readers
        if step.name in roots or (step.name not in gathers and replicated.intersection(step.needs)):
            replicated.add(step.name)
    if replicates == 1:
        return list(steps)
    numbers = range(1, replicates + 1)
    expanded = []
    for step in steps:
        inputs = [name for name in step.needs if name in replicated]
        if step.name not in replicated:
            targets = {name: [f"{name}.{r}" for r in numbers] for name in inputs}
            expanded.append(_retargeted(step, targets, step.name, None))
            continue
        for r in numbers:
            targets = {name: f"{name}.{r}" for name in inputs}
            expanded.append(_retargeted(step, targets, f"{step.name}.{r}", r))
    return expanded


def _retargeted(
    step: StepSpec, targets: dict[str, str | list[str]], name: str, replica: int | None
) -> StepSpec:
    """``step`` as ``name`` (replica ``replica``), its references pointed at ``targets``."""
    config = retarget_references(step.config, targets)
    needs = tuple(dict.fromkeys(target for target, _ in iter_references(config)))
    return StepSpec(name, step.kind, config, needs, step.name, replica)


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
        for k in set(raw) - {"steps", "seed", "threads", "jobs", "replicates", "description"}
        if not str(k).startswith("x-")
    )
    if unknown:
        raise PipelineError(
            f"{where}: unknown key {unknown[0]!r} "
            "(expected steps, seed, threads, jobs, replicates, description or x-…)"
        )
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PipelineError(f"{where}: seed must be an integer, got {seed!r}")
    threads = raw.get("threads")
    counts = (("threads", threads), ("jobs", raw.get("jobs", 1)))
    for key, value in (*counts, ("replicates", raw.get("replicates", 1))):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise PipelineError(f"{where}: {key} must be a positive integer, got {value!r}")
    declared: dict[str, StepSpec] = {}
    roots: set[str] = set()
    gathers: set[str] = set()
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
        for flag, chosen in (("replicate", roots), ("gather", gathers)):
            value = body.get(flag, False)
            if not isinstance(value, bool):
                raise PipelineError(f"{at}.{flag}: expected true or false, got {value!r}")
            if value:
                chosen.add(name)
        if name in roots and name in gathers:
            raise PipelineError(f"{at}: a step cannot both replicate and gather")
        flags = ("kind", "replicate", "gather")
        config = {key: value for key, value in body.items() if key not in flags}
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
    replicates = raw.get("replicates", 1)
    steps = expand_replicas([declared[name] for name in order], replicates, roots, gathers)
    return Pipeline(
        steps=tuple(steps),
        seed=seed,
        threads=threads,
        jobs=raw.get("jobs", 1),
        replicates=replicates,
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
