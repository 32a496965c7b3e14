"""A small HTTP target for tests and the interim `make demo`: speaks the agent trace contract.

Routes (all POST/GET):
  /agent    trace-contract answer that echoes the prompt (so golden answers match)
  /plain    text "ok", no trace
  /openai   an OpenAI-style chat completion (for telemetry mapping)
  /stall    like /agent, but every 5 s the server stalls for 1 s
  /status/N answers HTTP N (/latin1_error: a 500 whose text is latin-1)
  /slow?ms= answers after a delay
  /big?mb=N  a plain JSON body of N MiB (a large answer for the fault stage)
  /slots?n=8&ms=100  a server of n slots, each busy ms per request (n * 1000 / ms requests/s
            at most); a request waits for a free slot, and its trace reports only the work
  /sse, /ndjson  a streamed answer: first event at 200 ms, then every 20 ms ("stall", "cut")
  /cookie   sets a visitor cookie on a caller that sent none; GET /cookie/seen counts which
            cookie each request carried (a sticky load balancer's session, as a user sees it)
  /steps    an agent of 40 steps whose timings it reports and spends (jittered); POST
            /steps/config {"tool_ms": 16, "fail": "refund", "fail_rate": 0.15} changes it,
            as a new version of the agent would (the gate's per-step tests)
With --fail-with N every path answers HTTP N (a broken dependency for the demo's tests).
Run: python tests/support/agent_server.py [--port 0]; prints "PORT <n>" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time

import aiohttp
from aiohttp import web

STALL_EVERY, STALL_FOR = 5.0, 1.0
START = time.monotonic()


async def _payload(request: web.Request) -> dict:
    if request.can_read_body:
        try:
            return await request.json()
        except (json.JSONDecodeError, ValueError):
            return {"input": await request.text()}
    return {}


def _trace_answer(payload: dict) -> dict:
    prompt = str(payload.get("input", ""))
    tenant = payload.get("tenant_id")
    words = max(len(prompt.split()), 1)
    return {
        "output": f"Answer for {tenant}: {prompt}",
        "status": "degraded" if "fallback" in prompt else "ok",
        "trace": {
            "steps": [
                {
                    "kind": "llm",
                    "name": "plan",
                    "model": "mock-small",
                    "latency_ms": 1.5,
                    "input_tokens": 100 + words,
                    "output_tokens": 20,
                },
                {
                    "kind": "retrieval",
                    "name": "kb_search",
                    "latency_ms": 0.5,
                    "top_k": 3,
                    "chunk_tokens": 300,
                    "cache": "miss",
                },
                {
                    "kind": "tool",
                    "name": "crm_lookup",
                    "latency_ms": 0.7,
                    "attempts": 2,
                    "outcome": "ok",
                    "error": "HTTP 503",
                },
                {
                    "kind": "llm",
                    "name": "answer",
                    "model": "mock-large",
                    "latency_ms": 2.0,
                    "prompt_tokens": 400,
                    "completion_tokens": 50,
                },
            ],
            "events": [{"type": "fallback", "target": "kb_search", "mode": "keyword"}]
            if "fallback" in prompt
            else [],
        },
    }


async def agent(request: web.Request) -> web.Response:
    return web.json_response(_trace_answer(await _payload(request)))


# Rich's markup (an unmatched closing tag is an error), a Markdown link, a terminal escape, a
# bare URL (GitHub links those too).
MARKUP = "[/nope] [bold red]x[/] [l](javascript:alert(1)) *b* \x1b[31mred\x07 http://evil.example"
HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>',
           "javascript:alert(1)")  # fmt: skip


async def hostile(request: web.Request) -> web.Response:
    """An agent whose answer, step names, models and errors are markup and a script URL."""
    await _payload(request)
    script, img, link = HOSTILE
    step = {"kind": "tool", "name": img, "latency_ms": 1.0, "attempts": 2, "outcome": "error",
            "error": script, "model": link}  # fmt: skip
    body = {
        "output": f"{script} {img} <a href='{link}'>click</a>",
        "status": "error",
        "trace": {"steps": [step, {**step, "name": script, "kind": link},
                            {**step, "name": MARKUP}],
                  "events": [{"type": img}]},
    }  # fmt: skip
    return web.json_response(body)


BAD_TRACES = (
    {"steps": ["not an object", 42, None]},
    {"steps": [{"kind": "llm", "name": "plan", "model": "mock-small", "input_tokens": 2**70,
                "output_tokens": "12"}]},
    {"steps": [{"kind": "llm", "name": "plan", "model": "mock-small", "input_tokens": -50,
                "output_tokens": 5, "latency_ms": -3}]},
    {"steps": [{"kind": "tool", "name": "crm_lookup", "latency_ms": 10_000_000.0,
                "attempts": "three"}]},
    {"steps": {"kind": "llm"}, "events": "circuit_open"},
)  # fmt: skip
BAD_SEQ = [0]


async def badtrace(request: web.Request) -> web.Response:
    """Traces with a bad field each, in turn: every one must still be recorded."""
    await _payload(request)
    BAD_SEQ[0] += 1
    trace = BAD_TRACES[BAD_SEQ[0] % len(BAD_TRACES)]
    return web.json_response({"output": "ok", "status": "ok", "trace": trace})


async def hang(request: web.Request) -> web.Response:
    await asyncio.sleep(3600)
    return web.Response(text="never")


async def close(request: web.Request) -> web.Response:
    """Closes the connection before any header."""
    if request.transport is not None:
        request.transport.close()
    await asyncio.sleep(0.1)
    raise ConnectionResetError


async def cut(request: web.Request) -> web.StreamResponse:
    """Announces 1,000 bytes, sends 15 and closes."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b'{"output": "par')
    if request.transport is not None:
        request.transport.close()
    return response


