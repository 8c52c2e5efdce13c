"""Running a pipeline: each step's output cached under the run folder, keyed by its inputs.

A step's key is the sha256 of its kind, its settings, the keys of the steps it reads, the
pipeline seed and thread count, and the library version, so it is known before anything runs and changes
exactly when something the step depends on changes. ``RUN/<step>/step.json`` records the key
of the output in ``RUN/<step>/``; a step whose recorded key matches is not run again. A step
runs in a temporary folder that replaces its old output only once it has succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from culturemert import __version__
from culturemert.atomic import atomic_directory
from culturemert.config import ConfigError, build
from culturemert.pipeline.spec import Pipeline, PipelineError, StepSpec, resolve_references

RECORD = "step.json"
LOG_DIR = "logs"


class StepError(RuntimeError):
    """A step that failed; the message names it and says why."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step

    def __reduce__(self):
        return StepError, (self.step, str(self))  # crosses from worker processes intact


@dataclass(frozen=True)
class StepContext:
    """What a step gets besides its settings: where to write, its seed, shared caches."""

    name: str
    out: Path  # an empty folder that becomes RUN/<name> when the step succeeds
    seed: int
    cache: Path  # content-addressed caches shared by the run's steps (e.g. encoder features)
    progress: bool
    replica: int | None = None  # which run of a replicated step this is (1…N)


@dataclass(frozen=True)
class StepKind:
    """A kind of step: a dataclass of its settings, and the function that runs it.

    ``run(settings, context)`` writes into ``context.out`` and returns its main product (a path
    inside ``context.out``, or ``context.out`` itself), which ``@step`` references resolve to.
    """

    settings: type
    run: Callable[[Any, StepContext], Path]


@dataclass(frozen=True)
class StepOutcome:
    """What happened to one step in a run."""

    name: str
    kind: str
    status: str  # "ran" or "cached"
    seconds: float
    product: Path


def step_seed(seed: int, name: str) -> int:
    """The step's own seed: independent of the other steps, fixed by the pipeline seed."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def step_keys(pipeline: Pipeline) -> dict[str, str]:
    """Every step's cache key, from its settings and its inputs' keys."""
    keys: dict[str, str] = {}
    for step in pipeline.steps:
        payload = {
            "kind": step.kind,
            "settings": step.config,
            "inputs": {name: keys[name] for name in step.needs},
            "seed": pipeline.seed,
            "threads": pipeline.threads,  # float sums can differ with the thread count
            "version": __version__,
        }
        if step.replica is not None:  # replicas differ by their seed alone
            payload["replica"] = step.replica
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        keys[step.name] = hashlib.sha256(text.encode()).hexdigest()
    return keys


def check_settings(pipeline: Pipeline, kinds: dict[str, StepKind]) -> None:
    """Build every step's settings before anything runs, so a typo fails at once."""
    for step in pipeline.steps:
        build_settings(step, step.config, kinds[step.kind])


def build_settings(step: StepSpec, config: dict[str, Any], kind: StepKind) -> Any:
    """The step's settings dataclass; errors name the step and the field."""
    try:
        return build(kind.settings, config, f"steps.{step.name}")
    except ConfigError as error:
        raise PipelineError(str(error)) from None


