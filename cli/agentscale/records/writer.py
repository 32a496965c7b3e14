"""Streaming the run's records to disk as it goes.

``requests.parquet`` and ``steps.parquet`` are folders of parquet part files, one written about
every second, each complete on its own (written aside, then renamed into place). A killed run
loses at most the last second; ``pandas.read_parquet(folder)`` reads all of them as one table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_TS = pa.timestamp("us", tz="UTC")

REQUEST_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("request_id", pa.string()),
    ("workflow", pa.string()),
    ("tenant", pa.string()),
    ("item", pa.int32()),
    ("intended_start", _TS),
    ("sent_at", _TS),
    ("latency_ms", pa.float64()),
    ("service_ms", pa.float64()),
    ("lag_ms", pa.float64()),
    ("status_code", pa.int32()),
    ("error_class", pa.string()),
    ("success", pa.bool_()),
    ("status", pa.string()),
    ("expect_ok", pa.bool_()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("cached_input_tokens", pa.int64()),
    ("steps", pa.int32()),
    ("tool_calls", pa.int32()),
    ("retries", pa.int32()),
    ("circuit_opens", pa.int32()),
    ("fallbacks", pa.int32()),
    ("budget_exhausted", pa.int32()),
    ("agent_events", pa.string()),
    ("cost_usd", pa.float64()),
    ("phase", pa.string()),
    ("faults", pa.list_(pa.string())),
    ("dropped", pa.bool_()),
    ("response_bytes", pa.int64()),
    ("output_excerpt", pa.string()),  # what a failed request answered (first 300 characters)
    ("leaked_from", pa.string()),  # the tenant whose canary this response carried
    ("trace_warnings", pa.string()),  # what the agent sent that could not be used, and why
    ("trace_id", pa.string()),  # the W3C trace id the request carried (telemetry.propagate)
    ("fault_hit", pa.string()),  # the windows whose injected faults this request met
    ("unattributed_ms", pa.float64()),  # service time no step accounts for
    ("steps_source", pa.string()),  # whose steps count for this request: body or otlp
    # Streamed answers (SSE or NDJSON); null for an answer read whole.
    ("ttfb_ms", pa.float64()),  # from the intended start to the answer's headers
    ("ttft_ms", pa.float64()),  # from the intended start to the first content event
    ("stream_events", pa.int32()),  # content events (the final one not counted)
    ("gap_p50_ms", pa.float64()),  # between consecutive events of this answer
    ("gap_p95_ms", pa.float64()),
    ("gap_max_ms", pa.float64()),
    ("event_gaps_ms", pa.list_(pa.float32())),  # every gap, for exact pooled percentiles
    # Conversations (workload.sessions); null for a single request.
    ("session_id", pa.string()),
    ("turn", pa.int32()),  # from 1
    ("session_turns", pa.int32()),  # turns the session was to have
    ("thread_id", pa.string()),  # the thread id the turn carried (learned from an answer)
    # A capacity search's stage (agentscale capacity); null for a run of agentscale load.
    ("stage", pa.int32()),
)
STEP_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("request_id", pa.string()),
    ("index", pa.int32()),
    ("kind", pa.string()),
    ("kind_detail", pa.string()),
    ("name", pa.string()),
    ("latency_ms", pa.float64()),
    ("attempts", pa.int32()),
    ("outcome", pa.string()),
    ("error", pa.string()),
    ("cache", pa.string()),
    ("model", pa.string()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("cached_input_tokens", pa.int64()),
    ("top_k", pa.int32()),
    ("chunk_tokens", pa.int64()),
    ("action", pa.string()),
    ("rule", pa.string()),
    ("start_ms", pa.float64()),  # from the request's send, when the agent said (or a span did)
    ("source", pa.string()),  # body (the response's trace) or otlp (the agent's spans)
)
# One row per response the HTTP fault stage made up instead of forwarding.
INJECTED_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("at", _TS),
    ("dependency", pa.string()),
    ("window", pa.string()),
    ("fault", pa.string()),  # the kind: status, rate_limit, stream_cut, corrupt, ...
    ("status", pa.int32()),
    ("trace_id", pa.string()),  # from the traceparent the agent forwarded, if it did
    ("request_id", pa.string()),  # from the baggage (agentscale.request_id), if forwarded
    ("method", pa.string()),
    ("path", pa.string()),
)
# The agent's OpenTelemetry spans, as received (raw, for waterfalls and re-reading).
SPAN_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("parent_span_id", pa.string()),
    ("name", pa.string()),
    ("kind", pa.int32()),  # OTLP span kind: 1 internal, 2 server, 3 client...
    ("start_time", _TS),
    ("end_time", _TS),
    ("status_code", pa.int32()),  # 0 unset, 1 ok, 2 error
    ("status_message", pa.string()),
    ("attributes", pa.string()),  # a JSON object
    ("service", pa.string()),
)
_TIMESTAMP_COLUMNS = {"intended_start", "sent_at", "at", "start_time", "end_time"}


def _schema(columns: tuple[tuple[str, pa.DataType], ...]) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind in columns])


class RowBuffer:
    """Rows in memory as tuples: cheap in the hot path."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def take(self) -> list[tuple[Any, ...]]:
        """The rows buffered so far, leaving an empty buffer (call from the producing thread)."""
        rows, self.rows = self.rows, []
        return rows


SLICE = 256  # rows encoded between two pauses: well under a millisecond


