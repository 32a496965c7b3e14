"""A mock OpenAI-compatible LLM: ``POST /v1/chat/completions``, plain or SSE-streamed.

Answers are deterministic functions of the input, chosen by the system prompt's ``task:``
line (classify, extract, plan, summarize, answer), so that the agent built on it answers the
golden set correctly. Latency is time to first token plus time per output token, times the
time scale; ``usage`` is computed from the text. Reading the prompt takes time too (prefill,
per input token), so a conversation whose context grows gets slower, and a prompt beyond the
context window is refused (HTTP 400, ``context_length_exceeded``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from agentscale.demo.data import tokens, words
from agentscale.demo.pace import Pace


@dataclass(frozen=True)
class ModelSpec:
    ttft_s: float
    per_token_s: float
    prefill_s: float  # per input token

    def first_token(self, prompt_tokens: int) -> float:
        return self.ttft_s + self.prefill_s * prompt_tokens


MODELS = {
    "mock-small": ModelSpec(ttft_s=0.08, per_token_s=0.004, prefill_s=0.00001),
    "mock-large": ModelSpec(ttft_s=0.30, per_token_s=0.012, prefill_s=0.0001),
}
CONTEXT_WINDOW = 8192  # tokens of prompt a model accepts
_INTENT_TEXT = {
    "refund": {"refund", "money", "back", "charge", "charged", "reimburse"},
    "incident_triage": {
        "502",
        "500",
        "error",
        "errors",
        "latency",
        "outage",
        "down",
        "incident",
        "timeout",
        "slow",
    },
    "order_status": {"where", "status", "shipped", "delivered", "delivery", "track", "arrive"},
}
# Stemmed the way ``words`` stems the input.
INTENT_WORDS = {intent: set(words(" ".join(found))) for intent, found in _INTENT_TEXT.items()}
ORDER_ID = re.compile(r"\b(\d{4})\b")
INVOICE = re.compile(r"\bINV-\d+\b")
SERVICES = ("checkout", "login", "payments", "search")
TOOLS_BY_INTENT = {
    "refund": ["kb_search", "crm_lookup", "billing"],
    "order_status": ["kb_search", "crm_lookup"],
    "incident_triage": ["kb_search", "logs_read"],
    "general": ["kb_search"],
}


def classify(text: str) -> str:
    found = set(words(text))
    for intent in ("refund", "incident_triage", "order_status"):
        if found & INTENT_WORDS[intent]:
            return intent
    return "general"


def extract(text: str) -> dict[str, str | None]:
    order = ORDER_ID.search(text)
    invoice = INVOICE.search(text)
    lowered = text.lower()
    service = next((s for s in SERVICES if s in lowered), None)
    return {
        "order_id": order.group(1) if order and not invoice else None,
        "invoice": invoice.group(0) if invoice else None,
        "service": service,
    }


def plan(intent: str, text: str) -> dict[str, Any]:
    # "keep digging" makes a planner that never thinks it has enough: a runaway loop that
    # only the agent's budgets stop.
    return {"tools": TOOLS_BY_INTENT.get(intent, ["kb_search"]), "more": "keep digging" in text}


def summarize(text: str) -> str:
    notable = [line for line in text.splitlines() if " ERROR " in line or " WARN " in line]
    if not notable:
        return "no errors or warnings"
    return f"{len(notable)} errors or warnings; first: {notable[0].split(' ', 1)[1]}"


def complete(task: str, user: str) -> str:
    if task == "classify":
        return classify(user)
    if task == "extract":
        return orjson.dumps(extract(user)).decode()
    if task == "plan":
        intent, _, text = user.partition("\n")
        return orjson.dumps(plan(intent.removeprefix("intent: "), text)).decode()
    if task == "summarize":
        return summarize(user)
    if task == "replan":
        return "Retry the tool call now."
    if task == "recap":
        return "Earlier in this conversation: " + " ".join(user.split()[:40])
    if task == "answer":
        return user.split("DRAFT:\n", 1)[-1].strip()
    return "I am a mock model."


def tool_call(tools: list[dict[str, Any]], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A function call, the way OpenAI-compatible models answer when given ``tools``: the first
    tool the conversation has not called yet, with arguments taken from the user's words (an
    order id, a service, the question itself). None once every tool has answered."""
    called = {
        call.get("function", {}).get("name")
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
    }
    user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
    found = extract(user)
    for tool in tools:
        function = tool.get("function", {})
        name = function.get("name")
        if not name or name in called:
            continue
        wanted = function.get("parameters", {}).get("properties", {})
        arguments = {
            key: found.get(key) or (user if key in ("query", "question", "text") else "")
            for key in wanted
        }
        return {
            "id": f"call_{len(called)}_{name}",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
        }
    return None


