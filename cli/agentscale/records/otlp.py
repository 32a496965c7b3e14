"""agentscale's OTLP/HTTP receiver: ``POST /v1/traces`` (protobuf or JSON, gzip or not), each
span written to ``spans.parquet`` as it comes, every second. A process of its own beside the
load engine, so that decoding spans never takes the engine's CPU.

Run: ``python -m agentscale.records.otlp --listen HOST:PORT --out RUN_DIR``; it prints
``{"listen": "HOST:PORT"}`` once it listens, and flushes and stops on SIGTERM or when its
parent is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import signal
import sys
import time
import zlib
from pathlib import Path

import orjson
from aiohttp import web

from agentscale.processes import watch_parent
from agentscale.records.writer import SPAN_COLUMNS, PartWriter
from agentscale.telemetry.spans import decode_json, decode_protobuf

MAX_BODY = 64 * 1024 * 1024


class Receiver:
    def __init__(self, out: Path) -> None:
        self.spans = PartWriter(out / "spans.parquet", SPAN_COLUMNS)
        self.received = 0
        self.refused = 0
        self.last_at: float | None = None

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            body = _inflated(body, request.headers.get("Content-Encoding", ""))
            json = "json" in request.headers.get("Content-Type", "")
            rows = decode_json(body) if json else decode_protobuf(body)
        except Exception as error:  # a bad export is refused, never the receiver's end
            self.refused += 1
            return web.json_response({"error": f"not OTLP traces: {error}"}, status=400)
        for row in rows:
            self.spans.rows.append(
                (row.trace_id, row.span_id, row.parent_span_id, row.name, row.kind, row.start,
                 row.end, row.status_code, row.status_message, row.attributes, row.service)
            )  # fmt: skip
        self.received += len(rows)
        self.last_at = time.time()
        if json:
            return web.json_response({})
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"received": self.received, "refused": self.refused, "last_at": self.last_at}
        )

    async def flush_every_second(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=1.0)
            self.spans.flush()


def _inflated(body: bytes, encoding: str) -> bytes:
    # aiohttp already inflates a body it knows the encoding of; inflate only what is left.
    encoding = encoding.lower()
    if encoding == "gzip" and body[:2] == b"\x1f\x8b":
        return gzip.decompress(body)
    if encoding == "deflate" and body[:1] == b"\x78":
        with contextlib.suppress(zlib.error):
            return zlib.decompress(body)
    return body


async def main(host: str, port: int, out: Path) -> None:
    receiver = Receiver(out)
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/v1/traces", receiver.traces)
    app.router.add_get("/stats", receiver.stats)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1])
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stopped.set)
    watcher = asyncio.create_task(watch_parent(stopped))
    flusher = asyncio.create_task(receiver.flush_every_second(stopped))
    sys.stdout.write(orjson.dumps({"listen": f"{host}:{bound}"}).decode() + "\n")
    sys.stdout.flush()
    try:
        await stopped.wait()
    finally:
        watcher.cancel()
        await flusher
        await runner.cleanup()
        receiver.spans.flush()
        sys.stdout.write(orjson.dumps({"received": receiver.received}).decode() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m agentscale.records.otlp")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    # Spans carry the agent's own timestamps, so taking them in a moment later costs nothing;
    # on a busy core the load engine goes first.
    with contextlib.suppress(OSError):
        os.nice(10)
    host, _, port = args.listen.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(host, int(port), args.out))
