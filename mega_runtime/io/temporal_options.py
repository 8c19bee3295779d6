"""The ``temporal`` object of a video ``infer`` request (docs/protocol.md), checked once (stdlib only).

:class:`TemporalOptions` holds the choices the server hands to ``mega_runtime.pipeline.temporal`` (which this
layer cannot import); :func:`parse_temporal_options` checks a request's object — known keys only
(:data:`TEMPORAL_KEYS`), each of its type and range — and refuses a bad one with :class:`TemporalOptionsError`
(message and hint; the protocol turns it into a ``bad_request`` reply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mega_runtime import defaults
from mega_runtime.errors import MegaError

#: Keys of an ``infer`` request's ``temporal`` object.
TEMPORAL_KEYS = ("path", "smooth", "min_cutoff", "beta", "d_cutoff", "causal", "smoothness")


class TemporalOptionsError(MegaError):
    """A ``temporal`` object of a request has an unknown key, or a value of the wrong type or out of range."""

    code = "temporal_options_invalid"


@dataclass(frozen=True)
class TemporalOptions:
    """The ``temporal`` object of a video ``infer`` (docs/protocol.md), checked, with the defaults filled in.

    ``path`` ``zero`` / ``coherent``; ``smooth`` One-Euro on/off; ``min_cutoff`` (Hz, > 0), ``beta`` (Hz per m/s,
    ≥ 0), ``d_cutoff`` (Hz, > 0) and ``causal`` (forward-only instead of forwards-and-backwards) set the filter;
    ``smoothness`` (nats per (m/s)², ≥ 0) weighs the coherent path — as ``infer --path/--smooth/--one-euro-*/
    --path-smoothness``.
    """

    path: str = defaults.TEMPORAL_PATH
    smooth: bool = defaults.SMOOTH
    min_cutoff: float = defaults.ONE_EURO_MIN_CUTOFF_HZ
    beta: float = defaults.ONE_EURO_BETA
    d_cutoff: float = defaults.ONE_EURO_D_CUTOFF_HZ
    causal: bool = defaults.ONE_EURO_CAUSAL
    smoothness: float = defaults.PATH_SMOOTHNESS_WEIGHT

    @property
    def does_anything(self) -> bool:
        """False for the plain result (hypothesis 0, no smoothing): nothing to compute."""
        return self.path != "zero" or self.smooth


def parse_temporal_options(value: Any) -> TemporalOptions | None:
    """The ``temporal`` object checked: known keys only, each of its type and range; None when absent."""
    if value is None:
        return None
    keys = ", ".join(TEMPORAL_KEYS)
    if not isinstance(value, dict):
        raise TemporalOptionsError(f"'temporal' must be an object with some of {keys}")
    unknown = sorted(set(value) - set(TEMPORAL_KEYS))
    if unknown:
        raise TemporalOptionsError(f"'temporal' has unknown key(s) {', '.join(map(repr, unknown))}", hint=f"use {keys}")
    path = value.get("path", defaults.TEMPORAL_PATH)
    if path not in defaults.TEMPORAL_PATHS:
        choices = " or ".join(map(repr, defaults.TEMPORAL_PATHS))
        raise TemporalOptionsError(f"'temporal.path' must be {choices}, got {path!r}")
    flags: dict[str, bool] = {}
    for key, default in (("smooth", defaults.SMOOTH), ("causal", defaults.ONE_EURO_CAUSAL)):
        flag = value.get(key, default)
        if not isinstance(flag, bool):
            raise TemporalOptionsError(f"'temporal.{key}' must be true or false, got {flag!r}")
        flags[key] = flag
    numbers: dict[str, float] = {}
    for key, fallback, positive, unit in (
        ("min_cutoff", defaults.ONE_EURO_MIN_CUTOFF_HZ, True, "Hz"),
        ("beta", defaults.ONE_EURO_BETA, False, "Hz per m/s"),
        ("d_cutoff", defaults.ONE_EURO_D_CUTOFF_HZ, True, "Hz"),
        ("smoothness", defaults.PATH_SMOOTHNESS_WEIGHT, False, "nats per (m/s)²"),
    ):
        number = value.get(key, fallback)
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not math.isfinite(number)
            or number < 0
            or (positive and number == 0)
        ):
            bound = "> 0" if positive else "≥ 0"
            raise TemporalOptionsError(f"'temporal.{key}' must be a number {bound} ({unit}), got {number!r}")
        numbers[key] = float(number)
    return TemporalOptions(
        path=path,
        smooth=flags["smooth"],
        causal=flags["causal"],
        min_cutoff=numbers["min_cutoff"],
        beta=numbers["beta"],
        d_cutoff=numbers["d_cutoff"],
        smoothness=numbers["smoothness"],
    )
