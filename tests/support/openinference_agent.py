"""An agent that reports itself in the OpenInference conventions (as the Arize/Phoenix
instrumentations do: ``openinference.span.kind``, ``llm.token_count.*``, ``tool.name``, every
span INTERNAL), through the OpenTelemetry SDK's real OTLP/HTTP exporter. Each request: an AGENT
span with two LLM calls and a tool call under it.

Run: python openinference_agent.py; prints "PORT <n>" once listening.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from traced_serving import serve_traced

STEPS = (  # name, kind, attributes, seconds
    ("ChatCompletion", "LLM", {"llm.model_name": "mock-small", "llm.token_count.prompt": 120,
                               "llm.token_count.completion": 30}, 0.02),
    ("lookup_order", "TOOL", {"tool.name": "crm_lookup"}, 0.01),
    ("ChatCompletion", "LLM", {"llm.model_name": "mock-large", "llm.token_count.prompt": 400,
                               "llm.token_count.completion": 60}, 0.015),
)  # fmt: skip


def build() -> tuple[web.Application, TracerProvider]:
    tracing = TracerProvider(resource=Resource.create({"service.name": "openinference-agent"}))
    tracing.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=500))
    tracer = tracing.get_tracer("openinference.test")

    async def handle(request: web.Request) -> web.Response:
        payload = await request.json()
        parent = TraceContextTextMapPropagator().extract(dict(request.headers))
        token = context.attach(parent)
        try:
            with tracer.start_as_current_span(
                "agent", attributes={"openinference.span.kind": "AGENT"}
            ):
                for name, kind, attributes, seconds in STEPS:
                    with tracer.start_as_current_span(
                        name, kind=trace.SpanKind.INTERNAL,
                        attributes={"openinference.span.kind": kind, **attributes},
                    ):  # fmt: skip
                        await asyncio.sleep(seconds)
        finally:
            context.detach(token)
        return web.json_response({"output": f"Answer: {payload.get('input')}"})

    app = web.Application()
    app.router.add_post("/agent", handle)
    return app, tracing


async def serve() -> None:
    await serve_traced(*build())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