def _with_tools(messages: list[dict[str, Any]]) -> str:
    """The final answer of a tool-calling conversation: what the tools said."""
    results = [str(m.get("content", "")) for m in messages if m.get("role") == "tool"]
    return "Based on the tools: " + " | ".join(r[:200] for r in results)


def _task(messages: list[dict[str, Any]]) -> tuple[str, str]:
    system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
    user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    match = re.search(r"task:\s*(\w+)", system)
    return (match.group(1) if match else "chat"), str(user)


def build_llm(pace: Pace, capacity: int | None = None) -> web.Application:
    """The mock model endpoint. ``capacity`` completions run at once (a provider's concurrency
    limit, or a GPU's batch slots); the rest wait their turn, as on a shared model."""
    slots = asyncio.Semaphore(capacity) if capacity else None

    async def completions(request: web.Request) -> web.StreamResponse:
        if slots is None:
            return await complete_one(request)
        async with slots:
            return await complete_one(request)

    async def complete_one(request: web.Request) -> web.StreamResponse:
        try:
            payload = orjson.loads(await request.read())
            messages = payload["messages"]
            model = payload.get("model", "mock-small")
            spec = MODELS[model]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error": {"message": "bad request"}}, status=400)
        task, user = _task(messages)
        call = tool_call(payload["tools"], messages) if payload.get("tools") else None
        if call is not None:
            content = ""
        elif payload.get("tools"):
            content = _with_tools(messages)
        else:
            content = complete(task, user)
        usage = {
            "prompt_tokens": sum(tokens(str(m.get("content", ""))) + 4 for m in messages),
            "completion_tokens": tokens(content) if call is None else 12,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if usage["prompt_tokens"] > CONTEXT_WINDOW:
            message = (
                f"This model's maximum context length is {CONTEXT_WINDOW} tokens; the messages "
                f"have {usage['prompt_tokens']}."
            )
            error = {"message": message, "code": "context_length_exceeded"}
            return web.json_response({"error": error}, status=400)
        ident = f"chatcmpl-{time.monotonic_ns():x}"
        if payload.get("stream") and call is None:
            return await _stream(request, ident, model, content, usage, spec, pace)
        await asyncio.sleep(
            pace.seconds(
                spec.first_token(usage["prompt_tokens"])
                + spec.per_token_s * usage["completion_tokens"]
            )
        )
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls" if call else "stop",
                        "message": {"role": "assistant", "content": content or None}
                        | ({"tool_calls": [call]} if call else {}),
                    }
                ],
                "usage": usage,
            },
            dumps=lambda v: orjson.dumps(v).decode(),
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


async def _stream(
    request: web.Request,
    ident: str,
    model: str,
    content: str,
    usage: dict[str, int],
    spec: ModelSpec,
    pace: Pace,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    # The client may go away mid-answer (a cut stream): then there is nothing more to send.
    with contextlib.suppress(ConnectionResetError):
        await _events(response, ident, model, content, usage, spec, pace)
    return response


async def _events(
    response: web.StreamResponse,
    ident: str,
    model: str,
    content: str,
    usage: dict[str, int],
    spec: ModelSpec,
    pace: Pace,
) -> None:
    await asyncio.sleep(pace.seconds(spec.first_token(usage["prompt_tokens"])))
    pieces = re.findall(r"\S+\s*", content) or [content]
    for i in range(0, len(pieces), 4):
        chunk = "".join(pieces[i : i + 4])
        event = {
            "id": ident,
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {"content": chunk}, "finish_reason": None}],
        }
        await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await asyncio.sleep(pace.seconds(spec.per_token_s * tokens(chunk)))
    final = {
        "id": ident,
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": usage,
    }
    await response.write(b"data: " + orjson.dumps(final) + b"\n\ndata: [DONE]\n\n")
    await response.write_eof()