def read_record(folder: Path) -> dict | None:
    """A finished step's record, or None when the folder holds none (or an unreadable one)."""
    try:
        return json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def run_pipeline(
    pipeline: Pipeline,
    run_dir: str | os.PathLike,
    kinds: dict[str, StepKind],
    *,
    force: Iterable[str] = (),
    jobs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
) -> list[StepOutcome]:
    """Run the steps whose outputs are missing or out of date; ``force`` redoes the named steps
    and every step that reads from them. Up to ``jobs`` independent steps (default: the
    pipeline's ``jobs``) run at once, each in its own process. Raises :class:`StepError` naming
    a failing step; steps already running are let finish and keep their outputs."""
    run_dir = Path(run_dir)
    force = set(force)
    names = {name for step in pipeline.steps for name in (step.name, step.declared)}
    unknown = sorted(force - names)
    if unknown:
        steps = ", ".join(dict.fromkeys(step.declared for step in pipeline.steps))
        raise PipelineError(f"--force {unknown[0]}: no such step (steps: {steps})")
    jobs = jobs or pipeline.jobs
    if jobs < 1:
        raise PipelineError(f"jobs must be a positive integer, got {jobs}")
    check_settings(pipeline, kinds)
    forced = pipeline.dependants(force)
    keys = step_keys(pipeline)
    outputs = {step.name: run_dir / step.name for step in pipeline.steps}
    number = {step.name: f"[{i}/{len(pipeline.steps)}]" for i, step in enumerate(pipeline.steps, 1)}
    outcomes: dict[str, StepOutcome] = {}
    for step in pipeline.steps:
        record = read_record(outputs[step.name])
        if record and record.get("key") == keys[step.name] and step.name not in forced:
            product = outputs[step.name] / record["product"]
            outcomes[step.name] = StepOutcome(step.name, step.kind, "cached", 0.0, product)
            log(f"{number[step.name]} {step.name} ({step.kind}): up to date")
    products = {name: outcome.product for name, outcome in outcomes.items()}
    # Steps that many others wait for start first, so the longest chain is not held up.
    waiting = [step for step in pipeline.steps if step.name not in outcomes]
    waiting.sort(key=lambda step: -len(pipeline.dependants({step.name})))

    bar = tqdm(total=len(pipeline.steps), desc="pipeline", unit="step", disable=not progress)
    bar.update(len(outcomes))
    # One step at a time runs here, with its own progress bars; several run in worker
    # processes (spawned: forking a process that has used torch's thread pools can hang).
    pool = _InProcess() if jobs == 1 else ProcessPoolExecutor(jobs, get_context("spawn"))
    running: dict[Future, StepSpec] = {}
    failure: StepError | None = None
    try:
        while waiting or running:
            ready = [s for s in waiting if all(n in products for n in s.needs)]
            for step in ready[: max(0, jobs - len(running))] if failure is None else []:
                waiting.remove(step)
                log(f"{number[step.name]} {step.name} ({step.kind}): running")
                args = (pipeline, step, kinds[step.kind], keys[step.name], run_dir, products)
                running[pool.submit(_execute, *args, progress and jobs == 1)] = step
            if not running:
                break
            bar.set_postfix_str(", ".join(step.name for step in running.values()))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                step = running.pop(future)
                try:
                    seconds = future.result()
                except StepError as error:
                    failure = failure or error
                    continue
                record = read_record(outputs[step.name])
                products[step.name] = outputs[step.name] / record["product"]
                outcomes[step.name] = StepOutcome(
                    step.name, step.kind, "ran", seconds, products[step.name]
                )
                log(f"{number[step.name]} {step.name} ({step.kind}): done in {seconds:.1f} s")
                bar.update()
    finally:
        pool.shutdown(cancel_futures=True)
        bar.close()
    if failure is not None:
        raise failure
    return [outcomes[step.name] for step in pipeline.steps]


class _InProcess:
    """The executor interface, running each call at once in this process."""

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` now; its result or exception in a finished future."""
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except StepError as error:
            future.set_exception(error)
        return future

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing to release."""


def _execute(
    pipeline: Pipeline,
    step: StepSpec,
    kind: StepKind,
    key: str,
    run_dir: Path,
    products: dict[str, Path],
    progress: bool,
) -> float:
    """Run one step in a staging folder and move it into place; return its duration."""
    outputs = {name: run_dir / name for name in (*step.needs, step.name)}
    trace = run_dir / LOG_DIR / f"{step.name}.traceback.txt"
    seed = step_seed(pipeline.seed, step.name)
    started = time.perf_counter()
    try:
        with atomic_directory(outputs[step.name]) as staging:
            cache = run_dir / ".cache"
            context = StepContext(step.name, staging, seed, cache, progress, step.replica)
            config = resolve_references(step.config, products, outputs)
            settings = build_settings(step, config, kind)
            with _reproducible(seed, pipeline.threads):
                product = Path(kind.run(settings, context)).resolve()
            if not product.is_relative_to(staging.resolve()):
                raise ValueError(f"the step's product {product} is not inside its output folder")
            seconds = time.perf_counter() - started
            record = {
                "step": step.name,
                "kind": step.kind,
                "key": key,
                "product": product.relative_to(staging.resolve()).as_posix(),
                "settings": step.config,
                "inputs": {name: str(outputs[name]) for name in step.needs},
                "seconds": round(seconds, 3),
                "culturemert_version": __version__,
            }
            (staging / RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text("".join(traceback.format_exception(error)))
        raise StepError(
            step.name,
            f"step {step.name!r} ({step.kind}) failed: {type(error).__name__}: {error}\n"
            f"(traceback in {trace}; earlier steps' outputs are kept, so a re-run resumes here)",
        ) from error
    trace.unlink(missing_ok=True)
    return seconds


@contextmanager
def _reproducible(seed: int, threads: int | None) -> Iterator[None]:
    """For the step's duration: seed every global generator it might draw from (Python, NumPy,
    torch), ask torch for deterministic kernels (warning where it has none), and use
    ``threads`` torch threads."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads or before[2])
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.set_num_threads(before[2])
