"""Learning-rate schedules for continual pre-training, as pure functions of the update step.

Two shapes, both starting with a linear (re-)warm-up from ``start_lr`` to ``peak_lr``:

- ``warmup_decay``: then a linear or cosine (re-)decay to ``end_lr`` at the stage's last step
  (Gupta et al. 2023; Ibrahim et al. 2024; MERT's own schedule is the linear case);
- ``constant_cooldown``: then ``peak_lr`` held constant and a linear cooldown to ``end_lr`` over
  the last ``cooldown_steps`` ("infinite"/WSD schedules, Hägele et al. 2024), which avoids
  re-warming again when training continues on new data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("warmup_decay", "constant_cooldown")
DECAY_SHAPES = ("linear", "cosine")


@dataclass
class ScheduleConfig:
    """A learning-rate schedule; ``step`` counts completed optimizer updates within a stage."""

    kind: str = "warmup_decay"
    peak_lr: float = 5e-4
    warmup_steps: int = 0
    start_lr: float = 0.0
    end_lr: float = 0.0
    decay: str = "linear"  # warmup_decay only: linear or cosine
    cooldown_steps: int = 0  # constant_cooldown only


def learning_rate(schedule: ScheduleConfig, step: int, total_steps: int) -> float:
    """The learning rate of update ``step`` (0-based) in a stage of ``total_steps`` updates.

    Hits ``start_lr`` at step 0, ``peak_lr`` at ``warmup_steps`` and ``end_lr`` at
    ``total_steps`` (when the stage has a decay or cooldown phase); later steps keep that value.
    """
    step = min(max(step, 0), total_steps)
    if step < schedule.warmup_steps:
        fraction = step / schedule.warmup_steps
        return schedule.start_lr + (schedule.peak_lr - schedule.start_lr) * fraction
    if schedule.kind == "warmup_decay":
        decay_start, decay_steps = schedule.warmup_steps, total_steps - schedule.warmup_steps
    elif schedule.kind == "constant_cooldown":
        decay_start, decay_steps = total_steps - schedule.cooldown_steps, schedule.cooldown_steps
    else:
        raise ValueError(f"schedule.kind: {schedule.kind!r} is not one of {SCHEDULE_KINDS}")
    if step <= decay_start or decay_steps <= 0:  # no decay phase: the peak holds to the end
        return schedule.peak_lr
    progress = (step - decay_start) / decay_steps
    if schedule.kind == "warmup_decay" and schedule.decay == "cosine":
        progress = 0.5 * (1.0 - math.cos(math.pi * progress))
    return schedule.peak_lr + (schedule.end_lr - schedule.peak_lr) * progress
