"""A trace's steps and events as agentscale keeps them, read from whatever the agent sent.

Every value is checked at this edge, field by field: a number sent as a string is read with a
warning; a negative, NaN, infinite or absurdly large one is dropped (None) with a warning; a
step that is not an object is skipped with a warning. A bad field never crashes the engine,
never becomes a negative cost or a silent zero, and never overflows a Parquet column: the
warnings are counted and named on the request (``trace_warnings``).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

STEP_KINDS = frozenset({"llm", "retrieval", "tool", "guardrail"})
STATUSES = frozenset({"ok", "degraded", "error"})
# OpenTelemetry GenAI names first; the older OpenAI names are read when those are absent.
TOKEN_ALIASES = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}

MAX_STEPS = 1_000  # per request; more are dropped with a warning
MAX_TOKENS = 100_000_000  # per step or request
MAX_COUNT = 1_000_000  # attempts, top_k
MAX_MS = 86_400_000.0  # a day
TEXT = 200  # characters kept of a name, model, outcome...
LONG_TEXT = 500  # ... and of an error message


class Step(NamedTuple):
    """One step of a trace, in the order of ``steps.parquet``'s columns after the index."""

    kind: str  # llm | retrieval | tool | guardrail | other
    kind_detail: str | None  # the kind the agent gave
    name: str | None
    latency_ms: float | None
    attempts: int | None
    outcome: str | None
    error: str | None
    cache: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    top_k: int | None
    chunk_tokens: int | None
    action: str | None
    rule: str | None
    start_ms: float | None  # from the request's send
    source: str  # body or otlp


# field -> (slot in Step, how it is read)
_FIELDS: dict[str, tuple[int, str]] = {
    "kind": (1, "text"),
    "name": (2, "text"),
    "latency_ms": (3, "ms"),
    "attempts": (4, "count"),
    "outcome": (5, "text"),
    "error": (6, "long"),
    "cache": (7, "text"),
    "model": (8, "text"),
    "input_tokens": (9, "tokens"),
    "prompt_tokens": (9, "alias"),
    "output_tokens": (10, "tokens"),
    "completion_tokens": (10, "alias"),
    "cached_input_tokens": (11, "tokens"),
    "top_k": (12, "count"),
    "chunk_tokens": (13, "tokens"),
    "action": (14, "text"),
    "rule": (15, "text"),
    "start_ms": (16, "ms"),
}
_LIMITS = {"tokens": MAX_TOKENS, "alias": MAX_TOKENS, "count": MAX_COUNT}


def count(value: Any, where: str, warnings: list[str], limit: int = MAX_TOKENS) -> int | None:
    """A whole number from 0 to ``limit``, or None with a warning."""
    if type(value) is int:
        if 0 <= value <= limit:
            return value
        warnings.append(f"{where}: {_out_of_range(value, limit)}")
        return None
    number = _number(value, where, warnings)
    if number is None:
        return None
    if not 0 <= number <= limit:
        warnings.append(f"{where}: {_out_of_range(number, limit)}")
        return None
    return int(number)


def millis(value: Any, where: str, warnings: list[str]) -> float | None:
    """A duration in milliseconds from 0 to a day, or None with a warning."""
    if (type(value) is float or type(value) is int) and 0 <= value <= MAX_MS:
        return float(value)
    number = _number(value, where, warnings)
    if number is None:
        return None
    if not 0 <= number <= MAX_MS:
        warnings.append(f"{where}: {_out_of_range(number, MAX_MS)}")
        return None
    return number


# Terminal escapes and other control characters: an agent's step name is printed in tables,
# and an escape sequence in it must not repaint the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: str) -> str:
    return _CONTROL.sub("\ufffd", value) if _CONTROL.search(value) else value


def text(value: Any, limit: int = TEXT) -> str | None:
    if type(value) is str:
        return printable(value if len(value) <= limit else value[:limit])
    if value is None:
        return None
    return printable(str(value)[:limit])


def _number(value: Any, where: str, warnings: list[str]) -> float | None:
    if isinstance(value, bool):
        warnings.append(f"{where}: not a number ({value!r})")
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            warnings.append(f"{where}: not a number ({value[:40]!r})")
            return None
        warnings.append(f"{where}: a number sent as a string ({value[:40]!r})")
    else:
        warnings.append(f"{where}: not a number ({type(value).__name__})")
        return None
    if not math.isfinite(number):
        warnings.append(f"{where}: {value!r} is not a finite number")
        return None
    return number


