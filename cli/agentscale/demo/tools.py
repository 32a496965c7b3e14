"""The demo's tool services, each an HTTP app of its own (so each can have a fault proxy):
``kb_search`` (retrieval), ``crm_lookup`` (read), ``billing`` (a write that needs an
idempotency key) and ``logs_read`` (slow, large output)."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from agentscale.demo.data import INVOICES, KB, ORDERS, log_lines, tokens, words
from agentscale.demo.pace import Pace

LATENCY_S = {"kb_search": 0.03, "crm_lookup": 0.04, "billing": 0.06, "logs_read": 0.20}


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: orjson.dumps(v).decode())


STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "at",
        "be",
        "for",
        "from",
        "i",
        "in",
        "is",
        "it",
        "its",
        "my",
        "of",
        "on",
        "or",
        "the",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "why",
        "will",
        "with",
        "you",
        "your",
        "please",
    }
)
_DOC_WORDS = [set(words(f"{title} {text}")) - STOP_WORDS for _, title, text in KB]
_IDF = {
    word: math.log(len(KB) / sum(word in doc for doc in _DOC_WORDS))
    for doc in _DOC_WORDS
    for word in doc
}


def search(query: str, top_k: int) -> list[dict[str, Any]]:
    """Rank the knowledge base by IDF-weighted word overlap (the demo's vector search)."""
    wanted = set(words(query)) - STOP_WORDS
    scored = []
    for (ident, title, text), doc in zip(KB, _DOC_WORDS, strict=True):
        score = sum(_IDF[word] for word in wanted & doc)
        scored.append((score, ident, title, text))
    scored.sort(key=lambda row: (-row[0], row[1]))
    return [
        {
            "id": ident,
            "title": title,
            "text": text,
            "score": round(score, 3),
            "tokens": tokens(text),
        }
        for score, ident, title, text in scored[:top_k]
    ]


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _app(method: str, path: str, handle: Handler) -> web.Application:
    app = web.Application()
    app.router.add_route(method, path, handle)
    return app


def build_kb(pace: Pace) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        await asyncio.sleep(pace.seconds(LATENCY_S["kb_search"]))
        top_k = max(1, min(int(payload.get("top_k", 3)), 10))
        return _json({"mode": "vector", "results": search(str(payload.get("query", "")), top_k)})

    return _app("POST", "/search", handle)


def build_crm(pace: Pace) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(pace.seconds(LATENCY_S["crm_lookup"]))
        tenant = request.headers.get("X-Tenant-Id", "")
        order = ORDERS.get(tenant, {}).get(request.match_info["order_id"])
        if order is None:
            return _json({"error": "no such order"}, status=404)
        record = {"order_id": request.match_info["order_id"], "tenant": tenant, **order}
        account = request.headers.get("X-Account-Ref")
        if account:  # the record as the caller's account sees it
            record["account_ref"] = account
        return _json(record)

    return _app("GET", "/orders/{order_id}", handle)


def build_billing(pace: Pace) -> web.Application:
    done: dict[str, dict[str, Any]] = {}

    async def handle(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        if not key:
            return _json({"error": "Idempotency-Key header required for refunds"}, status=400)
        payload = orjson.loads(await request.read())
        await asyncio.sleep(pace.seconds(LATENCY_S["billing"]))
        if key in done:  # a retried write: the same refund, not a second one
            return _json({**done[key], "replayed": True})
        invoice = payload.get("invoice")
        if invoice is not None and invoice not in INVOICES:
            return _json({"error": "no such invoice"}, status=404)
        refund = {
            "refund_id": "RF-" + hashlib.sha256(key.encode()).hexdigest()[:8],
            "amount": payload.get("amount") or INVOICES.get(invoice or "", {}).get("amount"),
            "order_id": payload.get("order_id"),
            "invoice": invoice,
        }
        done[key] = refund
        return _json(refund, status=201)

    return _app("POST", "/refunds", handle)


def build_logs(pace: Pace) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(pace.seconds(LATENCY_S["logs_read"]))
        service = request.query.get("service", "checkout")
        return web.Response(text="\n".join(log_lines(service)), content_type="text/plain")

    return _app("GET", "/logs", handle)


BUILDERS = {
    "kb_search": build_kb,
    "crm_lookup": build_crm,
    "billing": build_billing,
    "logs_read": build_logs,
}
