"""The agent's spans joined to the requests that caused them.

Each span's trace id says which request it belongs to (the trace context agentscale sent). The
spans of a request become its steps (``source: otlp``, with their start offsets from the send);
repeated tool spans under one parent that failed until the last are one step with attempts;
tokens and cost are summed from the LLM steps; and, when the scenario prefers spans (the
default), they replace the steps the response body listed for that request. Spans of traces
this run did not start are counted, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
import pandas as pd

from agentscale.config.scenario import SpanRule
from agentscale.records.frames import RunFrames, epoch_seconds
from agentscale.telemetry.context import request_id_of, seq_of
from agentscale.telemetry.pricing import PriceBook
from agentscale.telemetry.spans import classify
from agentscale.telemetry.trace import Step, unattributed

# The request columns that a request's steps decide.
UPDATED = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "tool_calls",
    "retries",
    "cost_usd",
    "unattributed_ms",
    "steps_source",
)


@dataclass
class Joined:
    """What the join found, for the run's notes and the files."""

    spans: int = 0
    requests: int = 0  # requests with at least one step from spans
    unknown: int = 0  # spans of traces this run did not start
    steps: list[tuple[object, ...]] = field(default_factory=list)  # steps.parquet rows


@dataclass
class _Open:
    """A step being built from spans (a tool's attempts are merged)."""

    start: float
    end: float
    parent: str | None
    kind: str
    name: str
    model: str | None
    tokens_in: int | None
    tokens_out: int | None
    cached: int | None
    failed: bool
    error: str | None
    attempts: int = 1


def join_spans(
    frames: RunFrames,
    spans: pd.DataFrame,
    nonce: str | None,
    rules: Sequence[SpanRule] = (),
    dependencies: Mapping[str, str] | None = None,
    prefer: str = "spans",
    prices: PriceBook | None = None,
    default_model: str | None = None,
) -> Joined:
    """Turn ``spans`` into steps of ``frames``' requests, updating the request columns the
    steps decide (tokens, cost, tool calls, retries, unattributed time, whose steps count)."""
    joined = Joined(spans=len(spans))
    if spans.empty or nonce is None:
        joined.unknown = len(spans)
        return joined
    requests = frames.requests
    position = {rid: i for i, rid in enumerate(requests["request_id"].astype(str))}
    sent_at = epoch_seconds(requests["sent_at"])
    service = requests["service_ms"].to_numpy(dtype=float, na_value=np.nan)
    per_request: dict[int, list[_Open]] = {}
    starts = epoch_seconds(spans["start_time"])
    ends = epoch_seconds(spans["end_time"])
    columns_of = {
        name: spans[name].tolist()
        for name in ("trace_id", "name", "kind", "status_code", "status_message",
                     "attributes", "parent_span_id")
    }  # fmt: skip
    for i, (trace, name, kind, code, message, attributes, parent) in enumerate(
        zip(*columns_of.values(), strict=True)
    ):
        seq = seq_of(str(trace), nonce)
        where = position.get(request_id_of(seq)) if seq is not None else None
        if where is None:
            joined.unknown += 1
            continue
        found = classify(
            str(name),
            int(kind),
            orjson.loads(attributes) if attributes else {},
            int(code),
            message if isinstance(message, str) else None,
            rules,
            dependencies,
        )
        if found is None:
            continue
        per_request.setdefault(where, []).append(
            _Open(
                float(starts[i]), float(ends[i]), parent if isinstance(parent, str) else None,
                found.kind, found.name, found.model, found.input_tokens, found.output_tokens,
                found.cached_input_tokens, found.failed, found.error,
            )
        )  # fmt: skip
    if not per_request:
        return joined
    columns = {name: requests[name].astype(object).tolist() for name in UPDATED}
    book = prices or PriceBook({})
    for where, opened in per_request.items():
        rid = str(requests["request_id"].iat[where])
        steps = [
            _step(item, sent_at[where]) for item in _merge_attempts(sorted(opened, key=_begin))
        ]
        joined.steps += [(rid, i, *step) for i, step in enumerate(steps)]
        joined.requests += 1
        if prefer != "spans" and columns["steps_source"][where] == "body":
            continue  # the body's steps count for this request; the spans are kept beside them
        columns["steps_source"][where] = "otlp"
        _tally(columns, where, steps, book, default_model)
        columns["unattributed_ms"][where] = unattributed(steps, float(service[where]))
    for name, values in columns.items():
        requests[name] = pd.Series(values, index=requests.index, dtype=requests[name].dtype)
    frames.reset()
    return joined


def _begin(item: _Open) -> float:
    return item.start


def _merge_attempts(items: list[_Open]) -> list[_Open]:
    """A tool called again under the same parent after it failed is one step, with attempts."""
    merged: list[_Open] = []
    for item in items:
        last = merged[-1] if merged else None
        again = (
            last is not None
            and item.kind == "tool"
            and last.kind == "tool"
            and last.name == item.name
            and last.parent == item.parent
            and last.failed
        )
        if last is not None and again:
            last.end, last.failed, last.error = item.end, item.failed, item.error
            last.attempts += 1
        else:
            merged.append(item)
    return merged


def _step(item: _Open, sent: float) -> Step:
    outcome = "error" if item.failed else "ok"
    return Step(
        kind=item.kind, kind_detail=item.kind, name=item.name,
        latency_ms=max(item.end - item.start, 0.0) * 1000,
        attempts=item.attempts if item.kind == "tool" else None,
        outcome=outcome, error=item.error, cache=None, model=item.model,
        input_tokens=item.tokens_in, output_tokens=item.tokens_out,
        cached_input_tokens=item.cached, top_k=None, chunk_tokens=None, action=None, rule=None,
        start_ms=(item.start - sent) * 1000, source="otlp",
    )  # fmt: skip


def _tally(
    columns: dict[str, list[object]],
    where: int,
    steps: list[Step],
    book: PriceBook,
    default_model: str | None,
) -> None:
    tools = [s for s in steps if s.kind == "tool"]
    columns["tool_calls"][where] = len(tools)
    columns["retries"][where] = sum(max((s.attempts or 1) - 1, 0) for s in tools)
    metered = [s for s in steps if s.input_tokens is not None or s.output_tokens is not None]
    if not metered:
        return
    columns["input_tokens"][where] = sum(s.input_tokens or 0 for s in metered)
    columns["output_tokens"][where] = sum(s.output_tokens or 0 for s in metered)
    cached = sum(s.cached_input_tokens or 0 for s in metered)
    columns["cached_input_tokens"][where] = cached or None
    cost: float | None = 0.0
    for step in metered:
        found = book.cost(
            step.model or default_model,
            step.input_tokens or 0,
            step.output_tokens or 0,
            step.cached_input_tokens or 0,
        )
        cost = None if found is None or cost is None else cost + found
    columns["cost_usd"][where] = cost
