"""The demo agent: ``POST /agent`` with ``{tenant_id, input}`` (and ``thread_id`` to hold a
conversation); ``POST /agent/stream`` answers the same as Server-Sent Events.

plan -> retrieve -> tool calls (independent ones in parallel under a cap) -> answer, with the
profile's resilience policy around every dependency call, and the trace contract in the reply
(the streamed answer's final event).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from agentscale.demo import guardrails
from agentscale.demo.data import tokens
from agentscale.demo.llm import classify, extract
from agentscale.demo.llm import plan as plan_by_rules
from agentscale.demo.outputs import ClientLimiter, output_problem
from agentscale.demo.resilience import Budget, Bulkhead, CircuitBreaker, TTLCache
from agentscale.demo.settings import (
    DEPENDENCIES,
    LLM_TIMEOUT,
    RATE_LIMIT_PATIENCE,
    READ_ONLY_TOOLS,
    TIMEOUTS,
    TOOL_CONFIG_VERSION,
    DemoSettings,
)
from agentscale.demo.threads import Thread, ThreadStore
from agentscale.demo.tools import search

if TYPE_CHECKING:
    from agentscale.demo.spans import SpanExport


class Failed(Exception):
    """A dependency call that did not give a usable answer (after the policy did its best)."""

    def __init__(self, outcome: str, error: str, attempts: int = 0) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error
        self.attempts = attempts


class _Retryable(Exception):
    def __init__(self, error: str, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.retry_after = retry_after


@dataclass
class Run:
    """One agent request: its identity, budget and the trace it builds."""

    tenant: str
    scope: str
    text: str
    request_id: str
    budget: Budget
    account: str = ""  # the caller's account reference, as the CRM reports it back
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    degraded: bool = False
    exhausted: str | None = None
    context: list[str] = field(default_factory=list)  # what the model has been shown so far
    # The caller's trace context, passed on to every dependency call (W3C traceparent and
    # baggage), so that whatever a dependency or a fault proxy sees is tied to this request.
    propagated: dict[str, str] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    history: list[dict[str, str]] = field(default_factory=list)  # the thread, as messages
    sink: Callable[[str], Awaitable[None]] | None = None  # where answer text streams to

    def add(self, step: dict[str, Any]) -> None:
        """A finished step, stamped with when it started (from the request's start)."""
        now_ms = (time.perf_counter() - self.t0) * 1000
        step["start_ms"] = round(max(now_ms - float(step.get("latency_ms") or 0.0), 0.0), 3)
        self.steps.append(step)

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, **fields})

    def fallback(self, target: str, mode: str) -> None:
        self.degraded = True
        self.event("fallback", target=target, mode=mode)


class BudgetExhausted(Exception):
    pass


CONVERSATION_TASKS = frozenset({"classify", "plan", "answer"})  # calls that see the thread
OUTPUT_ALLOWANCE = 128  # tokens kept for a completion when checking a call against the budget


