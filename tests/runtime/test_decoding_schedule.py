"""The reveal schedule and temperature annealing, on their own (no model)."""

from __future__ import annotations

import itertools
import math

import pytest

from mega_runtime.decoding.schedule import (
    CVQMAE_EVAL_SAMPLING,
    CVQMAE_SAMPLING,
    VQMAE_SAMPLING,
    RevealSchedule,
    SamplingConfig,
    cosine_hidden_count,
)


def test_default_schedule_follows_the_cosine_rule_and_ends_full():
    schedule = RevealSchedule.set_timesteps(54, CVQMAE_SAMPLING)
    assert [schedule.visible_after(k) for k in range(5)] == [3, 11, 23, 38, 54]
    assert [schedule.hidden_after(k) for k in range(5)] == [51, 43, 31, 16, 0]
    assert RevealSchedule.set_timesteps(54, SamplingConfig(steps=1)).hidden == (0,)


def test_every_step_reveals_at_least_one_position_even_when_steps_outnumber_positions():
    schedule = RevealSchedule.set_timesteps(10, VQMAE_SAMPLING)
    visible = [schedule.visible_after(k) for k in range(schedule.steps)]
    assert visible[-1] == 10
    assert all(b >= a for a, b in itertools.pairwise(visible))
    assert visible[:10] == list(range(1, 11))  # one per step until all are shown


def test_completion_schedule_runs_over_the_free_positions_only():
    schedule = RevealSchedule.set_timesteps(34, CVQMAE_SAMPLING)
    assert schedule.visible_after(0) == 34 - math.floor(34 * math.cos(math.pi / 10))


def test_official_rule_keeps_one_position_hidden_after_the_last_step():
    schedule = RevealSchedule.set_timesteps(54, CVQMAE_SAMPLING)
    hidden, visible = 54, []
    for step in range(5):
        hidden = schedule.official_hidden_after(step, hidden)
        visible.append(54 - hidden)
    assert visible == [3, 11, 23, 38, 53]
    assert schedule.official_hidden_after(2, 1) == 1  # forced ≥ 1
    assert cosine_hidden_count(54, 4, 5) == 0


def test_temperatures_follow_the_annealing_rules():
    cvqmae = RevealSchedule.set_timesteps(54, CVQMAE_SAMPLING)
    assert [cvqmae.temperature_at(k) for k in range(5)] == pytest.approx([3.6, 2.7, 1.8, 0.9, 0.0])
    vqmae = RevealSchedule.set_timesteps(54, VQMAE_SAMPLING)
    assert vqmae.temperature_at(0) == pytest.approx(0.95 * (1.3 * 0.95) ** 5)
    assert vqmae.temperature_at(19) == 0.0


def test_the_official_evaluation_temperature_is_one():
    assert CVQMAE_EVAL_SAMPLING.temperature == 1.0 and CVQMAE_EVAL_SAMPLING.steps == 5
    assert CVQMAE_SAMPLING.temperature == 4.5


def test_configs_and_schedules_reject_nonsense():
    with pytest.raises(ValueError, match="steps"):
        SamplingConfig(steps=0)
    with pytest.raises(ValueError, match="annealing"):
        SamplingConfig(annealing="cubic")
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="num_positions"):
        RevealSchedule.set_timesteps(-1, CVQMAE_SAMPLING)
