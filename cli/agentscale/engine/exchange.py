"""One request from plan to records: render, send, read the trace, judge, price, record.

``send`` is the adapter to the HTTP client (Locust's, in the engine); this module never
imports Locust, so it is tested with any callable.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from agentscale.config.dataset import Dataset
from agentscale.config.template import MIN_REDACTED, RequestTemplate, secret_forms
from agentscale.engine.plan import PlannedRequest, Planner
from agentscale.engine.session import Conversation, Sessions
from agentscale.records.writer import REQUEST_COLUMNS, RowBuffer
from agentscale.telemetry.body import Trace, TraceReader
from agentscale.telemetry.context import (
    BAGGAGE_KEY,
    trace_id,
    trace_seq,
    traceparent,
)
from agentscale.telemetry.judge import Judge, StreamCut, transport_error_class
from agentscale.telemetry.pricing import PriceBook
from agentscale.telemetry.stream import StreamRead, kind_of, summarise
from agentscale.telemetry.trace import longer_than, unattributed

# method, path, body, headers -> status code (0 if none), content, transport error, and for a
# streamed answer its chunks with their arrival times (``Arrived`` in the adapter)
Send = Callable[
    [str, str, bytes | None, dict[str, str]], tuple[int, bytes, BaseException | None, Any]
]
NO_FAULTS: list[str] = []
REDACTED = b"[redacted]"
REQUEST_INDEX = {name: i for i, (name, _) in enumerate(REQUEST_COLUMNS)}
WARNINGS_KEPT = 1_000  # characters of a request's trace warnings


class Clock:
    """Monotonic time for intervals, mapped onto wall time for the records."""

    def __init__(self) -> None:
        self.mono0 = time.perf_counter()
        self.wall0 = time.time()

    def now(self) -> float:
        return time.perf_counter()

    def wall(self, mono: float) -> float:
        return self.wall0 + (mono - self.mono0)


class LiveLatency:
    """p95 so far for the live view, from a log-scale histogram (1% wide bins): bounded memory
    and constant work per request however long the run. The records stay exact."""

    BINS_PER_DECADE = 230  # 10 ** (1 / 230) is about 1.01

    def __init__(self) -> None:
        self.pending: list[float] = []
        self.counts = np.zeros(8 * self.BINS_PER_DECADE, dtype=np.int64)  # 0.01 ms .. 10^6 ms

    def percentile(self, q: float) -> float | None:
        if self.pending:
            values = np.maximum(np.asarray(self.pending, dtype=float), 0.01)
            self.pending = []
            index = np.log10(values / 0.01) * self.BINS_PER_DECADE
            bins = np.minimum(index.astype(np.int64), len(self.counts) - 1)
            self.counts += np.bincount(bins, minlength=len(self.counts))
        total = int(self.counts.sum())
        if total == 0:
            return None
        rank = int(np.searchsorted(np.cumsum(self.counts), q / 100 * total))
        return float(0.01 * 10 ** ((rank + 1) / self.BINS_PER_DECADE))


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
        requests: RowBuffer,
        steps: RowBuffer,
        clock: Clock,
        phase: Callable[[float], str],
        start: float,
        windows: list[tuple[str, float, float]] | None = None,
        canaries: dict[str, str] | None = None,
        trace_nonce: str | None = None,
        sessions: Sessions | None = None,
        seed: int = 0,
    ) -> None:
        self.method, self.path = method, path
        self.template, self.planner = template, planner
        self.reader, self.judge, self.prices = reader, judge, prices
        self.requests, self.steps = requests, steps
        self.clock, self.phase, self.start = clock, phase, start
        self.windows = windows or []
        self.expected = [item.expected for item in dataset.items]
        self.dataset_items = dataset.items
        self.sessions = sessions or Sessions(None, "")
        self.random = random.Random(seed)
        raw = [
            {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in vs.items()}
            for vs in (item.variables() for item in dataset.items)
        ]
        # Escaped once here, so rendering a request is a join.
        self.escaped = [{k: template.escape(v) for k, v in vs.items()} for vs in raw]
        self.raw = raw
        self.canaries = canaries or {}
        tenants = set(planner.tenants) | set(self.canaries)
        self.escaped_tenants = {t: template.escape(t) for t in tenants}
        self.escaped_canaries = {t: template.escape(c) for t, c in self.canaries.items()}
        # The probe: every other tenant's canary, looked for in each response's bytes.
        self.foreign = {
            t: [(owner, c.encode()) for owner, c in self.canaries.items() if owner != t]
            for t in tenants
        }
        self.dynamic_headers = bool(template.dynamic_headers)
        self.nonce = trace_nonce  # None: no trace context is sent
        self.in_flight: dict[int, tuple[PlannedRequest, float, float, Conversation | None]] = {}
        self.live = LiveLatency()  # for the live view only; the records are the truth
        self.sent = self.completed = self.failed = self.dropped = self.cancelled = 0
        self.open_sessions = 0
        self.unjudged = 0  # requests whose answer agentscale failed to read (a defect of ours)
        # The secrets of ${VAR} references, to redact wherever an agent echoes one back.
        self.secrets = [s for s in template.secrets if len(s) >= MIN_REDACTED]
        self.secret_bytes = sorted(
            {form.encode() for s in self.secrets for form in secret_forms(s)},
            key=len,
            reverse=True,
        )

    def perform(self, send: Send, seq: int, intended: float, tenant: str | None = None) -> None:
        self._exchange(send, self.planner.plan(seq, tenant), intended)

    def converse(
        self,
        send: Send,
        seq: int,
        intended: float,
        tenant: str | None,
        pause: Callable[[float], None],
        stopping: Callable[[], bool],
    ) -> None:
        """One conversation: its turns in order, each carrying the thread so far. A session
        under way when the load ends goes on while the engine drains; one still open when the
        drain gives up (or the run is interrupted) stops there (the rest is never sent)."""
        planned = self.planner.plan(seq, tenant)
        talk = self.sessions.start(planned, self.random)
        self.open_sessions += 1
        try:
            self._turns(send, planned, intended, talk, pause, stopping)
        finally:
            self.open_sessions -= 1

    def _turns(
        self,
        send: Send,
        planned: PlannedRequest,
        intended: float,
        talk: Conversation,
        pause: Callable[[float], None],
        stopping: Callable[[], bool],
    ) -> None:
        for turn in range(1, talk.turns + 1):
            if turn > 1:
                if stopping():
                    break
                pause(self.sessions.think_time)
                if stopping():
                    break
                intended = self.clock.now()
            talk.turn = turn
            this = PlannedRequest(
                f"{planned.request_id}.{turn}", planned.tenant, planned.workflow, planned.item,
                trace_seq(planned.seq, turn),
            )  # fmt: skip
            trace = self._exchange(send, this, intended, talk)
            if trace is None:
                break  # the turn never got an answer: the conversation cannot go on
            self.sessions.after(talk, trace, self.dataset_items[planned.item].turn(turn).prompt)

    def _exchange(
        self,
        send: Send,
        planned: PlannedRequest,
        intended: float,
        talk: Conversation | None = None,
    ) -> Trace | None:
        escaped = dict(self.escaped[planned.item])
        escaped["tenant"] = self.escaped_tenants[planned.tenant]
        escaped["request_id"] = planned.request_id
        escaped["canary"] = self.escaped_canaries.get(planned.tenant, "")
        if talk is not None:
            self.sessions.fill(talk, escaped, self.template, self.dataset_items[planned.item])
        body = self.template.fill_body(escaped)
        if self.dynamic_headers:
            values = dict(self.raw[planned.item])
            values["tenant"], values["request_id"] = planned.tenant, planned.request_id
            values["canary"] = self.canaries.get(planned.tenant, "")
            if talk is not None:
                self.sessions.fill_raw(talk, values, self.dataset_items[planned.item])
            headers = self.template.render_headers(values)
        else:
            headers = self.template.static_headers
        if self.nonce is not None:
            headers = dict(headers)
            headers["traceparent"] = traceparent(self.nonce, planned.seq)
            headers["baggage"] = f"{BAGGAGE_KEY}={planned.request_id}"
        sent = self.clock.now()
        self.sent += 1
        key = planned.seq
        self.in_flight[key] = (planned, intended, sent, talk)
        try:
            code, content, error, arrived = send(self.method, self.path, body, headers)
        except Exception as problem:
            # The client refused the request itself (a header value it cannot send, ...): a
            # defect of the scenario or of agentscale, never a cancellation. The run is invalid.
            self.in_flight.pop(key, None)
            self.unjudged += 1
            row = list(_unsent_row(self, planned, intended, "agentscale_error", sent, talk=talk))
            # (Redacted too: a client's message may quote what it refused.)
            said = self._redact_text(f"not sent: {type(problem).__name__}: {problem}")
            row[REQUEST_INDEX["trace_warnings"]] = said[:WARNINGS_KEPT]
            self.requests.rows.append(tuple(row))
            return None
        except BaseException:
            # The user was stopped mid-request (the run ended or was interrupted): the request
            # is recorded as cancelled, never lost (unless record_cancelled did it already).
            if key in self.in_flight:
                self.requests.rows.append(
                    _unsent_row(self, planned, intended, "cancelled", sent, talk=talk)
                )
                self.cancelled += 1
            raise
        finally:
            self.in_flight.pop(key, None)
        done = self.clock.now()
        try:
            return self._record(planned, intended, sent, done, code, content, error, arrived, talk)
        except Exception as problem:
            # Never a lost record: a request agentscale could not judge is recorded as such,
            # and the run is invalid (the engine counts them for the CLI).
            self.unjudged += 1
            row = list(_unsent_row(self, planned, intended, "agentscale_error", sent, talk=talk))
            row[REQUEST_INDEX["latency_ms"]] = (done - intended) * 1000.0
            row[REQUEST_INDEX["service_ms"]] = (done - sent) * 1000.0
            row[REQUEST_INDEX["status_code"]] = code or None
            row[REQUEST_INDEX["trace_warnings"]] = (
                f"not judged: {type(problem).__name__}: {problem}"[:WARNINGS_KEPT]
            )
            self.requests.rows.append(tuple(row))
            return None

    def _record(
        self,
        planned: PlannedRequest,
        intended: float,
        sent: float,
        done: float,
        code: int,
        content: bytes,
        error: BaseException | None,
        arrived: Any = None,
        talk: Conversation | None = None,
    ) -> Trace | None:
        error_class: str | None
        expect_ok: bool | None
        if self.secret_bytes and any(s in content for s in self.secret_bytes):
            content = self._redact(content)
        streamed = None
        document = content
        if arrived is not None:
            streamed = summarise(arrived.framer)
            if self.secret_bytes and streamed.document is not None:
                streamed.document = self._redact(streamed.document)
            document = streamed.document or b""
            if error is None and not streamed.final:
                error = StreamCut("the stream ended without its final event")
        expected = (
            self.dataset_items[planned.item].turn(talk.turn).expected
            if talk is not None
            else self.expected[planned.item]
        )
        if error is not None:
            trace, success, expect_ok = Trace(), False, None
            error_class = transport_error_class(error)
            if streamed is not None and streamed.text:  # what arrived before it broke off
                trace.output = self._redact_text("".join(streamed.text))
            if arrived is not None and kind_of(arrived.content_type) is None:
                trace.warnings.append(
                    f"read as {arrived.kind} (target.stream), but the answer's Content-Type "
                    f"was {str(arrived.content_type)[:80]!r}"
                )
        else:
            trace = self.reader.read(document)
            if streamed is not None and not trace.output and streamed.text:
                trace.output = self._redact_text("".join(streamed.text))
            if talk is not None:
                self.sessions.learn(talk, trace)
            success, error_class, expect_ok = self.judge.verdict(code, trace, expected)
        latency = (done - intended) * 1000.0
        service = (done - sent) * 1000.0
        steps = trace.steps
        if steps:
            steps = longer_than(steps, service, trace.warnings)
        self.live.pending.append(latency)
        self.completed += 1
        if not success:
            self.failed += 1
        rid = planned.request_id
        if steps:
            self.steps.rows.extend((rid, i, *step) for i, step in enumerate(steps))
        tally = self.prices.tally(trace)
        opens: int | None
        fallbacks: int | None
        budgets: int | None
        opens = fallbacks = budgets = 0 if trace.events_reported or trace.events else None
        for event in trace.events:
            kind = event["type"]
            if kind == "circuit_open":
                opens = (opens or 0) + 1
            elif kind == "fallback":
                fallbacks = (fallbacks or 0) + 1
            elif kind == "budget_exhausted":
                budgets = (budgets or 0) + 1
        leaked = None
        foreign = self.foreign[planned.tenant]
        if foreign:
            for owner, mark in foreign:
                if mark in content:
                    leaked = owner
                    break
        offset = self.clock.wall0 - self.clock.mono0
        self.requests.rows.append(
            (
                rid, planned.workflow, planned.tenant, planned.item,
                intended + offset, sent + offset,
                latency, service, (sent - intended) * 1000.0,
                code or None, error_class, success, trace.status, expect_ok,
                tally.input_tokens, tally.output_tokens, tally.cached_input_tokens,
                len(steps), tally.tool_calls, tally.retries, opens, fallbacks, budgets,
                orjson.dumps(trace.events).decode() if trace.events else None,
                tally.cost_usd, self.phase(intended - self.start),
                self.active(sent - self.start) if self.windows else NO_FAULTS,
                False, len(content),
                None if success and leaked is None else (trace.output or "")[:300],
                leaked,
                "; ".join(trace.warnings)[:WARNINGS_KEPT] if trace.warnings else None,
                trace_id(self.nonce, planned.seq) if self.nonce is not None else None,
                None, unattributed(steps, service), "body" if steps else None,
                *_stream_fields(streamed, arrived, intended),
                *_session_fields(talk),
            )
        )  # fmt: skip
        return None if error is not None else trace

    def _redact_text(self, text: str) -> str:
        if not self.secret_bytes:
            return text
        return self._redact(text.encode()).decode("utf-8", "replace")

    def _redact(self, content: bytes) -> bytes:
        for secret in self.secret_bytes:
            content = content.replace(secret, REDACTED)
        return content

    def active(self, offset: float) -> list[str]:
        """The fault windows planned to be in force ``offset`` seconds into the load."""
        return [name for name, start, end in self.windows if start <= offset < end]

    def record_dropped(self, seq: int, intended: float, tenant: str | None = None) -> None:
        planned = self.planner.plan(seq, tenant)
        self.dropped += 1
        talk = None
        if self.sessions.enabled:  # a dropped session: one row, for the turn it never began
            talk = self.sessions.start(planned, self.random)
            talk.turn = 1
            planned = PlannedRequest(
                f"{planned.request_id}.1", planned.tenant, planned.workflow, planned.item,
                trace_seq(planned.seq, 1),
            )  # fmt: skip
        self.requests.rows.append(
            _unsent_row(self, planned, intended, "dropped", dropped=True, talk=talk)
        )

    def record_cancelled(self) -> int:
        """Requests still in flight when the run was stopped: recorded, never lost."""
        for planned, intended, sent, talk in list(self.in_flight.values()):
            self.requests.rows.append(
                _unsent_row(self, planned, intended, "cancelled", sent, talk=talk)
            )
        self.cancelled += len(self.in_flight)
        self.in_flight.clear()
        return self.cancelled


def _unsent_row(
    exchange: Exchange,
    planned: PlannedRequest,
    intended: float,
    error_class: str,
    sent: float | None = None,
    *,
    dropped: bool = False,
    talk: Conversation | None = None,
) -> tuple[Any, ...]:
    clock = exchange.clock
    return (
        planned.request_id, planned.workflow, planned.tenant, planned.item,
        clock.wall(intended), clock.wall(sent) if sent is not None else None,
        None, None, None, None, error_class, False, None, None, None, None, None,
        0, None, None, None, None, None, None, None, exchange.phase(intended - exchange.start),
        exchange.active(intended - exchange.start),
        dropped, 0, None, None, None, None, None, None, None,
        *NO_STREAM, *_session_fields(talk),
    )  # fmt: skip


NO_STREAM = (None, None, None, None, None, None, None)


def _stream_fields(read: StreamRead | None, arrived: Any, intended: float) -> tuple[Any, ...]:
    """ttfb_ms, ttft_ms (from the intended start), events, gap p50/p95/max, and the gaps."""
    if read is None:
        return NO_STREAM
    gaps = read.gaps_ms
    p50 = p95 = top = None
    if gaps:
        ordered = sorted(gaps)
        p50, p95, top = _rank(ordered, 0.50), _rank(ordered, 0.95), ordered[-1]
    return (
        (arrived.headers_at - intended) * 1000.0,
        (read.ttft - intended) * 1000.0 if read.ttft is not None else None,
        read.events, p50, p95, top, gaps,
    )  # fmt: skip


def _rank(ordered: list[float], q: float) -> float:
    """Linear-interpolated percentile of sorted values (numpy's default), without numpy."""
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def _session_fields(talk: Conversation | None) -> tuple[Any, ...]:
    if talk is None:
        return (None, None, None, None)
    return (talk.session_id, talk.turn, talk.turns, talk.thread_id)
