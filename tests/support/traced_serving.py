"""Serving a traced test agent on 127.0.0.1 (port 0): prints "PORT <n>" once listening and
flushes its spans when it stops. Shared by the framework and OpenInference test agents."""

from __future__ import annotations

import asyncio

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider


async def serve_traced(app: web.Application, tracing: TracerProvider) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        tracing.shutdown()