def _go_on() -> None:
    """No pause: a write outside the engine's loop (the master, the end of a run)."""


class PartWriter(RowBuffer):
    """A row buffer written as a part file per ``flush``. ``constants``: columns with one value
    for every row this writer writes, left out of the rows; ``prefix`` names its parts."""

    def __init__(
        self,
        folder: Path,
        columns: tuple[tuple[str, pa.DataType], ...],
        prefix: str = "part-",
        constants: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.constants = constants or {}
        self.columns = tuple(c for c in columns if c[0] not in self.constants)
        self.kinds = dict(columns)
        self.schema = _schema(columns)
        self.prefix = prefix
        self.parts = 0
        folder.mkdir(parents=True, exist_ok=True)
        # An empty first part: readers get the schema even from an empty run, and the
        # conversion path is warmed up before the load starts (no stall at the first flush).
        self._write(self._table([()] * len(self.columns)))

    def write(self, rows: list[tuple[Any, ...]]) -> int:
        """Write ``rows`` as one part; safe to call from another thread, one call at a time."""
        return self.store(self.encode(rows, pause=_go_on))

    def encode(self, rows: list[tuple[Any, ...]], pause: Callable[[], None]) -> pa.Table | None:
        """``rows`` as one table, built ``SLICE`` rows at a time with ``pause()`` between.

        Turning Python values into Arrow holds the GIL: done for a second's rows in a thread,
        it kept an engine's arrival scheduler waiting 25-55 ms at 3,000 requests/s (130-200 ms
        when flushing every 5 s). In slices on the engine's own loop, nothing waits longer than
        one slice; ``store`` then writes the table, which releases the GIL, in a thread."""
        if not rows:
            return None
        tables = []
        for start in range(0, len(rows), SLICE):
            tables.append(self._table(list(zip(*rows[start : start + SLICE], strict=True))))
            pause()
        return pa.concat_tables(tables)

    def store(self, table: pa.Table | None) -> int:
        """Write a table from ``encode`` as one part (safe from another thread)."""
        if table is None:
            return 0
        self._write(table)
        return int(table.num_rows)

    def flush(self) -> int:
        return self.write(self.take())

    def _table(self, columns: list[tuple[Any, ...]]) -> pa.Table:
        table = to_table(self.columns, columns)
        if not self.constants:
            return table
        for name, value in self.constants.items():
            kind = self.kinds[name]
            column = pa.repeat(pa.scalar(value, kind), len(table))
            table = table.append_column(pa.field(name, kind), column)
        return table.select(self.schema.names)

    def _write(self, table: pa.Table) -> None:
        name = f"{self.prefix}{self.parts:06d}.parquet"
        aside = self.folder / f".{name}.tmp"
        pq.write_table(table, aside, compression="snappy")
        os.replace(aside, self.folder / name)
        self.parts += 1


Columns = tuple[tuple[str, pa.DataType], ...]


def to_table(columns: Columns, values: list[tuple[Any, ...]]) -> pa.Table:
    """A table of ``columns`` from one tuple of values per column."""
    arrays = []
    for (name, kind), column in zip(columns, values, strict=True):
        if name in _TIMESTAMP_COLUMNS:
            # Epoch seconds as floats in the hot path; microseconds at rest.
            seconds = pa.array(column, pa.float64())
            micros = pc.cast(pc.multiply(seconds, 1e6), pa.int64(), safe=False)
            arrays.append(micros.cast(kind))
        else:
            arrays.append(_array(column, kind))
    return pa.Table.from_arrays(arrays, schema=_schema(columns))


def append_part(folder: Path, columns: Columns, rows: list[tuple[Any, ...]], tag: str) -> None:
    """One more part file in ``folder`` (rows known only after the run: the steps that came as
    spans), named by ``tag`` so that it never replaces one of the engine's."""
    if not rows:
        return
    folder.mkdir(parents=True, exist_ok=True)
    table = to_table(columns, list(zip(*rows, strict=True)))
    aside = folder / f".part-{tag}.parquet.tmp"
    pq.write_table(table, aside, compression="snappy")
    os.replace(aside, folder / f"part-{tag}.parquet")


def _array(values: tuple[Any, ...], kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # An agent sent a value of the wrong type (a string latency, say): keep the row and
        # null that value, rather than lose a second of records.
        return pa.array([_coerce(value, kind) for value in values], kind)


def _coerce(value: Any, kind: pa.DataType) -> Any:
    if value is None or (isinstance(value, bool) and not pa.types.is_boolean(kind)):
        return None
    if pa.types.is_integer(kind):
        if not isinstance(value, int | float) or value != value or abs(value) == float("inf"):
            return None
        bound = 2 ** (kind.bit_width - 1)  # a value that does not fit is dropped, not the row
        return int(value) if -bound <= value < bound else None
    if pa.types.is_floating(kind):
        return float(value) if isinstance(value, int | float) else None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else None
    if pa.types.is_boolean(kind):
        return value if isinstance(value, bool) else None
    return value


class EventLog:
    """``events.jsonl``: one JSON object a line, written through at once."""

    def __init__(self, path: Path, started: float) -> None:
        self.started = started
        self.file: TextIO = path.open("a", encoding="utf-8", buffering=1)

    def write(self, kind: str, **fields: Any) -> None:
        now = time.time()
        record = {
            "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "t": round(now - self.started, 3),
            "type": kind,
            **fields,
        }
        self.file.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")

    def close(self) -> None:
        self.file.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            events.append(event)
    return events