async def drip(request: web.Request) -> web.StreamResponse:
    """A 200 whose body comes one byte every half second: 20 bytes, 10 s in all."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.content_length = 20
    await response.prepare(request)
    for _ in range(20):
        await response.write(b"x")
        await asyncio.sleep(0.5)
    return response


FIRST_EVENT_S, EVENT_GAP_S, EVENTS = 0.2, 0.02, 10


async def _until(at: float) -> None:
    await asyncio.sleep(max(at - time.monotonic(), 0.0))


async def streamed(request: web.Request) -> web.StreamResponse:
    """A streamed answer on a fixed clock: the first event 200 ms after the request, then one
    every 20 ms, then the trace-contract answer as the final event. ``/sse`` speaks Server-Sent
    Events, ``/ndjson`` one JSON object a line. A prompt with "stall" goes silent for 2 s after
    five events; one with "cut" ends there without a final event."""
    started = time.monotonic()
    payload = await _payload(request)
    prompt = str(payload.get("input", ""))
    sse = request.path == "/sse"
    kind = "text/event-stream" if sse else "application/x-ndjson"
    response = web.StreamResponse(headers={"Content-Type": kind})
    await response.prepare(request)

    def frame(value: dict, event: str | None = None) -> bytes:
        data = json.dumps(value).encode()
        if not sse:
            return data + b"\n"
        return (f"event: {event}\n".encode() if event else b"") + b"data: " + data + b"\n\n"

    for i in range(EVENTS):
        await _until(started + FIRST_EVENT_S + i * EVENT_GAP_S)
        if i == 5 and "cut" in prompt:
            return response  # ends without the final event
        if i == 5 and "stall" in prompt:
            await asyncio.sleep(2.0)
        await response.write(frame({"delta": f"w{i} "}))
    await _until(started + FIRST_EVENT_S + EVENTS * EVENT_GAP_S)
    final = _trace_answer(payload)
    if not sse:
        final["type"] = "done"
    await response.write(frame(final, "done"))
    await response.write_eof()
    return response


async def echo_headers(request: web.Request) -> web.Response:
    """An agent that repeats the caller's credentials back: in its answer and in a step."""
    payload = await _payload(request)
    secret = request.headers.get("Authorization", "")
    body = _trace_answer(payload)
    body["output"] = f"I was called with {secret}; {body['output']}"
    body["status"] = "error"
    body["trace"]["steps"][2]["error"] = f"401 for {secret}"
    return web.json_response(body)


async def status_only(request: web.Request) -> web.Response:
    """An agent that reports its answer and a status, and nothing else of what it did."""
    payload = await _payload(request)
    return web.json_response({"output": f"Answer: {payload.get('input')}", "status": "ok"})


async def tool(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def toolagent(request: web.Request) -> web.Response:
    """An agent that calls one tool (at ``?dep=HOST:PORT``), passing on the caller's trace
    context, and swallows the tool's failure into a 200 answer, as many agents do."""
    payload = await _payload(request)
    forwarded = {k: v for k in ("traceparent", "baggage") if (v := request.headers.get(k))}
    url = f"http://{request.query['dep']}/tool"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=forwarded, timeout=aiohttp.ClientTimeout(total=5)) as reply,
        ):
            failed = None if reply.status == 200 else f"HTTP {reply.status}"
    except (aiohttp.ClientError, OSError) as error:
        failed = type(error).__name__
    output = f"tool error: {failed}" if failed else f"Answer: {payload.get('input')}"
    return web.json_response({"output": output, "status": "ok"})


async def plain(request: web.Request) -> web.Response:
    await _payload(request)
    return web.Response(text="ok")


COOKIES: dict[str, int] = {}  # cookie a request carried ("" for none) -> requests


async def cookie(request: web.Request) -> web.Response:
    await _payload(request)
    carried = request.cookies.get("visitor", "")
    COOKIES[carried] = COOKIES.get(carried, 0) + 1
    response = web.json_response({"output": "ok", "status": "ok"})
    if not carried:
        response.set_cookie("visitor", f"v{sum(COOKIES.values())}", path="/")
    return response


async def latin1_error(request: web.Request) -> web.Response:
    """A 500 whose text is latin-1, and says so: an error answer, whatever its encoding."""
    await _payload(request)
    return web.Response(status=500, body="défaillance ÿ".encode("latin-1"),
                        content_type="text/plain", charset="latin-1")  # fmt: skip


