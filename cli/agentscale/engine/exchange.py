"""One request from plan to records: render, send, read the trace, judge, price, record.

``send`` is the adapter to the HTTP client (Locust's, in the engine); this module never
imports Locust, so it is tested with any callable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from agentscale.dataset import Dataset
from agentscale.engine.plan import PlannedRequest, Planner
from agentscale.judge import Judge, transport_error_class
from agentscale.pricing import PriceBook
from agentscale.records import PartWriter
from agentscale.template import RequestTemplate
from agentscale.trace import STEP_KINDS, Trace, TraceReader, as_float, as_int

# method, path, body, headers -> status code (0 if none), content, transport error
Send = Callable[[str, str, bytes | None, dict[str, str]], tuple[int, bytes, BaseException | None]]
NO_FAULTS: list[str] = []


class Clock:
    """Monotonic time for intervals, mapped onto wall time for the records."""

    def __init__(self) -> None:
        self.mono0 = time.perf_counter()
        self.wall0 = time.time()

    def now(self) -> float:
        return time.perf_counter()

    def wall(self, mono: float) -> float:
        return self.wall0 + (mono - self.mono0)


class Exchange:
    def __init__(
        self,
        *,
        method: str,
        path: str,
        template: RequestTemplate,
        dataset: Dataset,
        planner: Planner,
        reader: TraceReader,
        judge: Judge,
        prices: PriceBook,
        requests: PartWriter,
        steps: PartWriter,
        clock: Clock,
        phase: Callable[[float], str],
        start: float,
    ) -> None:
        self.method, self.path = method, path
        self.template, self.planner = template, planner
        self.reader, self.judge, self.prices = reader, judge, prices
        self.requests, self.steps = requests, steps
        self.clock, self.phase, self.start = clock, phase, start
        self.expected = [item.expected for item in dataset.items]
        self.variables = [
            {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in vs.items()}
            for vs in (item.variables() for item in dataset.items)
        ]
        self.in_flight: dict[int, tuple[PlannedRequest, float, float]] = {}
        self.latencies: list[float] = []  # for the live view only; the records are the truth
        self.completed = self.failed = self.dropped = 0

    def perform(self, send: Send, seq: int, intended: float) -> None:
        planned = self.planner.plan(seq)
        values = dict(self.variables[planned.item])
        values["tenant"] = planned.tenant
        values["request_id"] = planned.request_id
        body = self.template.render_body(values)
        headers = self.template.render_headers(values)
        sent = self.clock.now()
        self.in_flight[seq] = (planned, intended, sent)
        try:
            code, content, error = send(self.method, self.path, body, headers)
        finally:
            self.in_flight.pop(seq, None)
        done = self.clock.now()
        self._record(planned, intended, sent, done, code, content, error)

    def _record(
        self,
        planned: PlannedRequest,
        intended: float,
        sent: float,
        done: float,
        code: int,
        content: bytes,
        error: BaseException | None,
    ) -> None:
        error_class: str | None
        expect_ok: bool | None
        if error is not None and not code:
            trace, success, expect_ok = Trace(), False, None
            error_class = transport_error_class(error)
        else:
            trace = self.reader.read(content)
            success, error_class, expect_ok = self.judge.verdict(
                code, trace, self.expected[planned.item]
            )
        latency = (done - intended) * 1000.0
        self.latencies.append(latency)
        self.completed += 1
        if not success:
            self.failed += 1
        tool_calls = retries = 0
        rid = planned.request_id
        step_rows = self.steps.rows
        for index, step in enumerate(trace.steps):
            kind = step.get("kind")
            kind = kind if isinstance(kind, str) else "other"
            attempts = as_int(step.get("attempts"))
            if kind == "tool":
                tool_calls += 1
                retries += max((attempts or 1) - 1, 0)
            step_rows.append(_step_row(rid, index, kind, step, attempts))
        counts = _event_counts(trace.events)
        self.requests.rows.append(
            (
                rid,
                planned.workflow,
                planned.tenant,
                planned.item,
                self.clock.wall(intended),
                self.clock.wall(sent),
                latency,
                (done - sent) * 1000.0,
                (sent - intended) * 1000.0,
                code or None,
                error_class,
                success,
                trace.status,
                expect_ok,
                trace.input_tokens,
                trace.output_tokens,
                trace.cached_input_tokens,
                len(trace.steps),
                tool_calls,
                retries,
                counts[0],
                counts[1],
                counts[2],
                orjson.dumps(trace.events).decode() if trace.events else None,
                self.prices.cost(trace),
                self.phase(intended - self.start),
                NO_FAULTS,
                False,
                len(content),
            )
        )

    def record_dropped(self, seq: int, intended: float) -> None:
        planned = self.planner.plan(seq)
        self.dropped += 1
        self.requests.rows.append(_unsent_row(self, planned, intended, "dropped", dropped=True))

    def record_cancelled(self) -> int:
        """Requests still in flight when the run was stopped: recorded, never lost."""
        for planned, intended, _sent in list(self.in_flight.values()):
            self.requests.rows.append(_unsent_row(self, planned, intended, "cancelled"))
        cancelled = len(self.in_flight)
        self.in_flight.clear()
        return cancelled


def _unsent_row(
    exchange: Exchange,
    planned: PlannedRequest,
    intended: float,
    error_class: str,
    *,
    dropped: bool = False,
) -> tuple[Any, ...]:
    wall = exchange.clock.wall(intended)
    return (
        planned.request_id, planned.workflow, planned.tenant, planned.item, wall, None,
        None, None, None, None, error_class, False, None, None, None, None, None,
        0, 0, 0, 0, 0, 0, None, None, exchange.phase(intended - exchange.start), NO_FAULTS,
        dropped, 0,
    )  # fmt: skip


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _step_row(
    rid: str, index: int, kind: str, step: dict[str, Any], attempts: int | None
) -> tuple[Any, ...]:
    tokens_in = step.get("input_tokens", step.get("prompt_tokens"))
    tokens_out = step.get("output_tokens", step.get("completion_tokens"))
    return (
        rid, index, kind if kind in STEP_KINDS else "other", kind, _text(step.get("name")),
        as_float(step.get("latency_ms")), attempts, _text(step.get("outcome")),
        _text(step.get("error")), _text(step.get("cache")), _text(step.get("model")),
        as_int(tokens_in), as_int(tokens_out), as_int(step.get("cached_input_tokens")),
        as_int(step.get("top_k")), as_int(step.get("chunk_tokens")),
        _text(step.get("action")), _text(step.get("rule")),
    )  # fmt: skip


def _event_counts(events: list[dict[str, Any]]) -> tuple[int, int, int]:
    opens = fallbacks = budgets = 0
    for event in events:
        kind = event.get("type")
        if kind == "circuit_open":
            opens += 1
        elif kind == "fallback":
            fallbacks += 1
        elif kind == "budget_exhausted":
            budgets += 1
    return opens, fallbacks, budgets
