"""Reading the agent trace out of a response (DESIGN "The agent trace contract").

The default shape is ``{"output", "status", "trace": {"steps", "events"}}``; a scenario's
``telemetry`` maps any other shape with JMESPath. A response without a trace still yields a
``Trace`` with nothing but its body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jmespath
import orjson

from agentscale.scenario import Telemetry

STEP_KINDS = frozenset({"llm", "retrieval", "tool", "guardrail"})
STATUSES = frozenset({"ok", "degraded", "error"})


def as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:
        return int(value)
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


@dataclass(slots=True)
class Trace:
    body: Any = None
    status: str | None = None
    output: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    has_trace: bool = False


def _tokens(step: dict[str, Any], name: str, alias: str) -> int | None:
    value = step.get(name)
    return as_int(value if value is not None else step.get(alias))


class TraceReader:
    def __init__(self, telemetry: Telemetry | None) -> None:
        self.mapping = {
            name: jmespath.compile(expression)
            for name, expression in (telemetry.model_dump() if telemetry else {}).items()
            if expression
        }

    def read(self, content: bytes) -> Trace:
        result = Trace()
        head = content[:1]
        if head not in (b"{", b"["):
            stripped = content.lstrip()[:1]
            if stripped not in (b"{", b"["):
                if content:
                    result.output = content.decode("utf-8", "replace")
                return result
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            result.output = content.decode("utf-8", "replace")
            return result
        result.body = body
        if not isinstance(body, dict):
            return result
        mapped = {name: expr.search(body) for name, expr in self.mapping.items()}
        trace = body.get("trace")
        trace = trace if isinstance(trace, dict) else {}
        steps = mapped["steps"] if "steps" in mapped else trace.get("steps")
        events = mapped["events"] if "events" in mapped else trace.get("events")
        result.steps = [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
        result.events = (
            [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
        )
        result.has_trace = bool(trace) or "steps" in mapped
        status = mapped["status"] if "status" in mapped else body.get("status")
        result.status = status if status in STATUSES else None
        output = mapped["output"] if "output" in mapped else body.get("output")
        result.output = output if isinstance(output, str) else None
        model = mapped.get("model")
        result.model = model if isinstance(model, str) else None
        self._count_tokens(result, body, mapped)
        return result

    @staticmethod
    def _count_tokens(result: Trace, body: dict[str, Any], mapped: dict[str, Any]) -> None:
        total_in = total_out = total_cached = None
        for step in result.steps:
            tokens_in = _tokens(step, "input_tokens", "prompt_tokens")
            tokens_out = _tokens(step, "output_tokens", "completion_tokens")
            cached = as_int(step.get("cached_input_tokens"))
            if tokens_in is not None:
                total_in = (total_in or 0) + tokens_in
            if tokens_out is not None:
                total_out = (total_out or 0) + tokens_out
            if cached is not None:
                total_cached = (total_cached or 0) + cached
        usage = body.get("usage")
        if total_in is None and isinstance(usage, dict):
            total_in = _tokens(usage, "input_tokens", "prompt_tokens")
            total_out = _tokens(usage, "output_tokens", "completion_tokens")
            if result.model is None and isinstance(body.get("model"), str):
                result.model = body["model"]
        if "input_tokens" in mapped:
            total_in = as_int(mapped["input_tokens"])
        if "output_tokens" in mapped:
            total_out = as_int(mapped["output_tokens"])
        result.input_tokens, result.output_tokens = total_in, total_out
        result.cached_input_tokens = total_cached
