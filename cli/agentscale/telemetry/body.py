"""Reading the agent trace out of a response body (README "The trace").

The default shape is ``{"output", "status", "trace": {"steps", "events"}}``, with an OpenAI-style
``usage`` block read too; a scenario's ``telemetry`` maps any other shape with JMESPath. Every
value goes through ``telemetry.trace``'s checks. A response without a trace still yields a
``Trace`` with nothing but its body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions
import orjson

from agentscale.config.scenario import Telemetry
from agentscale.telemetry.trace import (
    STATUSES,
    TOKEN_ALIASES,
    Step,
    count,
    read_events,
    read_steps,
    text,
)


@dataclass(slots=True)
class Trace:
    """What a response says about itself. Token totals over the steps are ``PriceBook.tally``'s;
    ``input_tokens``/``output_tokens`` here are request-level figures (telemetry or ``usage``)."""

    body: Any = None
    status: str | None = None
    output: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    steps: list[Step] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    has_trace: bool = False
    steps_reported: bool = False  # the agent sent a list of steps (even an empty one)
    events_reported: bool = False  # the agent sent a list of events (even an empty one)
    warnings: list[str] = field(default_factory=list)  # fields the agent sent that were bad


class TraceReader:
    def __init__(self, telemetry: Telemetry | None) -> None:
        self.mapping = {
            name: jmespath.compile(expression)
            for name, expression in (telemetry.mapping() if telemetry else {}).items()
        }
        self.default_model = telemetry.default_model if telemetry else None

    def read(self, content: bytes) -> Trace:
        result = Trace()
        if content[:1] not in (b"{", b"[") and content.lstrip()[:1] not in (b"{", b"["):
            if content:
                result.output = content.decode("utf-8", "replace")
            return result
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = _lenient(content, result.warnings)
            if body is None:
                result.output = content.decode("utf-8", "replace")
                return result
        result.body = body
        if not isinstance(body, dict):
            return result
        _read_contract(result, body)
        if self.mapping:
            self._read_mapped(result, body)
        if result.model is None:
            result.model = self.default_model  # for steps and usage that name no model
        return result

    def _read_mapped(self, result: Trace, body: dict[str, Any]) -> None:
        """The mapping's expressions over the contract's reading: what they find wins."""
        warnings = result.warnings
        mapped = {}
        for name, expression in self.mapping.items():
            try:
                mapped[name] = expression.search(body)
            except (jmespath.exceptions.JMESPathError, TypeError, ValueError) as error:
                # An expression that cannot be evaluated on this body finds nothing here.
                warnings.append(f"telemetry.{name}: {type(error).__name__}: {error}"[:300])
        if "steps" in mapped:
            result.steps = read_steps(mapped["steps"], warnings)
            result.has_trace = True
            result.steps_reported = isinstance(mapped["steps"], list)
        if "events" in mapped:
            result.events = read_events(mapped["events"], warnings)
            result.events_reported = isinstance(mapped["events"], list)
        if "status" in mapped:
            status = mapped["status"]
            result.status = status if isinstance(status, str) and status in STATUSES else None
        if "output" in mapped:
            output = mapped["output"]
            result.output = output if isinstance(output, str) else None
        if "model" in mapped:
            result.model = text(mapped["model"])
        if "input_tokens" in mapped and mapped["input_tokens"] is not None:
            result.input_tokens = count(mapped["input_tokens"], "input_tokens", warnings)
        if "output_tokens" in mapped and mapped["output_tokens"] is not None:
            result.output_tokens = count(mapped["output_tokens"], "output_tokens", warnings)


# A \uD800-\uDFFF escape that is not half of a pair: JSON allows it, UTF-8 cannot hold it.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<![0-9a-fA-F]{4})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _lenient(content: bytes, warnings: list[str]) -> Any:
    """The body once lone surrogate escapes are replaced (so that a status of "error" in it is
    still read); None if it is not JSON even then."""
    fixed, count = _LONE_SURROGATE.subn(rb"\\ufffd", content)
    if count:
        try:
            body = orjson.loads(fixed)
        except orjson.JSONDecodeError:
            pass
        else:
            warnings.append(f"body: {count} lone surrogate escape(s) replaced by U+FFFD")
            return body
    if _NON_FINITE.search(fixed) is None:
        return None
    # NaN and Infinity are not JSON, but Python's json module writes them: read the body with
    # them, so that only the fields holding them are dropped (each with its own warning).
    try:
        body = json.loads(fixed.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    warnings.append("body: NaN or Infinity in it (not JSON); the fields holding them are dropped")
    return body


_NON_FINITE = re.compile(rb"\b(?:NaN|-?Infinity)\b")


def _read_contract(result: Trace, body: dict[str, Any]) -> None:
    warnings = result.warnings
    trace = body.get("trace")
    if isinstance(trace, dict):
        steps, events = trace.get("steps"), trace.get("events")
        result.steps = read_steps(steps, warnings)
        result.events = read_events(events, warnings)
        result.has_trace = True
        result.steps_reported = isinstance(steps, list)
        result.events_reported = isinstance(events, list)
    status = body.get("status")
    result.status = status if isinstance(status, str) and status in STATUSES else None
    output = body.get("output")
    result.output = output if isinstance(output, str) else None
    usage = body.get("usage")
    if isinstance(usage, dict):  # OpenAI-style responses name their usage at the top
        tokens = {TOKEN_ALIASES.get(k, k): v for k, v in usage.items() if v is not None}
        if "input_tokens" in tokens:
            result.input_tokens = count(tokens["input_tokens"], "usage.input_tokens", warnings)
        if "output_tokens" in tokens:
            result.output_tokens = count(tokens["output_tokens"], "usage.output_tokens", warnings)
        result.model = text(body.get("model"))
