"""An agent built on a real framework, as a user's would be: pydantic-ai with the OpenAI
provider (pointed at the demo's mock LLM) and two HTTP tools (the demo's CRM and knowledge
base), instrumented with the OpenTelemetry SDK and its OTLP/HTTP exporter, which sends to
``OTEL_EXPORTER_OTLP_ENDPOINT``. It answers ``POST /agent`` with ``{"input": ...}`` with its
output and a usage block, nothing like agentscale's trace contract.

Run: python framework_agent.py --llm http://HOST:PORT --crm HOST:PORT --kb HOST:PORT
prints "PORT <n>" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import aiohttp
from aiohttp import web
from opentelemetry import context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic_ai import Agent, InstrumentationSettings
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from traced_serving import serve_traced


def build(llm: str, crm: str, kb: str) -> tuple[web.Application, TracerProvider]:
    tracing = TracerProvider(resource=Resource.create({"service.name": "framework-agent"}))
    tracing.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=500))
    model = OpenAIChatModel(
        "mock-small", provider=OpenAIProvider(base_url=f"{llm}/v1", api_key="not-a-key")
    )
    Agent.instrument_all(InstrumentationSettings(tracer_provider=tracing))
    agent = Agent(model, instructions="You answer customers' questions about their orders.")
    timeout = aiohttp.ClientTimeout(total=10)

    @agent.tool_plain
    async def crm_lookup(order_id: str) -> str:
        """The order's record in the CRM."""
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(
                f"http://{crm}/orders/{order_id}", headers={"X-Tenant-Id": "acme"}
            ) as reply,
        ):
            return await reply.text()

    @agent.tool_plain
    async def kb_search(query: str) -> str:
        """Help-centre articles about the question."""
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"http://{kb}/search", json={"query": query, "top_k": 2}) as reply,
        ):
            return await reply.text()

    async def handle(request: web.Request) -> web.Response:
        payload = await request.json()
        parent = TraceContextTextMapPropagator().extract(dict(request.headers))
        token = context.attach(parent)  # the agent's spans join the caller's trace
        try:
            result = await agent.run(str(payload.get("input", "")))
        finally:
            context.detach(token)
        usage = result.usage
        return web.json_response(
            {
                "output": result.output,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                },
            }
        )

    app = web.Application()
    app.router.add_post("/agent", handle)
    return app, tracing


async def serve(llm: str, crm: str, kb: str) -> None:
    await serve_traced(*build(llm, crm, kb))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm", required=True)
    parser.add_argument("--crm", required=True)
    parser.add_argument("--kb", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.llm, args.crm, args.kb))
