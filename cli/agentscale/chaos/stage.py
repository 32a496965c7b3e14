"""The HTTP fault stage: a small reverse proxy in front of a Toxiproxy proxy that answers a
share of requests with an HTTP error (Toxiproxy works on TCP and cannot send a 5xx), or with
the faults of an LLM provider: a rate limit, a cut or slowed stream, a corrupted body.

One process, a listener per ``protocol: http`` dependency, and a control API:
``PUT /faults/{dependency}`` with the http fault, ``DELETE`` to clear it, ``GET /faults``.
Each request's draw comes from a generator seeded per dependency, so a run can be repeated.
Run: ``python -m agentscale.chaos.stage --seed N --listen NAME=HOST:PORT=UPSTREAM ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from agentscale.chaos.kinds import (
    RateLimit,
    answer_tokens,
    error_object,
    rate_limit_body,
    request_tokens,
    wants_stream,
)
from agentscale.chaos.relay import Cut, relay
from agentscale.processes import watch_parent
from agentscale.records.writer import INJECTED_COLUMNS, PartWriter
from agentscale.telemetry.context import BAGGAGE_KEY, baggage_value, parse_traceparent

TAIL_BYTES = 64 * 1024  # the end of an answer kept to read its token usage
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


class Stage:
    def __init__(self, seed: int, record: Path | None = None) -> None:
        self.seed = seed
        # Every response the stage makes up is a row of faults_injected.parquet.
        self.injected = (
            PartWriter(record / "faults_injected.parquet", INJECTED_COLUMNS) if record else None
        )
        self.faults: dict[str, dict[str, Any]] = {}
        self.random: dict[str, random.Random] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.session: aiohttp.ClientSession | None = None
        self.sites: dict[str, web.TCPSite] = {}
        self.addresses: dict[str, tuple[web.AppRunner, str, int]] = {}
        self.down: set[str] = set()
        self.limits: dict[str, RateLimit] = {}
        self.removed: dict[str, asyncio.Event] = {}  # per window, set once it is removed
        # Per window: requests the dependency got while it was in place, faults, 429s.
        self.traffic: dict[str, dict[str, Any]] = {}

    def rng(self, name: str) -> random.Random:
        if name not in self.random:
            self.random[name] = random.Random(self.seed ^ zlib.crc32(name.encode()))
        return self.random[name]

    def proxy_app(self, name: str, upstream: str) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            counts = self.counts.setdefault(name, {"forwarded": 0, "faulted": 0})
            fault = self.faults.get(name)
            if fault is None:
                counts["forwarded"] += 1
                return await self.forward(request, upstream)
            traffic = self.traffic.setdefault(
                fault["window"] or name,
                {"dependency": name, "requests": 0, "injected": 0, "rate_limited": 0},
            )
            traffic["requests"] += 1
            if fault["kind"] == "rate_limit":
                return await self.rate_limited(name, fault, request, upstream)
            if self.rng(name).random() >= fault["rate"]:
                counts["forwarded"] += 1
                return await self.forward(request, upstream)
            if fault["delay"]:
                await asyncio.sleep(fault["delay"])
            made_up = await self.made_up(fault, request)
            if made_up is not None:
                counts["faulted"] += 1
                self.note(name, fault, request, made_up.status)
                return made_up

            def applied(status: int) -> None:
                counts["faulted"] += 1
                self.note(name, fault, request, status)

            return await self.forward(request, upstream, fault=fault, applied=applied)

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    async def made_up(self, fault: dict[str, Any], request: web.Request) -> web.Response | None:
        """The answer of a kind that does not need the dependency's (None: it does)."""
        kind = fault["kind"]
        if kind == "status":
            headers = {}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = f"{fault['retry_after']:g}"
            body = (
                fault.get("body")
                or orjson.dumps({"error": f"injected by agentscale ({fault['status']})"}).decode()
            )
            return web.Response(
                status=fault["status"], text=body, headers=headers, content_type="application/json"
            )
        if kind == "empty":
            return web.Response(status=200, body=b"", content_type="application/json")
        if kind == "error_body":
            error = error_object(fault.get("body"))
            if wants_stream(request.headers, await request.read()):
                return web.Response(
                    status=200, body=b"data: " + error + b"\n\n", content_type="text/event-stream"
                )
            return web.Response(status=200, body=error, content_type="application/json")
        return None

    async def rate_limited(
        self, name: str, fault: dict[str, Any], request: web.Request, upstream: str
    ) -> web.StreamResponse:
        """A provider's quota: a 429 with Retry-After and x-ratelimit-* when it is spent;
        otherwise the answer, with the quota's headers, and its usage counted."""
        limit = self.limits[name]
        key = request.headers.get(fault["per_header"], "") if fault.get("per_header") else ""
        tokens = request_tokens(await request.read()) if limit.tokens_per_minute else 0
        decision = limit.admit(key, tokens)
        if not decision.allowed:
            traffic = self.traffic[fault["window"] or name]
            traffic["rate_limited"] += 1
            self.counts[name]["faulted"] += 1
            self.note(name, fault, request, 429)
            quota = getattr(limit, f"{decision.which}_per_minute")
            return web.Response(
                status=429,
                body=rate_limit_body(decision, quota),
                headers=decision.headers,
                content_type="application/json",
            )
        self.counts[name]["forwarded"] += 1

        def settle(tail: bytes) -> None:
            if limit.tokens_per_minute:
                limit.settle(key, tokens, answer_tokens(tail))

        return await self.forward(request, upstream, extra=decision.headers, tail=settle)

    def note(self, name: str, fault: dict[str, Any], request: web.Request, status: int) -> None:
        window = fault.get("window")
        if window in self.traffic:  # a 429 of a rate limit is an injected fault too
            self.traffic[window]["injected"] += 1
        if self.injected is None:
            return
        headers = request.headers
        self.injected.rows.append(
            (
                time.time(), name, window, fault["kind"], status,
                parse_traceparent(headers.get("traceparent")),
                baggage_value(headers.get("baggage"), BAGGAGE_KEY),
                request.method, request.path[:200],
            )
        )  # fmt: skip

    async def flush_injected(self, stopped: asyncio.Event) -> None:
        while self.injected is not None and not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=1.0)
            self.injected.flush()

    async def forward(
        self,
        request: web.Request,
        upstream: str,
        *,
        fault: dict[str, Any] | None = None,
        applied: Callable[[int], None] | None = None,
        extra: dict[str, str] | None = None,
        tail: Callable[[bytes], None] | None = None,
    ) -> web.StreamResponse:
        """The dependency's answer, relayed as it comes (SSE too); with ``fault``, relayed with
        the fault in it; with ``tail``, the answer's last bytes are handed over at its end."""
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self.session.request(
                request.method,
                f"http://{upstream}{request.path_qs}",
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as reply:
                response = web.StreamResponse(
                    status=reply.status,
                    headers={k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP}
                    | (extra or {}),
                )
                await response.prepare(request)
                if fault is not None and applied is not None:
                    try:
                        await relay(
                            fault,
                            reply.content.iter_any(),
                            reply.headers.get("Content-Type"),
                            reply.headers.get("Content-Encoding"),
                            response.write,
                            lambda: applied(reply.status),
                            self.removed.setdefault(fault["window"] or "", asyncio.Event()),
                        )
                    except Cut:
                        # No proper end of the body: the client sees the connection close.
                        if request.transport is not None:
                            request.transport.close()
                        return response
                else:
                    end = b""
                    async for chunk in reply.content.iter_any():  # streams SSE as it comes
                        await response.write(chunk)
                        if tail is not None:
                            end = (end + chunk)[-TAIL_BYTES:]
                    if tail is not None:
                        tail(end)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError, TimeoutError):
            # The TCP layer behind us failed (a Toxiproxy fault, or the dependency is down):
            # the client sees its connection reset, as it would without the stage.
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPBadGateway() from None

    def control_app(self) -> web.Application:
        async def put(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            fault = orjson.loads(await request.read())
            fault.setdefault("kind", "status")
            fault.setdefault("rate", 1.0)
            fault["delay"] = float(fault.get("delay") or 0.0)
            fault.setdefault("window", None)
            previous = self.faults.get(name)
            quota = (fault.get("requests_per_minute"), fault.get("tokens_per_minute"))
            if fault["kind"] == "rate_limit" and (
                previous is None
                or previous.get("window") != fault["window"]
                or (previous.get("requests_per_minute"), previous.get("tokens_per_minute")) != quota
            ):
                self.limits[name] = RateLimit(*quota)  # a new quota starts with a full bucket
            self.faults[name] = fault
            if previous is None or previous.get("window") != fault["window"]:
                # A window applied afresh (a capacity stage replays the profile), not a ramp
                # step of one in place: its holds and its counts start anew.
                self.removed[fault["window"] or ""] = asyncio.Event()
                self.traffic[fault["window"] or name] = {
                    "dependency": name, "kind": fault["kind"], "requests": 0, "injected": 0,
                    "rate_limited": 0,
                }  # fmt: skip
            return web.json_response(fault)

        async def delete(request: web.Request) -> web.Response:
            fault = self.faults.pop(request.match_info["name"], None)
            if fault is not None:  # answers held by it are let go now
                self.removed.setdefault(fault["window"] or "", asyncio.Event()).set()
            return web.json_response({})

        async def show(_request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "faults": self.faults,
                    "counts": self.counts,
                    "traffic": self.traffic,
                    "down": sorted(self.down),
                }
            )

        async def down(request: web.Request) -> web.Response:
            # "down" is a refused connection, not an error answer: stop listening.
            name = request.match_info["name"]
            if name not in self.down:
                await self.sites[name].stop()
                self.down.add(name)
            return web.json_response({})

        async def up(request: web.Request) -> web.Response:
            # A stopped site cannot be started again: bind a new one on the same address.
            name = request.match_info["name"]
            if name in self.down:
                runner, host, port = self.addresses[name]
                site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
                await site.start()
                self.sites[name] = site
                self.down.discard(name)
            return web.json_response({})

        app = web.Application()
        app.router.add_put("/faults/{name}", put)
        app.router.add_delete("/faults/{name}", delete)
        app.router.add_get("/faults", show)
        app.router.add_put("/down/{name}", down)
        app.router.add_delete("/down/{name}", up)
        return app


