"""Parsing of the human units that scenarios use: durations, percentages, comparisons."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+$")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DURATION_HINT = "write a duration like 500ms, 30s, 5m, 1h30m (or a number of seconds)"
MAX_DURATION_S = 7 * 24 * 3600.0  # a week: longer than any run, and no overflow anywhere


def parse_duration(value: object) -> float:
    """Seconds from ``30s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        parts = value.split()
        if len(parts) == 1 and _NUMBER.fullmatch(parts[0]):
            seconds = float(parts[0])
        elif parts and all(_DURATION.fullmatch(part) for part in parts):
            # "1h 30m" is fine; "5 minutes" is not a duration, not "5m" plus noise.
            seconds = sum(float(n) * _SCALE[u] for n, u in _DURATION_PART.findall(value))
        else:
            raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"a duration cannot be negative or NaN ({value!r})")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than a week, the longest duration agentscale takes")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    minutes, secs = divmod(seconds, 60)
    if minutes == 0:
        return f"{secs:g}s"
    hours, minutes = divmod(int(minutes), 60)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if minutes else ""
    return text + (f"{secs:g}s" if secs else "")


def parse_fraction(value: object) -> float:
    """``10%`` -> 0.1; a bare number is taken as a fraction already (0.01 = 1%)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a fraction or percentage, got {value!r}")
    found: float | None = None
    if isinstance(value, int | float):
        found = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            found = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            found = None
    if found is None or not math.isfinite(found):
        raise ValueError(f"{value!r} is not a fraction; write 10% or 0.1")
    return found


Operator = Literal["<", "<=", ">", ">=", "==", "!="]
_COMPARISON = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*(%|ms|s)?\s*$")


@dataclass(frozen=True)
class Comparison:
    """A threshold such as ``< 8000`` or ``>= 0.95``, applied to a measured value."""

    op: Operator
    value: float

    def holds(self, measured: float) -> bool:
        return {
            "<": measured < self.value,
            "<=": measured <= self.value,
            ">": measured > self.value,
            ">=": measured >= self.value,
            "==": measured == self.value,
            "!=": measured != self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def parse_comparison(value: object) -> Comparison:
    if isinstance(value, Comparison):
        return value
    if isinstance(value, str):
        match = _COMPARISON.match(value)
        if match:
            op, number, unit = match.groups()
            value = float(number)
            if unit == "%":
                value /= 100.0  # not * 0.01: 95 * 0.01 is 0.9500000000000001
            elif unit == "s":
                value *= 1000.0  # thresholds on latencies are in milliseconds
            return Comparison(op, value)  # type: ignore[arg-type]
    raise ValueError(f"{value!r} is not a comparison; write '< 8000' or '>= 0.95'")


RATE_HINT = "write a rate like 2rps, 120rps or 0.5 (requests/s)"
_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(rps|/s|r/s)?\s*$", re.IGNORECASE)


def parse_rate(value: str) -> float:
    """An arrival rate in requests/s: ``2rps``, ``2/s`` or ``2``."""
    match = _RATE.match(value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a rate above zero; {RATE_HINT}")
    return float(match.group(1))
