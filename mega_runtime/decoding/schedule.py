"""The reveal schedule and temperature annealing of iterative masked decoding.

A :class:`RevealSchedule` is a small configured object in the spirit of diffusers'
masked-token scheduler: it is built once for a number of positions and steps
(:meth:`RevealSchedule.set_timesteps`) and answers how many positions are still
hidden after each step (:meth:`RevealSchedule.hidden_after`) and which Gumbel
temperature a step uses (:meth:`RevealSchedule.temperature_at`). The samplers own
the loop; the schedule owns the numbers.

Cosine rule (official): after step k of n, ⌊m·cos(π/2 · (k+1)/n)⌋ of the m decoded
positions stay hidden. Annealing (official): CVQMAE ``T·(1 − r)``, VQMAE
``(1 − r)·(T·(1 − r))⁵`` with r = (k+1)/n.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mega_runtime import defaults

Annealing = Callable[[float, float], float]


def linear_annealing(temperature: float, r: float) -> float:
    """CVQMAE's rule: ``temperature · (1 − r)`` at progress r = (step+1)/steps."""
    return temperature * (1.0 - r)


def power5_annealing(temperature: float, r: float) -> float:
    """VQMAE's (pre-trained model) rule: ``(1 − r) · (temperature · (1 − r))⁵``."""
    return (1.0 - r) * (temperature * (1.0 - r)) ** 5


ANNEALING: dict[str, Annealing] = {"linear": linear_annealing, "power5": power5_annealing}


@dataclass(frozen=True)
class SamplingConfig:
    """Iterative decoding settings. Defaults are the official CVQMAE ones (5 steps, 4.5, linear).

    temperature: Gumbel temperature before annealing (unitless). 4.5 is the default of the official
    ``CVQMAE.generate`` and this product's default: diverse hypotheses. The official evaluation
    behind the published stochastic numbers (``test_mega.py`` ``eval_stochastic``: 25 samples,
    best-of-25 metrics) called ``generate(nb_steps=5, gen_temp=1)``, i.e. temperature **1**; use
    ``SamplingConfig(temperature=1.0)`` with the ``official`` sampler to reproduce those numbers.
    """

    steps: int = defaults.SAMPLING_STEPS
    temperature: float = defaults.SAMPLING_TEMPERATURE
    annealing: str = defaults.SAMPLING_ANNEALING

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")
        if self.annealing not in ANNEALING:
            raise ValueError(f"unknown annealing {self.annealing!r}; expected one of {', '.join(ANNEALING)}")

    def temperature_at(self, step: int) -> float:
        """The annealed temperature of ``step`` (0-based)."""
        return ANNEALING[self.annealing](self.temperature, (step + 1) / self.steps)


CVQMAE_SAMPLING = SamplingConfig()
VQMAE_SAMPLING = SamplingConfig(
    steps=defaults.GENERATE_STEPS, temperature=defaults.GENERATE_TEMPERATURE, annealing=defaults.GENERATE_ANNEALING
)
#: The official evaluation's setting for the published stochastic (best-of-25) numbers.
CVQMAE_EVAL_SAMPLING = SamplingConfig(temperature=1.0)


def cosine_hidden_count(num_hidden: int, step: int, steps: int) -> int:
    """Positions still hidden after ``step`` by the cosine rule: ⌊n·cos(π/2 · (step+1)/steps)⌋."""
    return math.floor(num_hidden * math.cos(math.pi / 2 * (step + 1) / steps))


@dataclass(frozen=True)
class RevealSchedule:
    """How many of ``num_positions`` decoded positions stay hidden after each step, and the temperatures.

    Build with :meth:`set_timesteps`. ``hidden`` holds the count after each step for the
    default (fill-everything) sampler: every step reveals at least one position and the last
    reveals all — for 54 positions and 5 steps, visible counts 3, 11, 23, 38, 54.
    The official rule, which depends on the current hidden count of row 0, is
    :meth:`official_hidden_after`.
    """

    num_positions: int
    config: SamplingConfig
    hidden: tuple[int, ...]

    @classmethod
    def set_timesteps(cls, num_positions: int, config: SamplingConfig) -> RevealSchedule:
        """The schedule for decoding ``num_positions`` hidden positions with ``config``."""
        if num_positions < 0:
            raise ValueError(f"num_positions must be non-negative, got {num_positions}")
        hidden, counts = num_positions, []
        for step in range(config.steps):
            if step == config.steps - 1 or hidden <= 1:
                hidden = 0
            else:
                hidden = max(1, min(hidden - 1, cosine_hidden_count(num_positions, step, config.steps)))
            counts.append(hidden)
        return cls(num_positions, config, tuple(counts))

    @property
    def steps(self) -> int:
        return self.config.steps

    def hidden_after(self, step: int) -> int:
        """Positions still hidden after ``step`` (0-based) by the default sampler."""
        return self.hidden[step]

    def visible_after(self, step: int) -> int:
        """Positions revealed after ``step`` (0-based): ``num_positions − hidden_after(step)``."""
        return self.num_positions - self.hidden[step]

    def temperature_at(self, step: int) -> float:
        """The annealed Gumbel temperature of ``step`` (0-based)."""
        return self.config.temperature_at(step)

    def official_hidden_after(self, step: int, hidden_now: int) -> int:
        """The official count to re-mask after ``step``: ``max(1, min(hidden_now − 1, cosine count))``.

        hidden_now: positions hidden before the step (row 0's count in the official batch). The
        result is at least 1, so the official loop never reveals its last position.
        """
        return max(1, min(hidden_now - 1, cosine_hidden_count(self.num_positions, step, self.steps)))
