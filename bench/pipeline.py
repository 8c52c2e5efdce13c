"""Benchmark: a cold pipeline run against re-runs that find their steps cached, and how
precise the cold run's claims are.

The shipped demo pipeline, shrunk (10 clips of 2 s per tradition, 2 updates per stage, 2 λ,
one probe seed), is run three times in one folder: cold (the baseline: every step runs), again
unchanged (every step cached), and once more after changing only the report's title (one step
runs). ``--full`` runs the demo as shipped instead: its cold time is the demo's, and the width
of each claim's interval (with its seed and test-track parts) shows whether a change made the
demo cheaper but vaguer.

    .venv/bin/python bench/pipeline.py [--full] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import yaml
from common import machine_line

from culturemert.demo import demo_recipe
from culturemert.pipeline import pipeline_from_dict, run_pipeline
from culturemert.pipeline.steps import STEP_KINDS


def shrink(raw: dict) -> dict:
    """The demo's steps with seconds of audio, two updates per stage and a quick protocol."""
    for step in raw["steps"].values():
        if step["kind"] == "synth":
            step.update(clips_per_tradition=10, clip_seconds=2.0, splits=[0.4, 0.3, 0.3])
        if step["kind"] == "pretrain":
            for stage in step["stages"]:
                stage.update(steps=2, crop_seconds=1.0, batch_seconds=2.0)
                stage["schedule"].update(warmup_steps=1)
                if stage.get("snapshots"):
                    stage["snapshots"] = [1]  # the one update inside a 2-update stage
        if step["kind"] == "evaluate" and "/snapshots/" in step["encoder"]:
            step["encoder"] = re.sub(r"-\d+$", "-1", step["encoder"])
        if step["kind"] == "merge":
            step["lambdas"] = [0.2, 1.0]
        if "protocol" in step:
            selection = step["protocol"].get("selection", {})
            probe = {**selection.get("probe", {}), "max_epochs": 5}
            step["protocol"] = {
                **step["protocol"],
                "selection": {**selection, "seeds": 1, "probe": probe},
            }
    return raw


def timed_run(raw: dict, out: Path) -> tuple[float, int, int]:
    """Wall seconds of one run, how many steps actually ran, and how many there are."""
    pipeline = pipeline_from_dict(raw, set(STEP_KINDS))
    start = time.perf_counter()
    outcomes = run_pipeline(pipeline, out, STEP_KINDS, progress=False, log=lambda m: None)
    ran = sum(o.status == "ran" for o in outcomes)
    return time.perf_counter() - start, ran, len(outcomes)


def print_claims(claims: list[dict]) -> None:
    """Each claim's estimate, interval width and its two parts, in points."""
    print(f"\n{'claim':<44} {'estimate':>8} {'width':>7} {'seeds ±':>8} {'tracks ±':>9}  verdict")
    for claim in claims:
        low, high = claim["interval"]
        parts = claim["half_widths"]
        print(
            f"{claim['name']:<44} {claim['estimate']:>+8.1f} {high - low:>7.1f} "
            f"{parts['seeds']:>8.1f} {parts['tracks']:>9.1f}  {claim['verdict']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the demo as shipped, not shrunk")
    parser.add_argument("--keep", type=Path, help="run folder to keep (default: a temporary one)")
    args = parser.parse_args()
    raw = yaml.safe_load(demo_recipe().read_text())
    if not args.full:
        raw = shrink(raw)
    print(machine_line())
    with tempfile.TemporaryDirectory() as scratch:
        out = args.keep or Path(scratch) / "run"
        cold, ran_cold, steps = timed_run(raw, out)
        cached, ran_cached, _ = timed_run(raw, out)
        raw["steps"]["report"]["title"] += " (retitled)"
        one, ran_one, _ = timed_run(raw, out)
        written = out / "report" / "claims.json"
        claims = json.loads(written.read_text()) if written.is_file() else []
    print(f"{'run':<28} {'steps run':>10} {'seconds':>9} {'× cold':>8}")
    for name, seconds, ran in (
        ("cold (baseline)", cold, ran_cold),
        ("re-run, all cached", cached, ran_cached),
        ("re-run, report retitled", one, ran_one),
    ):
        print(f"{name:<28} {f'{ran}/{steps}':>10} {seconds:>9.3f} {seconds / cold:>8.4f}")
    print(f"cold / cached: {cold / cached:.0f}×")
    if claims:
        print_claims(claims)


if __name__ == "__main__":
    main()
