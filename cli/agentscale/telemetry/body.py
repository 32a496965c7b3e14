"""Reading the agent trace out of a response (README "The trace"; docs/architecture.md).

The default shape is ``{"output", "status", "trace": {"steps", "events"}}``; a scenario's
``telemetry`` maps any other shape with JMESPath. A response without a trace still yields a
``Trace`` with nothing but its body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jmespath
import orjson

from agentscale.config.scenario import Telemetry

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
    """What a response says about itself. Token totals over the steps are ``PriceBook.tally``'s;
    ``input_tokens``/``output_tokens`` here are request-level figures (telemetry or ``usage``)."""

    body: Any = None
    status: str | None = None
    output: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    has_trace: bool = False


class TraceReader:
    def __init__(self, telemetry: Telemetry | None) -> None:
        self.mapping = {
            name: jmespath.compile(expression)
            for name, expression in (telemetry.model_dump() if telemetry else {}).items()
            if expression
        }

    def read(self, content: bytes) -> Trace:
        result = Trace()
        if content[:1] not in (b"{", b"[") and content.lstrip()[:1] not in (b"{", b"["):
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
        if self.mapping:
            self._read_mapped(result, body)
            return result
        trace = body.get("trace")
        if isinstance(trace, dict):
            steps, events = trace.get("steps"), trace.get("events")
            result.steps = steps if isinstance(steps, list) else []
            result.events = events if isinstance(events, list) else []
            result.has_trace = True
        status = body.get("status")
        result.status = status if status in STATUSES else None
        output = body.get("output")
        result.output = output if isinstance(output, str) else None
        usage = body.get("usage")
        if isinstance(usage, dict):  # OpenAI-style responses name their usage at the top
            tokens_in, tokens_out = token_fields(usage)
            result.input_tokens, result.output_tokens = as_int(tokens_in), as_int(tokens_out)
            model = body.get("model")
            result.model = model if isinstance(model, str) else None
        return result

    def _read_mapped(self, result: Trace, body: dict[str, Any]) -> None:
        plain = TraceReader(None).read(orjson.dumps(body))
        mapped = {name: expr.search(body) for name, expr in self.mapping.items()}
        steps = mapped.get("steps", plain.steps)
        events = mapped.get("events", plain.events)
        result.steps = steps if isinstance(steps, list) else []
        result.events = events if isinstance(events, list) else []
        result.has_trace = plain.has_trace or "steps" in mapped
        status = mapped.get("status", plain.status)
        result.status = status if status in STATUSES else None
        output = mapped.get("output", plain.output)
        result.output = output if isinstance(output, str) else None
        model = mapped.get("model", plain.model)
        result.model = model if isinstance(model, str) else None
        result.input_tokens = as_int(mapped.get("input_tokens", plain.input_tokens))
        result.output_tokens = as_int(mapped.get("output_tokens", plain.output_tokens))


def token_fields(source: Mapping[str, Any]) -> tuple[Any, Any]:
    """(input, output) token counts as the source gives them: OpenTelemetry GenAI names first,
    then the older ``prompt_tokens`` / ``completion_tokens`` (the one place for the aliases)."""
    tokens_in = source.get("input_tokens")
    if tokens_in is None:
        tokens_in = source.get("prompt_tokens")
    tokens_out = source.get("output_tokens")
    if tokens_out is None:
        tokens_out = source.get("completion_tokens")
    return tokens_in, tokens_out
