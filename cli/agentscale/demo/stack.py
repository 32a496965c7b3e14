"""Start the demo stack in one asyncio process: the mock LLM and each tool on a port of its
own, and the agent, whose calls go to ``routes`` (the services themselves unless a fault proxy
is put in between)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from agentscale.demo.agent import Agent
from agentscale.demo.llm import build_llm
from agentscale.demo.pace import Pace
from agentscale.demo.settings import DEPENDENCIES, DemoSettings
from agentscale.demo.tools import BUILDERS
from agentscale.processes import watch_parent


@dataclass
class Stack:
    agent_url: str
    services: dict[str, str]  # where each dependency really listens
    routes: dict[str, str]  # where the agent sends its calls
    runners: list[web.AppRunner]
    session: aiohttp.ClientSession
    agent: Agent

    def describe(self, settings: DemoSettings) -> dict[str, Any]:
        return {
            "agent": self.agent_url,
            "profile": settings.profile,
            "time_scale": settings.time_scale,
            "jitter": settings.jitter,
            "services": self.services,
            "routes": self.routes,
        }

    async def close(self) -> None:
        if self.agent.spans is not None:
            self.agent.spans.close()  # the last batch of spans goes out before the stack ends
        # The agent stops first (its requests under way end or are cancelled), then its client
        # session: closed earlier, a request still running would fail on it, traceback and all.
        await self.runners[-1].cleanup()
        await self.session.close()
        for runner in reversed(self.runners[:-1]):
            await runner.cleanup()


async def _listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def start(settings: DemoSettings) -> Stack:
    runners: list[web.AppRunner] = []
    services: dict[str, str] = {}
    pace = Pace(settings.time_scale, settings.jitter)
    apps = {"llm": build_llm(pace, settings.llm_capacity)}
    apps.update({name: build(pace) for name, build in BUILDERS.items()})
    for name in DEPENDENCIES:
        runner, port = await _listen(apps[name], settings.host, 0)
        runners.append(runner)
        services[name] = f"{settings.host}:{port}"
    routes = {name: settings.routes.get(name, services[name]) for name in DEPENDENCIES}
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    agent = Agent(settings, session, routes)
    app = web.Application()
    app.router.add_post("/agent", agent.handle)
    app.router.add_post("/agent/stream", agent.handle_stream)
    app.router.add_get("/health", _health)
    runner, port = await _listen(app, settings.host, settings.port)
    runners.append(runner)
    return Stack(f"http://{settings.host}:{port}/agent", services, routes, runners, session, agent)


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def serve(
    settings: DemoSettings, on_ready: Callable[[dict[str, Any]], None], *, watch: bool = False
) -> None:
    """Run the stack in the foreground until SIGINT or SIGTERM (or, with ``watch``, until the
    parent process is gone)."""

    async def main() -> None:
        stack = await start(settings)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        watcher = asyncio.create_task(watch_parent(stopped)) if watch else None
        try:
            try:
                on_ready(stack.describe(settings))
            except BrokenPipeError:
                stopped.set()  # who started the stack is gone before it was ready: stop
            await stopped.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
            await stack.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