def _out_of_range(value: float, limit: float) -> str:
    return f"negative ({value:g})" if value < 0 else f"{value:g} is beyond {limit:g}"


def read_steps(raw: Any, warnings: list[str]) -> list[Step]:
    """The steps of a trace, each checked; ``raw`` is whatever the agent sent as ``steps``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        warnings.append(f"steps: not a list ({type(raw).__name__})")
        return []
    if len(raw) > MAX_STEPS:
        warnings.append(f"steps: {len(raw):,} steps, the first {MAX_STEPS:,} kept")
        raw = raw[:MAX_STEPS]
    steps = []
    for index, item in enumerate(raw):
        if isinstance(item, dict):
            steps.append(read_step(item, index, warnings))
        else:
            warnings.append(f"steps[{index}]: not an object ({type(item).__name__}), skipped")
    return steps


def read_step(raw: dict[str, Any], index: int, warnings: list[str]) -> Step:
    # Per request and step, in the load engine's hot path: a value of the expected type and
    # range is taken as it is; only an unusual one goes through the checks that warn.
    slots: list[Any] = [None] * 17 + ["body"]
    for key, value in raw.items():
        spec = _FIELDS.get(key)
        if spec is None or value is None:
            continue
        slot, how = spec
        kind = type(value)
        if how == "text":
            if kind is str and len(value) <= TEXT and value.isascii() and value.isprintable():
                slots[slot] = value
            else:
                slots[slot] = text(value)
        elif how == "ms":
            if (kind is float or kind is int) and 0 <= value <= MAX_MS:
                slots[slot] = float(value)
            else:
                slots[slot] = millis(value, f"steps[{index}].{key}", warnings)
        elif how == "long":
            slots[slot] = text(value, LONG_TEXT)
        elif how == "alias":
            if slots[slot] is None and raw.get(TOKEN_ALIASES[key]) is None:
                slots[slot] = count(value, f"steps[{index}].{key}", warnings, MAX_TOKENS)
        elif kind is int and 0 <= value <= _LIMITS[how]:
            slots[slot] = value
        else:
            slots[slot] = count(value, f"steps[{index}].{key}", warnings, _LIMITS[how])
    given = slots[1]
    slots[0] = given if given in STEP_KINDS else "other"
    cached, tokens_in = slots[11], slots[9]
    if cached is not None and tokens_in is not None and cached > tokens_in:
        warnings.append(f"steps[{index}].cached_input_tokens: {cached} > input_tokens {tokens_in}")
        slots[11] = tokens_in
    return _new_step(Step, slots)


_new_step = tuple.__new__  # a NamedTuple from a list without _make's extra call


def longer_than(steps: list[Step], limit_ms: float, warnings: list[str]) -> list[Step]:
    """Steps no longer than their request (``limit_ms``): a longer one is cut to it."""
    if not any(s.latency_ms is not None and s.latency_ms > limit_ms for s in steps):
        return steps
    out = []
    for index, step in enumerate(steps):
        if step.latency_ms is not None and step.latency_ms > limit_ms:
            warnings.append(
                f"steps[{index}].latency_ms: {step.latency_ms:g} ms, longer than the request "
                f"({limit_ms:.0f} ms), cut to it"
            )
            step = step._replace(latency_ms=limit_ms)
        out.append(step)
    return out


def unattributed(steps: list[Step], service_ms: float) -> float | None:
    """The service time that no step accounts for: the request's length minus the union of its
    steps' intervals. None unless every step says when it started (or there is no step)."""
    if not steps:
        return None
    intervals = []
    for step in steps:
        if step.start_ms is None or step.latency_ms is None:
            return None
        start = min(max(step.start_ms, 0.0), service_ms)
        intervals.append((start, min(start + step.latency_ms, service_ms)))
    intervals.sort()
    covered, reach = 0.0, 0.0
    for start, end in intervals:
        if end <= reach:
            continue
        covered += end - max(start, reach)
        reach = end
    return max(service_ms - covered, 0.0)


def read_events(raw: Any, warnings: list[str]) -> list[dict[str, Any]]:
    """The events of a trace: objects with a string ``type``; anything else is dropped."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        warnings.append(f"events: not a list ({type(raw).__name__})")
        return []
    events = []
    for index, item in enumerate(raw[:MAX_STEPS]):
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            events.append(item)
        else:
            warnings.append(f"events[{index}]: not an object with a type, skipped")
    return events
