"""Pydantic field types shared by the schemas: durations, fractions, comparisons."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

from agentscale.config.units import Comparison, format_duration, parse_comparison, parse_fraction
from agentscale.config.units import parse_duration as _parse_duration

_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|h|m|s)\s*)+$|^\s*\d+(\.\d+)?\s*$"},
        {"type": "number", "minimum": 0},
    ],
    "description": "a duration: 500ms, 30s, 5m, 1h30m, or seconds as a number",
}


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than zero")
    return value


Duration = Annotated[
    float,
    BeforeValidator(_parse_duration),
    WithJsonSchema(_DURATION_SCHEMA),
    PlainSerializer(format_duration, when_used="json"),
]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]

Fraction = Annotated[
    float,
    BeforeValidator(parse_fraction),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": r"^-?\d+(\.\d+)?%$"}, {"type": "number"}]}
    ),
]

ComparisonField = Annotated[
    Comparison,
    BeforeValidator(parse_comparison),
    WithJsonSchema({"type": "string", "pattern": r"^\s*(<=|>=|==|!=|<|>)\s*-?\d+(\.\d+)?"}),
    PlainSerializer(str),
]