async def cookies_seen(request: web.Request) -> web.Response:
    return web.json_response(COOKIES)


async def openai(request: web.Request) -> web.Response:
    payload = await _payload(request)
    return web.json_response(
        {
            "id": "chatcmpl-1",
            "model": "mock-small",
            "choices": [{"message": {"role": "assistant", "content": str(payload.get("input"))}}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
        }
    )


async def stall(request: web.Request) -> web.Response:
    payload = await _payload(request)
    phase = (time.monotonic() - START) % STALL_EVERY
    if phase < STALL_FOR:
        await asyncio.sleep(STALL_FOR - phase)
    return web.json_response(_trace_answer(payload))


async def status(request: web.Request) -> web.Response:
    return web.json_response({"status": "error"}, status=int(request.match_info["code"]))


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("ms", "100")) / 1000)
    return web.json_response(_trace_answer(await _payload(request)))


async def big(request: web.Request) -> web.Response:
    size = int(float(request.query.get("mb", "1")) * 1024 * 1024)
    body = b'{"data": "' + b"x" * max(size - 12, 0) + b'"}'
    return web.Response(body=body, content_type="application/json")


SLOTS: dict[int, asyncio.Semaphore] = {}


async def slots(request: web.Request) -> web.Response:
    """A known capacity: the wait for a slot is time no step of the trace accounts for."""
    count, ms = int(request.query.get("n", "8")), float(request.query.get("ms", "100"))
    payload = await _payload(request)
    async with SLOTS.setdefault(count, asyncio.Semaphore(count)):
        await asyncio.sleep(ms / 1000)
    answer = _trace_answer(payload)
    answer["trace"]["steps"].append(
        {"kind": "tool", "name": "slot_work", "latency_ms": ms, "attempts": 1, "outcome": "ok"}
    )
    return web.json_response(answer)


STEPS = {"tool_ms": 10.0, "fail": "", "fail_rate": 0.0}
FAILED = {"seen": 0}
OTHER_STEPS = 38


def _jitter(ms: float) -> float:
    return round(ms * random.uniform(0.8, 1.2), 3)


async def steps(request: web.Request) -> web.Response:
    prompt = str((await _payload(request)).get("input", ""))
    trace = [
        {"kind": "llm", "name": "plan", "model": "mock-small", "latency_ms": _jitter(120),
         "input_tokens": 200, "output_tokens": 30},
        {"kind": "tool", "name": "crm_lookup", "latency_ms": _jitter(STEPS["tool_ms"]),
         "attempts": 1, "outcome": "ok"},
        *({"kind": "tool", "name": f"tool_{k:02d}", "latency_ms": _jitter(1.0), "attempts": 1,
           "outcome": "ok"} for k in range(OTHER_STEPS)),
    ]  # fmt: skip
    await asyncio.sleep(sum(step["latency_ms"] for step in trace) / 1000)
    if STEPS["fail"] and STEPS["fail"] in prompt.lower():
        rate, seen = float(STEPS["fail_rate"]), FAILED["seen"]
        FAILED["seen"] += 1  # exactly fail_rate of them, spread evenly
        if int((seen + 1) * rate) > int(seen * rate):
            return web.json_response({"status": "error", "trace": {"steps": trace}}, status=500)
    return web.json_response({"output": f"Answer: {prompt}", "status": "ok",
                              "trace": {"steps": trace}})  # fmt: skip


async def steps_config(request: web.Request) -> web.Response:
    STEPS.update(await request.json())
    return web.json_response(STEPS)


def build(fail_with: int | None = None) -> web.Application:
    app = web.Application()
    if fail_with is not None:  # a broken dependency: every path answers this status

        async def broken(request: web.Request) -> web.Response:
            return web.json_response({"error": "injected"}, status=fail_with)

        app.router.add_route("*", "/{tail:.*}", broken)
        return app
    for path, handler in (
        ("/agent", agent),
        ("/plain", plain),
        ("/hostile", hostile),
        ("/status_only", status_only),
        ("/tool", tool),
        ("/toolagent", toolagent),
        ("/badtrace", badtrace),
        ("/hang", hang),
        ("/close", close),
        ("/cut", cut),
        ("/drip", drip),
        ("/sse", streamed),
        ("/ndjson", streamed),
        ("/echo_headers", echo_headers),
        ("/openai", openai),
        ("/stall", stall),
        ("/status/{code}", status),
        ("/slow", slow),
        ("/slots", slots),
        ("/big", big),
        ("/cookie", cookie),
        ("/cookie/seen", cookies_seen),
        ("/latin1_error", latin1_error),
        ("/steps", steps),
        ("/steps/config", steps_config),
    ):
        app.router.add_route("*", path, handler)
    return app


async def serve(host: str, port: int, fail_with: int | None) -> None:
    runner = web.AppRunner(build(fail_with), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {bound}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail-with", type=int, default=None, help="answer every path so")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.fail_with))