async def _listen(
    app: web.Application, host: str, port: int
) -> tuple[web.AppRunner, web.TCPSite, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    return runner, site, int(runner.addresses[0][1])


async def main(
    seed: int, listeners: list[tuple[str, str, int, str]], record: Path | None = None
) -> None:
    stage = Stage(seed, record)
    stage.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )
    runners = []
    ports = {}
    for name, host, port, upstream in listeners:
        runner, site, bound = await _listen(stage.proxy_app(name, upstream), host, port)
        runners.append(runner)
        stage.sites[name] = site
        stage.addresses[name] = (runner, host, bound)
        ports[name] = f"{host}:{bound}"
    control, _site, control_port = await _listen(stage.control_app(), "127.0.0.1", 0)
    runners.append(control)
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stopped.set)
    watcher = asyncio.create_task(watch_parent(stopped))
    flusher = asyncio.create_task(stage.flush_injected(stopped))
    sys.stdout.write(
        orjson.dumps({"control": f"127.0.0.1:{control_port}", "listeners": ports}).decode() + "\n"
    )
    sys.stdout.flush()
    try:
        await stopped.wait()
    finally:
        watcher.cancel()
        await flusher
        if stage.injected is not None:
            stage.injected.flush()
        await stage.session.close()
        for runner in runners:
            await runner.cleanup()


def _listener(text: str) -> tuple[str, str, int, str]:
    name, listen, upstream = text.split("=", 2)
    host, port = listen.rsplit(":", 1)
    return name, host, int(port), upstream


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m agentscale.chaos.stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--listen", action="append", type=_listener, default=[])
    parser.add_argument("--record", type=Path, help="the run folder for faults_injected.parquet")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.seed, args.listen, args.record))