class Agent:
    def __init__(
        self, settings: DemoSettings, session: aiohttp.ClientSession, routes: dict[str, str]
    ) -> None:
        self.settings = settings
        self.policy = settings.policy
        self.session = session
        self.routes = routes
        policy = self.policy
        self.breakers = {
            name: CircuitBreaker(policy.breaker_threshold, policy.breaker_cooldown_s)
            for name in DEPENDENCIES
        }
        self.bulkheads = {
            name: Bulkhead(policy.tool_concurrency, policy.bulkhead_wait_s) for name in DEPENDENCIES
        }
        self.tenant_bulkheads: dict[str, Bulkhead] = {}
        self.caches = {name: TTLCache(ttl) for name, ttl in policy.cache_ttl_s.items()}
        self.limiters = {
            name: ClientLimiter(RATE_LIMIT_PATIENCE)
            for name in (DEPENDENCIES if policy.honour_retry_after else ())
        }
        self.rng = random.Random(settings.seed)
        self.threads = ThreadStore()
        self.spans: SpanExport | None = None
        if settings.telemetry != "body":
            from agentscale.demo.spans import SpanExport

            self.spans = SpanExport()

    # --- the request -----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        opened = await self.open(request)
        if isinstance(opened, web.Response):
            return opened
        run, thread, bulkhead = opened
        body = await self.finish(run, thread, bulkhead)
        return _reply(body)

    async def handle_stream(self, request: web.Request) -> web.StreamResponse:
        """The same answer as Server-Sent Events: the answer's text as the model writes it,
        then the whole trace-contract body as the final event (``event: done``)."""
        opened = await self.open(request)
        if isinstance(opened, web.Response):
            return opened
        run, thread, bulkhead = opened
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)

            async def send(text: str) -> None:
                redacted, _ = guardrails.redact(text)  # never stream what the answer redacts
                await response.write(b"data: " + orjson.dumps({"delta": redacted}) + b"\n\n")

            run.sink = send
        except BaseException:
            if bulkhead is not None:
                bulkhead.release()
            raise
        body = await self.finish(run, thread, bulkhead)
        await response.write(b"event: done\ndata: " + orjson.dumps(body) + b"\n\n")
        await response.write_eof()
        return response

    async def open(
        self, request: web.Request
    ) -> tuple[Run, Thread | None, Bulkhead | None] | web.Response:
        """The request's run (and thread), admitted by the tenant's bulkhead; or the answer
        that refuses it."""
        try:
            payload = orjson.loads(await request.read())
            tenant = str(payload.get("tenant_id") or "default")
            text = str(payload["input"])
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return _reply(
                {"status": "error", "output": "expected JSON with tenant_id and input"}, status=400
            )
        policy = self.policy
        run = Run(
            tenant=tenant,
            scope=str(payload.get("auth_scope") or "support:read"),
            text=text,
            request_id=str(payload.get("request_id") or hashlib.sha1(text.encode()).hexdigest()),
            account=str(payload.get("account_ref") or ""),
            propagated={k: v for k in ("traceparent", "baggage") if (v := request.headers.get(k))},
            budget=Budget(
                policy.max_steps,
                policy.max_tokens,
                self.settings.timeout(policy.max_seconds) if policy.max_seconds else None,
                time.monotonic(),
            ),
        )
        thread = None
        if "thread_id" in payload:  # a conversation: its earlier turns go to the model
            thread = self.threads.open(tenant, str(payload.get("thread_id") or "")[:100])
        bulkhead = None
        if policy.bulkheads:
            bulkhead = self.tenant_bulkheads.setdefault(
                tenant, Bulkhead(policy.tenant_concurrency, policy.bulkhead_wait_s)
            )
            if not await bulkhead.acquire():
                # Load shedding per tenant: one tenant's spike must not take the others down.
                run.event("bulkhead_rejected", target=f"tenant:{tenant}")
                return _reply(
                    _body(run, "Too many requests for this tenant; retry shortly.", "error"),
                    status=429,
                )
        return run, thread, bulkhead

    async def finish(
        self, run: Run, thread: Thread | None, bulkhead: Bulkhead | None
    ) -> dict[str, Any]:
        started_ns = time.time_ns()
        try:
            if thread is not None:
                await self.recall(run, thread)
            output, status = await self.answer(run)
        finally:
            if bulkhead is not None:
                bulkhead.release()
        if thread is not None and status != "error":
            # The thread keeps what the tools found too: that is what makes real threads grow.
            thread.turns.append((run.text, "\n".join([output, *run.context])))
        if self.spans is not None:
            self.spans.request(run.propagated, started_ns, time.time_ns(), run.steps, status)
        body = _body(run, output, status)
        if thread is not None:
            body["thread_id"], body["thread_turns"] = thread.id, len(thread.turns)
        if self.settings.telemetry == "otlp":  # the trace goes as spans only
            del body["trace"]
        return body

    async def recall(self, run: Run, thread: Thread) -> None:
        """The thread's context for this turn: folded into a recap first when the profile caps
        it and it has grown past the cap."""
        cap = self.policy.thread_cap
        if cap is not None and thread.size() > cap and len(thread.turns) > 2:
            transcript = "\n".join(m["content"] for m in thread.messages())
            try:
                thread.fold(await self.llm(run, "recap", "mock-small", transcript))
            except (Failed, BudgetExhausted):
                thread.fold(thread.recap or "")  # a recap that failed: the old turns go
        run.history = thread.messages()

    async def answer(self, run: Run) -> tuple[str, str]:
        rule = guardrails.blocked_by(run.text)
        if rule is not None:
            run.add(
                {
                    "kind": "guardrail",
                    "name": "input_policy",
                    "latency_ms": 0.1,
                    "action": "block",
                    "rule": rule,
                }
            )
            return "I can't help with that request.", "ok"
        try:
            intent = await self.classify(run)
            entities = await self.extract(run)
            context = await self.gather(run, intent, entities)
            draft = self.compose(run, intent, entities, context)
        except BudgetExhausted:
            draft = "Partial answer: I stopped before finishing this request (budget reached)."
            run.degraded = True
        except Failed:
            return "The assistant could not complete this request.", "error"
        try:
            if run.exhausted:
                raise BudgetExhausted(run.exhausted)
            output = await self.llm(run, "answer", "mock-large", f"DRAFT:\n{draft}", stream=True)
        except Failed:
            if not self.policy.fallbacks:
                return "The assistant could not complete this request.", "error"
            run.fallback("llm", "template")
            output = draft
        except BudgetExhausted:
            output = draft  # the model never polished it: say so
            run.degraded = True
        started = time.perf_counter()
        output, fired = guardrails.redact(output)
        for rule in fired:
            run.add(
                {
                    "kind": "guardrail",
                    "name": "output_pii",
                    "action": "redact",
                    "rule": rule,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
        return output, "degraded" if run.degraded else "ok"

    async def classify(self, run: Run) -> str:
        try:
            return await self.llm(run, "classify", "mock-small", run.text)
        except Failed:
            if not self.policy.fallbacks:
                raise
            run.fallback("llm", "rules")
            return classify(run.text)

    async def extract(self, run: Run) -> dict[str, Any]:
        try:
            found = orjson.loads(await self.llm(run, "extract", "mock-small", run.text))
            return found if isinstance(found, dict) else {}
        except (Failed, orjson.JSONDecodeError):
            if not self.policy.fallbacks:
                raise Failed("error", "extraction failed") from None
            run.fallback("llm", "rules")
            return extract(run.text)

    async def gather(self, run: Run, intent: str, entities: dict[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {}
        for round_ in range(self.policy.runaway_cap):
            planned = await self.plan(run, intent)
            tools = planned.get("tools", [])
            if "kb_search" in tools:
                context["kb"] = await self.retrieve(run)
            reads = [t for t in tools if t in ("crm_lookup", "logs_read")]
            results = await self.parallel(run, [self.read_tool(run, t, entities) for t in reads])
            context.update(zip(reads, results, strict=True))
            if "billing" in tools and round_ == 0:
                context["billing"] = await self.refund(run, entities, context.get("crm_lookup"))
            if not planned.get("more"):
                break
        return context

    async def plan(self, run: Run, intent: str) -> dict[str, Any]:
        try:
            found = orjson.loads(
                await self.llm(run, "plan", "mock-large", f"intent: {intent}\n{run.text}")
            )
            return found if isinstance(found, dict) else {}
        except (Failed, orjson.JSONDecodeError):
            if not self.policy.fallbacks:
                raise Failed("error", "planning failed") from None
            run.fallback("llm", "rules")
            return plan_by_rules(intent, run.text)

    async def parallel(self, run: Run, calls: list[Any]) -> list[Any]:
        """Independent tool calls at once, at most ``parallel_tools`` of them."""
        gate = asyncio.Semaphore(self.policy.parallel_tools)

        async def one(call: Any) -> Any:
            async with gate:
                return await call

        results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
        for result in results:  # every call has finished; now the first problem counts
            if isinstance(result, BaseException):
                raise result
        return results

    # --- tools -----------------------------------------------------------------------------
    async def retrieve(self, run: Run) -> list[dict[str, Any]]:
        try:
            reply = await self.call(
                run,
                "kb_search",
                "retrieval",
                "POST",
                "/search",
                body={"query": run.text, "top_k": 3},
                cache_args=run.text,
            )
            results = list(reply["results"])
            run.context.extend(r["text"] for r in results)
            return results
        except Failed:
            if not self.policy.fallbacks:
                raise
            run.fallback("kb_search", "keyword")
            started = time.perf_counter()
            results = search(run.text, 2)
            run.add(
                {
                    "kind": "retrieval",
                    "name": "kb_keyword_fallback",
                    "top_k": 2,
                    "chunk_tokens": sum(r["tokens"] for r in results),
                    "cache": "miss",
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
            return results

    async def read_tool(self, run: Run, name: str, entities: dict[str, Any]) -> Any:
        try:
            if name == "crm_lookup":
                order = entities.get("order_id")
                if not order:
                    return None
                return await self.call(
                    run,
                    name,
                    "tool",
                    "GET",
                    f"/orders/{order}",
                    headers={"X-Account-Ref": run.account} if run.account else None,
                    cache_args=order,
                    not_found_ok=True,
                )
            service = entities.get("service") or "checkout"
            logs = await self.call(
                run, name, "tool", "GET", f"/logs?service={service}", cache_args=service, text=True
            )
            # A large output is summarised before it enters the context.
            return await self.llm(run, "summarize", "mock-small", str(logs))
        except Failed:
            if not self.policy.fallbacks:
                raise
            run.fallback(name, "skip")
            return None

    async def refund(self, run: Run, entities: dict[str, Any], order: Any) -> Any:
        body = {
            "order_id": entities.get("order_id"),
            "invoice": entities.get("invoice"),
            "amount": order.get("amount") if isinstance(order, dict) else None,
        }
        if not body["order_id"] and not body["invoice"]:
            return None
        key = f"{run.tenant}:{run.request_id}:{body['order_id'] or body['invoice']}"
        try:
            return await self.call(
                run,
                "billing",
                "tool",
                "POST",
                "/refunds",
                body=body,
                headers={"Idempotency-Key": key},
            )
        except Failed:
            if not self.policy.fallbacks:
                raise
            run.fallback("billing", "queue")
            return {"queued": True}

    # --- the policy around every dependency call -------------------------------------------
    async def call(
        self,
        run: Run,
        name: str,
        kind: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        cache_args: str | None = None,
        text: bool = False,
        not_found_ok: bool = False,
    ) -> Any:
        self.spend(run)
        policy = self.policy
        step: dict[str, Any] = {"kind": kind, "name": name}
        started = time.perf_counter()
        key = None
        if policy.cache and cache_args is not None and name in READ_ONLY_TOOLS:
            # Tenant, auth scope and tool config version are part of the key: a cached answer
            # is only ever served to the same tenant, with the same rights, from the same tool.
            scope = () if self.settings.cache_scope_bug else (run.tenant, run.scope)
            key = (*scope, name, TOOL_CONFIG_VERSION[name], cache_args)
            cached = self.caches[name].get(key)
            step["cache"] = "hit" if cached is not None else "miss"
            if cached is not None:
                return self._done(run, step, started, 0, "ok", None, cached)
        try:
            result, attempts = await self._attempts(
                run, name, method, path, body, headers, text, not_found_ok
            )
        except Failed as failure:
            self._done(run, step, started, failure.attempts, failure.outcome, failure.error, None)
            raise
        if key is not None and result is not None:
            self.caches[name].put(key, result)
        return self._done(run, step, started, attempts, "ok", None, result)

    async def _attempts(
        self,
        run: Run,
        name: str,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str] | None,
        text: bool,
        not_found_ok: bool,
    ) -> tuple[Any, int]:
        policy = self.policy
        breaker = self.breakers[name]
        if policy.breaker and not breaker.allow():
            raise Failed("short_circuited", "circuit open", 0)
        bulkhead = self.bulkheads[name] if policy.bulkheads else None
        if bulkhead is not None and not await bulkhead.acquire():
            raise Failed("error", "bulkhead full", 0)
        url = f"http://{self.routes[name]}{path}"
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout(TIMEOUTS[name]))
        outgoing = {"X-Tenant-Id": run.tenant, **run.propagated, **(headers or {})}
        data = orjson.dumps(body) if body is not None else None
        if data is not None:
            outgoing["Content-Type"] = "application/json"
        outcome, error = "error", "no attempt"
        limiter = self.limiters.get(name)
        # Without validation a body that does not parse is not caught: it takes the request down.
        caught = (aiohttp.ClientError, OSError) + (
            (orjson.JSONDecodeError,) if policy.validate_outputs else ()
        )
        try:
            for attempt in range(policy.retry.attempts):
                retry_after = None
                await self._turn(limiter, attempt)
                try:
                    async with self.session.request(
                        method, url, data=data, headers=outgoing, timeout=timeout
                    ) as response:
                        payload = await response.read()
                        if limiter is not None:
                            limiter.learn(response.headers, response.status)
                        if response.status == 429 or response.status >= 500:
                            # A 429's wait is the limiter's to keep; a 503's is the retry's.
                            held = limiter is not None and response.status == 429
                            raise _Retryable(
                                f"HTTP {response.status}",
                                None if held else _seconds(response.headers.get("Retry-After")),
                            )
                        if response.status == 404 and not_found_ok:
                            breaker.success()
                            return None, attempt + 1
                        if response.status >= 400:
                            reason = _error_code(payload)
                            raise Failed("error", f"HTTP {response.status}{reason}", attempt + 1)
                        result = payload.decode() if text else orjson.loads(payload)
                        problem = output_problem(name, result) if policy.validate_outputs else None
                        if problem is not None:
                            raise _Retryable(f"invalid output: {problem}")
                        breaker.success()
                        return result, attempt + 1
                except TimeoutError:
                    outcome, error = "timeout", "timeout"
                except _Retryable as problem:
                    outcome, error, retry_after = "error", str(problem), problem.retry_after
                except caught as problem:
                    outcome, error = "error", type(problem).__name__
                if policy.breaker and breaker.failure():
                    run.event("circuit_open", target=name)
                if policy.breaker and breaker.state == "open":
                    raise Failed(outcome, error, attempt + 1)
                if attempt + 1 < policy.retry.attempts:
                    if policy.replan_on_error and name != "llm":
                        # The model sees the whole conversation again to decide the retry.
                        transcript = "\n".join([run.text, *run.context])
                        await self.llm(
                            run,
                            "replan",
                            "mock-large",
                            f"{transcript}\ntool {name} failed with {error}; retry?",
                        )
                    delay = policy.retry.delay(attempt, self.rng)
                    if retry_after is not None and policy.retry.base > 0:
                        delay = max(delay, min(retry_after, policy.retry.cap))
                    await asyncio.sleep(self.settings.scaled(delay))
            raise Failed(outcome, error, policy.retry.attempts)
        finally:
            if bulkhead is not None:
                bulkhead.release()

    @staticmethod
    async def _turn(limiter: ClientLimiter | None, attempt: int) -> None:
        """Wait for this call's turn after a 429; a turn too far away is a failed call that
        never went out (its fallback answers)."""
        if limiter is None:
            return
        wait = limiter.reserve()
        if wait is None:
            raise Failed("error", "rate limited: held by Retry-After", attempt)
        if wait > 0:
            await asyncio.sleep(wait)

    def _done(
        self,
        run: Run,
        step: dict[str, Any],
        started: float,
        attempts: int,
        outcome: str,
        error: str | None,
        result: Any,
    ) -> Any:
        step["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        step["attempts"] = attempts
        step["outcome"] = outcome
        if error:
            step["error"] = error
        if step["kind"] == "retrieval":
            step["top_k"] = 3
            results = result.get("results", []) if isinstance(result, dict) else []
            step["chunk_tokens"] = sum(r.get("tokens", 0) for r in results)
        run.add(step)
        return result

    def spend(self, run: Run, tokens: int = 0) -> None:
        """Count a step against the budget, or stop the request when a budget is spent or the
        step's ``tokens`` (a prompt's estimate) would overspend it."""
        exhausted = run.exhausted or run.budget.exhausted(time.monotonic(), tokens)
        if exhausted is not None:
            if run.exhausted is None:
                run.exhausted = exhausted
                run.event("budget_exhausted", budget=exhausted)
            raise BudgetExhausted(exhausted)
        run.budget.steps += 1

    async def llm(self, run: Run, task: str, model: str, user: str, stream: bool = False) -> str:
        self.spend(run, tokens(user) + OUTPUT_ALLOWANCE)
        started = time.perf_counter()
        step: dict[str, Any] = {
            "kind": "llm",
            "name": task,
            "model": model,
            "cached_input_tokens": 0,
        }
        messages = [
            {"role": "system", "content": f"task: {task}. Be brief and exact."},
            *(run.history if task in CONVERSATION_TASKS else ()),
            {"role": "user", "content": user},
        ]
        body = {"model": model, "messages": messages, "stream": stream}
        try:
            if stream:
                content, usage, ttft = await self._stream(run, body)
                step["ttft_ms"] = round(ttft * 1000, 3)
                attempts = 1
            else:
                reply, attempts = await self._attempts(
                    run, "llm", "POST", "/v1/chat/completions", body, None, False, False
                )
                content, usage = reply["choices"][0]["message"]["content"], reply["usage"]
        except Failed as failure:
            step.update(input_tokens=0, output_tokens=0)
            self._done(run, step, started, failure.attempts, failure.outcome, failure.error, None)
            raise
        step["input_tokens"] = usage["prompt_tokens"]
        step["output_tokens"] = usage["completion_tokens"]
        run.budget.tokens += usage["total_tokens"]
        self._done(run, step, started, attempts, "ok", None, None)
        return str(content)

    async def _stream(self, run: Run, body: dict[str, Any]) -> tuple[str, dict[str, int], float]:
        """An SSE completion, one attempt. The resilient profile gives up on a stream that
        falls silent or ends without its end (and falls back); the naive one waits for the
        whole timeout and takes whatever text came."""
        breaker = self.breakers["llm"]
        if self.policy.breaker and not breaker.allow():
            raise Failed("short_circuited", "circuit open", 0)
        limiter = self.limiters.get("llm")
        await self._turn(limiter, 0)
        started = time.perf_counter()
        idle = self.policy.stream_idle_s
        silence = self.settings.timeout(idle) if idle else None  # once the answer has begun
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout(LLM_TIMEOUT))
        pieces: list[str] = []
        usage: dict[str, int] = {}
        ttft = 0.0
        ended = False
        try:
            async with self.session.post(
                f"http://{self.routes['llm']}/v1/chat/completions",
                data=orjson.dumps(body),
                timeout=timeout,
                headers={"Content-Type": "application/json", **run.propagated},
            ) as reply:
                if limiter is not None:
                    limiter.learn(reply.headers, reply.status)
                if reply.status != 200:
                    raise _Retryable(f"HTTP {reply.status}{_error_code(await reply.read())}")
                while line := await asyncio.wait_for(reply.content.readline(), silence):
                    if line.startswith(b"data: [DONE]"):
                        ended = True
                    if not line.startswith(b"data: ") or ended:
                        continue
                    if not pieces:
                        ttft = time.perf_counter() - started
                    event = orjson.loads(line[6:])
                    choice = event["choices"][0]
                    piece = choice["delta"].get("content", "")
                    pieces.append(piece)
                    if piece and run.sink is not None:
                        await run.sink(piece)
                    usage = event.get("usage") or usage
                    ended = ended or bool(choice.get("finish_reason"))
            if not ended and self.policy.validate_outputs:
                raise _Retryable("the stream ended before its end")
        except (
            TimeoutError,
            _Retryable,
            aiohttp.ClientError,
            OSError,
            orjson.JSONDecodeError,
            KeyError,
            IndexError,
            AttributeError,
        ) as problem:
            if self.policy.breaker and breaker.failure():
                run.event("circuit_open", target="llm")
            outcome = "timeout" if isinstance(problem, TimeoutError) else "error"
            raise Failed(outcome, str(problem) or type(problem).__name__, 1) from None
        breaker.success()
        if not usage:
            usage = {"prompt_tokens": 0, "completion_tokens": tokens("".join(pieces))}
            usage["total_tokens"] = usage["completion_tokens"]
        return "".join(pieces), usage, ttft

    # --- the answer ------------------------------------------------------------------------
    def compose(self, run: Run, intent: str, entities: dict[str, Any], ctx: dict[str, Any]) -> str:
        kb = ctx.get("kb") or []
        top = kb[0] if kb else {"title": "Help centre", "text": "See the help centre."}
        order_id, invoice = entities.get("order_id"), entities.get("invoice")
        order = ctx.get("crm_lookup")
        if intent == "refund":
            refund = ctx.get("billing")
            subject = f"invoice {invoice}" if invoice else f"order {order_id}"
            if isinstance(refund, dict) and refund.get("refund_id"):
                amount = refund.get("amount")
                money = f"${amount:.2f} " if isinstance(amount, int | float) else ""
                return (
                    f"Refund of {money}issued for {subject} ({refund['refund_id']}). "
                    f"{_first_sentence(top['text'])}"
                )
            return f"Your refund for {subject} is queued for manual review."
        if intent == "order_status":
            if isinstance(order, dict):
                eta = f", expected {order['eta']}" if order.get("eta") else ""
                account = f" (account {order['account_ref']})" if order.get("account_ref") else ""
                return (
                    f"Order {order_id} ({order['item']}) is {order['status']}{eta}. "
                    f"Updates go to {order['email']}{account}."
                )
            return f"I can't see order {order_id} right now; please try again shortly."
        if intent == "incident_triage":
            service = entities.get("service") or "checkout"
            logs = ctx.get("logs_read") or "logs unavailable"
            return f"{service}: {logs}. See {top['title']}: {_first_sentence(top['text'])}"
        return f"{top['title']}: {top['text']}"


def _first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".") + "."


def _error_code(payload: bytes) -> str:
    """A provider-style error's code (``context_length_exceeded``), for the step's error."""
    try:
        error = orjson.loads(payload).get("error")
        code = error.get("code") if isinstance(error, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return f" {code}" if isinstance(code, str) else ""


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _body(run: Run, output: str, status: str) -> dict[str, Any]:
    return {"output": output, "status": status, "trace": {"steps": run.steps, "events": run.events}}


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
