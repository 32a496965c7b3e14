"""The demo agent's trace as OpenTelemetry spans (``--telemetry otlp|both``), sent with the
real SDK and its OTLP/HTTP exporter to ``OTEL_EXPORTER_OTLP_ENDPOINT``, the way an agent built
on a framework reports itself: an ``invoke_agent`` span under the caller's trace context, and a
span per step in the GenAI conventions (chat, execute_tool, retrieval), guardrails in
OpenInference's."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

OPERATION = {"llm": "chat", "tool": "execute_tool", "retrieval": "retrieval"}


class SpanExport:
    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.provider = TracerProvider(resource=Resource.create({"service.name": "demo-agent"}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("agentscale.demo")

    def request(
        self,
        headers: dict[str, str],
        started_ns: int,
        ended_ns: int,
        steps: list[dict[str, Any]],
        status: str,
    ) -> None:
        """The spans of one answered request, from what the agent recorded of it."""
        parent = TraceContextTextMapPropagator().extract(headers)
        root = self.tracer.start_span(
            "invoke_agent support", context=parent, kind=SpanKind.SERVER, start_time=started_ns,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
        )  # fmt: skip
        inside = trace.set_span_in_context(root)
        for step in steps:
            start = started_ns + int(float(step.get("start_ms") or 0.0) * 1e6)
            end = start + int(float(step.get("latency_ms") or 0.0) * 1e6)
            span = self.tracer.start_span(
                _name(step), context=inside, kind=SpanKind.CLIENT if step["kind"] != "guardrail"
                else SpanKind.INTERNAL, start_time=start, attributes=_attributes(step),
            )  # fmt: skip
            if step.get("outcome") not in (None, "ok"):
                span.set_status(Status(StatusCode.ERROR, str(step.get("error") or "")))
            span.end(end_time=end)
        if status == "error":
            root.set_status(Status(StatusCode.ERROR))
        root.end(end_time=ended_ns)

    def close(self) -> None:
        self.provider.shutdown()


def _name(step: dict[str, Any]) -> str:
    if step["kind"] == "llm":
        return f"chat {step.get('model')}"
    return f"{OPERATION.get(step['kind'], step['kind'])} {step.get('name')}"


def _attributes(step: dict[str, Any]) -> dict[str, Any]:
    kind = step["kind"]
    if kind == "guardrail":
        return {"openinference.span.kind": "GUARDRAIL", "guardrail.rule": str(step.get("rule"))}
    found: dict[str, Any] = {"gen_ai.operation.name": OPERATION.get(kind, kind)}
    if kind == "llm":
        found["gen_ai.request.model"] = str(step.get("model"))
        found["gen_ai.usage.input_tokens"] = int(step.get("input_tokens") or 0)
        found["gen_ai.usage.output_tokens"] = int(step.get("output_tokens") or 0)
        found["gen_ai.agentscale.task"] = str(step.get("name"))
    else:
        found["gen_ai.tool.name"] = str(step.get("name"))
    if step.get("error"):
        found["error.type"] = str(step["error"])
    return found
