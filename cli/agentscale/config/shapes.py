"""Load shapes: their schema, the level they ask for at time t, and their traffic phases.

A level is an arrival rate (requests/s) for the open model and a number of users for the
closed one. Each shape names its fields with the unit (``base_rps`` or ``base_users``) so a
scenario says what it means; ``units_error`` rejects the wrong unit for the model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from agentscale.config.fields import Duration, PositiveDuration
from agentscale.config.units import parse_duration

Model = Literal["open", "closed"]
MAX_RPS = 50_000.0  # per shape level: far beyond what one generator (or ten) can send
MAX_USERS = 100_000
Rate = Annotated[float, Field(ge=0, le=MAX_RPS, description="requests/s")]
Users = Annotated[int, Field(ge=0, le=MAX_USERS)]


class _Shape(BaseModel, ABC):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def unit_problems(self, model: Model) -> tuple[list[str], list[str]]:
        """(level fields missing under ``model``, level fields set in the other model's unit)."""
        want, other = ("rps", "users") if model == "open" else ("users", "rps")
        missing, wrong = [], []
        for name in type(self).model_fields:
            unit = name.rsplit("_", 1)[-1]
            if unit == want and getattr(self, name) is None and not name.startswith("max_"):
                missing.append(name)
            elif unit == other and getattr(self, name) is not None:
                wrong.append(name)
        return missing, wrong

    @abstractmethod
    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        """The level at each time of ``t`` (seconds from the start)."""

    def phase(self, t: float, duration: float) -> str:
        return "steady"

    def level(self, t: float, duration: float) -> float:
        return float(self.levels(np.array([t], dtype=float), duration)[0])

    def _pick(self, open_value: float | None, closed_value: float | None) -> float:
        return float(open_value if open_value is not None else (closed_value or 0.0))


class Constant(_Shape):
    kind: Literal["constant"]
    rps: Rate | None = None
    users: Users | None = None

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        return np.full_like(t, self._pick(self.rps, self.users))


class Poisson(_Shape):
    """A constant rate whose arrivals form a Poisson process (exponential gaps)."""

    kind: Literal["poisson"]
    rps: Rate | None = None

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        return np.full_like(t, float(self.rps or 0.0))


class Ramp(_Shape):
    kind: Literal["ramp"]
    from_rps: Rate | None = None
    to_rps: Rate | None = None
    from_users: Users | None = None
    to_users: Users | None = None
    over: Duration | None = Field(None, description="ramp length; the whole run by default")

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        start = self._pick(self.from_rps, self.from_users)
        end = self._pick(self.to_rps, self.to_users)
        over = self.over if self.over else duration
        return np.asarray(np.interp(t, [0.0, max(over, 1e-9)], [start, end]), dtype=float)

    def phase(self, t: float, duration: float) -> str:
        over = self.over if self.over else duration
        return "ramp" if t < over else "hold"


class Step(_Shape):
    kind: Literal["step"]
    start_rps: Rate | None = None
    step_rps: Rate | None = None
    max_rps: Rate | None = None
    start_users: Users | None = None
    step_users: Users | None = None
    max_users: Users | None = None
    every: PositiveDuration

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        start = self._pick(self.start_rps, self.start_users)
        step = self._pick(self.step_rps, self.step_users)
        top = self.max_rps if self.max_rps is not None else self.max_users
        values = start + step * np.floor(t / self.every)
        return np.minimum(values, top) if top is not None else values

    def phase(self, t: float, duration: float) -> str:
        return f"step-{int(t // self.every) + 1}"


class Spike(_Shape):
    """A base level with bursts to a peak: ``spike_for`` long, every ``every``."""

    kind: Literal["spike"]
    base_rps: Rate | None = None
    peak_rps: Rate | None = None
    base_users: Users | None = None
    peak_users: Users | None = None
    every: PositiveDuration
    spike_for: PositiveDuration
    first_at: Duration | None = Field(None, description="start of the first burst; every/2")
    recovery_for: Duration | None = Field(None, description="phase after a burst; spike_for")

    def _offset(self, t: np.ndarray) -> np.ndarray:
        first = self.every / 2 if self.first_at is None else self.first_at
        shifted = t - first
        return np.where(shifted >= 0, np.mod(shifted, self.every), -1.0)

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        base = self._pick(self.base_rps, self.base_users)
        peak = self._pick(self.peak_rps, self.peak_users)
        offset = self._offset(t)
        return np.where((offset >= 0) & (offset < self.spike_for), peak, base)

    def phase(self, t: float, duration: float) -> str:
        offset = float(self._offset(np.array([t]))[0])
        recovery = self.spike_for if self.recovery_for is None else self.recovery_for
        if 0 <= offset < self.spike_for:
            return "spike"
        if self.spike_for <= offset < self.spike_for + recovery:
            return "recovery"
        return "base"


class Sine(_Shape):
    """A diurnal wave: mean plus amplitude times sin(2 pi t / period)."""

    kind: Literal["sine"]
    mean_rps: Rate | None = None
    amplitude_rps: Rate | None = None
    mean_users: Users | None = None
    amplitude_users: Users | None = None
    period: PositiveDuration

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        mean = self._pick(self.mean_rps, self.mean_users)
        amplitude = self._pick(self.amplitude_rps, self.amplitude_users)
        return np.maximum(mean + amplitude * np.sin(2 * math.pi * t / self.period), 0.0)

    def phase(self, t: float, duration: float) -> str:
        return "high" if math.sin(2 * math.pi * t / self.period) >= 0 else "low"


class Stage(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    for_: Annotated[PositiveDuration, Field(alias="for")]
    rps: Rate | None = None
    users: Users | None = None
    ramp: bool = Field(False, description="ramp linearly from the previous stage's level")
    name: str | None = None


class Stages(_Shape):
    kind: Literal["stages"]
    stages: list[Stage] = Field(min_length=1)

    def unit_problems(self, model: Model) -> tuple[list[str], list[str]]:
        want, other = ("rps", "users") if model == "open" else ("users", "rps")
        missing = [
            f"stages.{i}.{want}" for i, s in enumerate(self.stages) if getattr(s, want) is None
        ]
        wrong = [f"stages.{i}.{other}" for i, s in enumerate(self.stages) if getattr(s, other)]
        return missing, wrong

    def _points(self) -> tuple[list[float], list[float]]:
        times, values, clock, previous = [], [], 0.0, None
        for stage in self.stages:
            level = float(stage.rps if stage.rps is not None else (stage.users or 0))
            times.append(clock)
            values.append(previous if stage.ramp and previous is not None else level)
            clock += stage.for_
            times.append(clock - 1e-9)
            values.append(level)
            previous = level
        return times, values

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        times, values = self._points()
        return np.where(t < times[-1], np.interp(t, times, values), 0.0)

    def phase(self, t: float, duration: float) -> str:
        clock = 0.0
        for i, stage in enumerate(self.stages):
            clock += stage.for_
            if t < clock:
                return stage.name or f"stage-{i + 1}"
        return "after"


class Replay(_Shape):
    """Arrival offsets read from a CSV file (seconds from the start, one per row)."""

    kind: Literal["replay"]
    file: str
    speed: PositiveFloat = 1.0

    def levels(self, t: np.ndarray, duration: float) -> np.ndarray:
        # The rate of a replay is whatever its offsets give; the scheduler never asks for it.
        return np.zeros_like(t)

    def phase(self, t: float, duration: float) -> str:
        return "replay"


Shape = Annotated[
    Constant | Poisson | Ramp | Step | Spike | Sine | Stages | Replay, Field(discriminator="kind")
]
OPEN_ONLY = {"poisson", "replay"}


def arrival_offsets(
    shape: _Shape,
    duration: float,
    *,
    poisson: bool,
    seed: int,
    replay_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Intended send times (seconds from the start) for the open model.

    The expected count up to t is the integral of the rate, Lambda(t). Even arrivals sit where
    Lambda crosses k + 1/2; Poisson arrivals where it crosses a sum of unit exponentials, which
    makes a Poisson process of rate r(t) for any shape.
    """
    if replay_offsets is not None:
        offsets = np.sort(replay_offsets) / getattr(shape, "speed", 1.0)
        return offsets[(offsets >= 0) & (offsets < duration)]
    if duration <= 0:
        return np.empty(0)
    step = max(0.001, duration / 2_000_000)
    grid = np.arange(0.0, duration + step, step)
    grid[-1] = min(grid[-1], duration)
    rates = shape.levels(grid, duration)
    cumulative = np.concatenate(([0.0], np.cumsum((rates[1:] + rates[:-1]) * 0.5 * np.diff(grid))))
    total = cumulative[-1]
    if poisson or isinstance(shape, Poisson):
        rng = np.random.default_rng(seed)
        expected = int(total + 6 * math.sqrt(total) + 10)
        marks = np.cumsum(rng.exponential(1.0, size=expected))
        marks = marks[marks < total]
    else:
        marks = np.arange(0.5, total, 1.0)
    # cumulative is non-decreasing; flat stretches (rate 0) map to their first instant.
    return np.asarray(np.interp(marks, cumulative, grid), dtype=float)


def parse_offsets_csv(text: str) -> np.ndarray:
    """Offsets in seconds from a CSV: a header ``offset``/``offset_s``/``t`` or a bare column."""
    rows = [line.split(",")[0].strip() for line in text.splitlines() if line.strip()]
    if rows and rows[0].lower() in {"offset", "offset_s", "t", "time", "seconds"}:
        rows = rows[1:]
    values = []
    for number, row in enumerate(rows, start=1):
        try:
            values.append(parse_duration(row))
        except ValueError as error:
            raise ValueError(f"row {number}: {error}") from None
    return np.array(values, dtype=float)
