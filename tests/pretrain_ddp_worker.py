"""One rank of multi-process pre-training runs (launched by torchrun), with probes for the tests.

``python pretrain_ddp_worker.py PLAN.json`` runs each entry of the plan's ``runs`` through
``culturemert pretrain`` in this process, one after the other in the same process group
(starting Python and torch once per rank is what costs most). For each run it writes
``PROBES/<name>.rank<r>.json``: the crops this rank read, a hash of its parameters after the
run, and every file it wrote under the run's folder. A run with ``kill_at: [stage, step]``
stops on every rank just before that checkpoint is written, as a killed job would.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import safetensors.torch
import torch

from culturemert.cli import main
from culturemert.pretrain import loop
from culturemert.pretrain.data import CropDataset


class Killed(Exception):
    """Stands for the job being killed."""


class Probe:
    """What one rank did during one run."""

    def __init__(self):
        self.crops: list[list[int]] = []
        self.written: list[str] = []
        self.objective: torch.nn.Module | None = None
        self.out: str | None = None
        self.kill_at: tuple[int, int] | None = None

    def note_write(self, path) -> None:
        if self.out is None or not isinstance(path, (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(self.out):
            self.written.append(os.path.relpath(path, self.out))

    def audit(self, event: str, args: tuple) -> None:
        """Python-level writes: opens for writing, renames and replaces, new folders."""
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and bool(set(mode) & set("wax+"))) or (
                isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            )
            if writing:
                self.note_write(path)
        elif event == "os.rename":
            self.note_write(args[1])
        elif event == "os.mkdir":
            self.note_write(args[0])


def install(probe: Probe) -> None:
    """Route the library's reads, builds, checkpoint saves and binary writes through ``probe``."""
    sys.addaudithook(probe.audit)
    for module, name in ((torch, "save"), (safetensors.torch, "save_file")):
        original = getattr(module, name)

        def recording(obj, path, *args, _original=original, **kwargs):
            probe.note_write(path)
            return _original(obj, path, *args, **kwargs)

        setattr(module, name, recording)

    get_item = CropDataset.__getitem__

    def recording_get_item(self, index):
        probe.crops.append([self.stage_index, index])
        return get_item(self, index)

    CropDataset.__getitem__ = recording_get_item
    build = loop.build_objective

    def recording_build(recipe):
        probe.objective, preprocessing = build(recipe)
        return probe.objective, preprocessing

    loop.build_objective = recording_build
    save = loop.save_checkpoint

    def save_unless_killed(fabric, path, state):
        if probe.kill_at == (state["stage"], state["step"]):
            raise Killed
        save(fabric, path, state)

    loop.save_checkpoint = save_unless_killed


def parameter_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor of a state dict, names included."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_plan(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    rank = int(os.environ["RANK"])
    probes = Path(plan["probes"])
    probe = Probe()
    install(probe)
    for run in plan["runs"]:
        probe.crops, probe.written, probe.objective = [], [], None
        probe.out = os.path.abspath(run["out"])
        probe.kill_at = tuple(run["kill_at"]) if run.get("kill_at") else None
        try:
            code = main(["pretrain", run["recipe"], "--out", run["out"], *run.get("args", [])])
        except Killed:
            code = "killed"
        probe.out = None
        probes.mkdir(parents=True, exist_ok=True)
        record = {
            "code": code,
            "crops": probe.crops,
            "parameters": parameter_hash(probe.objective.state_dict()),
            "written": probe.written,
        }
        (probes / f"{run['name']}.rank{rank}.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(run_plan(sys.argv[1]))
