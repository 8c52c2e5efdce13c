"""Learning-rate schedules hit the values written out by hand at their landmarks."""

from __future__ import annotations

import math

import pytest

from culturemert.pretrain.schedule import ScheduleConfig, learning_rate


def test_linear_rewarm_then_redecay_hits_its_landmarks():
    schedule = ScheduleConfig(peak_lr=1e-3, warmup_steps=10, start_lr=0.0, end_lr=1e-5)
    lr = [learning_rate(schedule, step, 110) for step in range(0, 201)]
    assert lr[0] == 0.0
    assert lr[5] == pytest.approx(5e-4)  # halfway up the warm-up
    assert lr[10] == pytest.approx(1e-3)  # end of warm-up: the peak
    assert lr[60] == pytest.approx((1e-3 + 1e-5) / 2)  # halfway down, linear
    assert lr[110] == pytest.approx(1e-5)  # end of decay
    assert lr[200] == pytest.approx(1e-5)  # past the end: stays at the end value
    assert all(a <= b for a, b in zip(lr[:10], lr[1:11], strict=True))
    assert all(a >= b for a, b in zip(lr[10:110], lr[11:111], strict=True))


def test_cosine_redecay_follows_half_a_cosine():
    schedule = ScheduleConfig(peak_lr=1e-3, warmup_steps=10, end_lr=1e-5, decay="cosine")
    assert learning_rate(schedule, 10, 110) == pytest.approx(1e-3)
    quarter = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4))
    assert learning_rate(schedule, 35, 110) == pytest.approx(quarter)
    assert learning_rate(schedule, 60, 110) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(schedule, 110, 110) == pytest.approx(1e-5)


def test_rewarm_can_start_from_a_nonzero_rate():
    schedule = ScheduleConfig(peak_lr=4e-4, warmup_steps=4, start_lr=1e-4, end_lr=0.0)
    assert [learning_rate(schedule, s, 8) for s in range(5)] == pytest.approx(
        [1e-4, 1.75e-4, 2.5e-4, 3.25e-4, 4e-4]
    )


def test_constant_with_cooldown_holds_the_peak_then_cools_down_linearly():
    schedule = ScheduleConfig(
        kind="constant_cooldown", peak_lr=1e-3, warmup_steps=10, cooldown_steps=20, end_lr=0.0
    )
    assert learning_rate(schedule, 10, 100) == pytest.approx(1e-3)
    assert learning_rate(schedule, 50, 100) == pytest.approx(1e-3)
    assert learning_rate(schedule, 80, 100) == pytest.approx(1e-3)  # cooldown starts here
    assert learning_rate(schedule, 90, 100) == pytest.approx(5e-4)
    assert learning_rate(schedule, 100, 100) == pytest.approx(0.0)


def test_a_stage_without_decay_keeps_the_peak():
    warm_only = ScheduleConfig(peak_lr=2e-4, warmup_steps=20)
    assert learning_rate(warm_only, 20, 20) == pytest.approx(2e-4)
    constant = ScheduleConfig(kind="constant_cooldown", peak_lr=2e-4)
    assert {learning_rate(constant, s, 50) for s in range(51)} == {2e-4}
