"""A run's records in memory, read once: the requests and steps tables as pandas frames, their
columns as numpy arrays, and the run's timing. Every figure downstream reads from here."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agentscale.errors import AgentscaleError, ConfigError, Location
from agentscale.records.runfolder import RunInfo, read_run

# The step columns the figures use, and those read as dictionaries (few distinct values).
STEP_COLUMNS = (
    "kind",
    "name",
    "latency_ms",
    "attempts",
    "outcome",
    "error",
    "cache",
    "top_k",
    "chunk_tokens",
    "action",
    "rule",
    "model",
    "input_tokens",
    "output_tokens",
    "start_ms",
    "source",
)
STEP_CATEGORIES = ("kind", "name", "outcome", "error", "cache", "action", "rule", "model", "source")
# Step counts held as 32-bit floats (NaN: not said): exact below 2**24, and half the memory of
# the int64 (or, with a null, float64) column pandas would make of millions of steps.
STEP_COUNTS = ("attempts", "top_k", "chunk_tokens", "input_tokens", "output_tokens")
EXACT_IN_FLOAT32 = 2**24
REQUEST_CATEGORIES = ["workflow", "tenant", "phase", "error_class", "status"]
MAX_NAMES = 100  # distinct step names per kind that the scorecard keeps apart
OTHER = "(other)"
NUMERIC = (
    "latency_ms",
    "service_ms",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "retries",
    "cost_usd",
    "circuit_opens",
    "fallbacks",
    "budget_exhausted",
    "ttft_ms",
    "ttfb_ms",
    "stream_events",
    "unattributed_ms",
)


class StepArrays:
    """The steps' columns as numpy arrays and categorical codes, each made once per steps
    frame when first used, with the rows ordered by (kind, name) once: every group of the
    scorecard then takes a slice of that order instead of sorting or copying millions of
    rows again. Codes are 16-bit (names are folded to ``MAX_NAMES`` a kind)."""

    def __init__(self, steps: pd.DataFrame) -> None:
        self.steps = steps
        self.req: np.ndarray = (
            steps["req"].to_numpy(dtype=np.int32) if "req" in steps else np.zeros(0, np.int32)
        )
        self.codes: dict[str, np.ndarray] = {}
        self.categories: dict[str, list[str]] = {}

    def floats(self, name: str) -> np.ndarray:
        """A numeric column as floats, NaN where the agent did not say (made on each call:
        callers keep what they use)."""
        if name not in self.steps:
            return np.full(len(self.steps), np.nan)
        return _floats(self.steps[name])

    def subset(self, name: str, rows: np.ndarray) -> np.ndarray:
        """A numeric column's values at ``rows``, as floats (NaN: not said), without
        converting the whole column."""
        if name not in self.steps:
            return np.full(rows.size, np.nan)
        column = self.steps[name]
        if column.dtype.kind in "fiu":
            found: np.ndarray = column.to_numpy()[rows].astype(float)
            return found
        return column.iloc[rows].to_numpy(dtype=float, na_value=np.nan)

    @functools.cached_property
    def latency(self) -> np.ndarray:
        return self.floats("latency_ms")

    @functools.cached_property
    def attempts(self) -> np.ndarray:
        return self._count("attempts")

    @functools.cached_property
    def top_k(self) -> np.ndarray:
        return self._count("top_k")

    def _count(self, name: str) -> np.ndarray:
        """A count column as 32-bit floats: the frame's own memory when read as such."""
        column = self.steps.get(name)
        if column is not None and column.dtype == np.float32:
            found: np.ndarray = column.to_numpy()
            return found
        return self.floats(name).astype(np.float32)

    def code_of(self, column: str) -> np.ndarray:
        """The codes of a categorical column (-1: null)."""
        if column not in self.codes:
            found = self.steps.get(column)
            if found is None:
                values = pd.Categorical([None] * len(self.steps))
            else:
                values = found.array if found.dtype == "category" else pd.Categorical(found)
            self.codes[column] = np.asarray(values.codes, dtype=np.int16)
            self.categories[column] = [str(c) for c in values.categories]
        return self.codes[column]

    def names_of(self, column: str) -> list[str]:
        self.code_of(column)
        return self.categories[column]

    def code(self, column: str, value: str) -> int:
        """The code of ``value`` in ``column`` (-2 when no row holds it: matches nothing)."""
        found = self.names_of(column)
        return found.index(value) if value in found else -2

    def _pair(self) -> np.ndarray:
        """kind code * names + name code; -1 where either is null."""
        kind = self.code_of("kind").astype(np.int32)
        name = self.code_of("name").astype(np.int32)
        names = max(len(self.categories["name"]), 1)
        return np.where((kind >= 0) & (name >= 0), kind * names + name, -1).astype(np.int32)

    @functools.cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        pair = self._pair()
        small = pair.size == 0 or int(pair.max()) < np.iinfo(np.int16).max
        keys = pair.astype(np.int16) if small else pair
        order = np.argsort(keys, kind="stable").astype(np.int32)
        return order, np.concatenate([[0], np.cumsum(np.bincount(pair + 1))]).astype(np.int64)

    @property
    def order(self) -> np.ndarray:
        """Row positions sorted by (kind, name) pair (stable; a radix sort on 16-bit pairs)."""
        return self._sorted[0]

    @property
    def pair_bounds(self) -> np.ndarray:
        """Where each pair's run starts in ``order``: [0] for the steps without a kind or a
        name (-1, first), [1 + p] for pair p, and the row count last. Kept instead of the
        sorted pairs, which would be another column of millions of rows."""
        return self._sorted[1]

    def in_order(self, name: str) -> np.ndarray:
        """A column (``req``, ``latency`` or a categorical's codes) in ``order``: a
        group's rows are then a contiguous run, read sequentially."""
        key = f"sorted {name}"
        if key not in self.codes:
            values = {"req": self.req, "latency": self.latency}.get(name)
            column = values if values is not None else self.code_of(name)
            self.codes[key] = column[self.order]
        return self.codes[key]


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """Timestamps as float epoch seconds, whatever unit the column holds."""
    micros: np.ndarray = times.dt.as_unit("us").astype("int64").to_numpy()
    return micros / 1e6


@dataclass
class RunFrames:
    """A run's records, ready for the scorecard."""

    requests: pd.DataFrame  # every row, dropped and cancelled included
    steps: pd.DataFrame  # STEP_COLUMNS, and ``req``: the position of the step's request
    started_at: float  # epoch seconds of the load's start
    duration: float  # seconds of load
    windows: list[tuple[str, float, float]]  # fault windows: name, start, end (offsets)
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _step_arrays: StepArrays | None = field(default=None, repr=False)
    error_classes: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # what was done to the records, and why
    injected: pd.DataFrame | None = None  # faults_injected.parquet: the HTTP stage's faults
    gaps: tuple[np.ndarray, np.ndarray] | None = None  # streamed answers: (request, gap ms)
    # Per http window: what the HTTP stage saw its dependency get (requests, 429s, faults).
    traffic: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Per-request columns as numpy arrays, made once: each group then masks arrays
        instead of copying the frame."""
        if self._arrays is None:
            r = self.requests
            arrays = {
                name: _floats(r[name]) if name in r else np.full(len(r), np.nan) for name in NUMERIC
            }
            arrays["expect"] = _floats(r["expect_ok"].astype("float64"))
            arrays["success"] = r["success"].to_numpy(dtype=bool, na_value=False)
            arrays["dropped"] = r["dropped"].to_numpy(dtype=bool, na_value=False)
            arrays["cancelled"] = (r["error_class"] == "cancelled").to_numpy(
                dtype=bool, na_value=False
            )
            # Sent: an arrival that went out and came back (neither dropped nor cancelled).
            arrays["sent"] = ~arrays["dropped"] & ~arrays["cancelled"]
            arrays["degraded"] = (r["status"] == "degraded").to_numpy(dtype=bool, na_value=False)
            arrays["status_known"] = r["status"].notna().to_numpy(dtype=bool)
            errors = pd.Categorical(r["error_class"])
            arrays["error_code"] = errors.codes
            self.error_classes = [str(c) for c in errors.categories]
            arrays["offset"] = epoch_seconds(r["intended_start"]) - self.started_at
            self._arrays = arrays
        return self._arrays

    @property
    def step_arrays(self) -> StepArrays:
        """The steps as arrays, remade whenever ``steps`` is another frame (spans joined)."""
        if self._step_arrays is None or self._step_arrays.steps is not self.steps:
            self._step_arrays = StepArrays(self.steps)
        return self._step_arrays

    def reset(self) -> None:
        """Forget the arrays made from the frames (after the frames changed)."""
        self._arrays = None
        self._step_arrays = None
        self.error_classes = None

    @property
    def sent(self) -> np.ndarray:
        return self.arrays["sent"]


def _floats(series: pd.Series) -> np.ndarray:
    """A column as floats, NaN where it holds nothing: the column's own memory (read-only)
    when it is floats already, where ``na_value`` would copy millions of rows."""
    if series.dtype == np.float64:
        found: np.ndarray = series.to_numpy()
        return found
    return series.to_numpy(dtype=float, na_value=np.nan)


def attach_steps(requests: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """The scorecard's step columns, with each step's request position (pandas input)."""
    positions = pd.Index(requests["request_id"]).get_indexer(steps["request_id"])
    out = steps[[c for c in STEP_COLUMNS if c in steps]].assign(req=positions)
    out = out[out["req"] >= 0]
    for column in STEP_CATEGORIES:
        if column in out and out[column].dtype != "category":
            out[column] = out[column].astype("category")
    return out


def is_run_folder(run_dir: Path) -> bool:
    return (run_dir / "run.json").is_file() and (run_dir / "requests.parquet").exists()


@contextlib.contextmanager
def damaged_run(run_dir: Path) -> Iterator[None]:
    """Reading a run folder that a crash, a full disk or a hand left half-written is a usage
    error that names the folder, never a traceback."""
    import pyarrow as pa

    try:
        yield
    except AgentscaleError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            pa.ArrowException) as error:  # fmt: skip
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ConfigError(
            f"this run folder cannot be read ({type(error).__name__}: {reason})",
            location=Location(run_dir),
            hint="a run killed mid-write or edited by hand; run `agentscale load` again",
        ) from None


def not_a_run_folder(run_dir: Path) -> ConfigError:
    return ConfigError(
        "not a run folder (no run.json or requests.parquet)",
        location=Location(run_dir),
        hint="pass a folder that agentscale load wrote, e.g. reports/<scenario>/<UTC timestamp>",
    )


def read_frames(
    run_dir: Path,
    started_at: float | None,
    duration: float,
    windows: list[tuple[str, float, float]],
    stage: int | None = None,
) -> RunFrames:
    """The records of ``run_dir``; ``started_at`` None: the first intended start. ``stage``:
    only the records of that stage of a capacity search, as its engine wrote them."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from agentscale.records.writer import REQUEST_COLUMNS
    from agentscale.records.writer import STEP_COLUMNS as STEP_SCHEMA

    def table(
        name: str,
        schema: tuple[tuple[str, pa.DataType], ...],
        columns: list[str] | None = None,
        **options: Any,
    ) -> pa.Table:
        # A run stopped in its first second may not have written one or both folders yet;
        # only agentscale's own parts are read, whatever else lies in the folder.
        pattern = "part-*.parquet" if stage is None else f"part-s{stage:03d}-*.parquet"
        parts = sorted(str(p) for p in (run_dir / name).glob(pattern))
        if not parts:
            return pa.table({column: pa.array([], kind) for column, kind in schema})
        if columns is None:
            return pq.read_table(parts, **options)
        # A run recorded by an older agentscale lacks the newer columns: they read as null.
        present = set(pq.ParquetDataset(parts).schema.names)
        found = pq.read_table(parts, columns=[c for c in columns if c in present],
                              **options)  # fmt: skip
        kinds = dict(schema)
        coded = set(options.get("read_dictionary") or ())
        for column in columns:
            if column not in present:
                # Null, and a dictionary where the column would have read as one: a string
                # column of millions of nulls is tens of MB in pandas, a categorical a few.
                kind = kinds[column]
                kind = pa.dictionary(pa.int32(), kind) if column in coded else kind
                found = found.append_column(column, pa.nulls(len(found), kind))
        return found.select(columns)

    # Strings as dictionaries, and steps tied to their requests by Arrow's own hash lookup:
    # millions of rows load in seconds. Each table is converted column by column, freeing
    # what it converted (self_destruct), so the records are never in memory twice.
    wanted = [name for name, _ in REQUEST_COLUMNS if name not in ON_DISK]
    requests_table = table(
        "requests.parquet", REQUEST_COLUMNS, columns=[*wanted, "event_gaps_ms"],
        read_dictionary=REQUEST_CATEGORIES,
    )  # fmt: skip
    # Each streamed answer's gaps, flat, with the position of their request: exact pooled
    # percentiles without a Python list per row.
    gaps_column = requests_table["event_gaps_ms"]
    gaps = None
    if gaps_column.null_count < len(gaps_column):
        flat = pc.list_flatten(gaps_column)
        gaps = (
            pc.list_parent_indices(gaps_column).to_numpy(zero_copy_only=False).astype(np.int64),
            flat.to_numpy(zero_copy_only=False).astype(np.float64),
        )
    del gaps_column
    ids = requests_table["request_id"]
    requests_table = requests_table.select(wanted)
    step_ids = table("steps.parquet", STEP_SCHEMA, columns=["request_id"])["request_id"]

    # The join is one thread's hash lookups: it runs beside the conversions, which release
    # the interpreter lock for most of their time too.
    with ThreadPoolExecutor(1, thread_name_prefix="join") as pool:
        joined = pool.submit(_locate, step_ids, ids)
        requests = _pandas(requests_table)
        del requests_table
        # A few columns at a time: the steps are never whole in Arrow and in pandas at once.
        pieces = []
        for start in range(0, len(STEP_COLUMNS), 4):
            chunk = list(STEP_COLUMNS[start : start + 4])
            cats = [c for c in chunk if c in STEP_CATEGORIES]
            found = table("steps.parquet", STEP_SCHEMA, columns=chunk, read_dictionary=cats or None)
            pieces.append(_pandas(_narrow_counts(found)))
        positions = joined.result()
    del step_ids, ids
    steps = pd.concat(pieces, axis=1) if pieces else pd.DataFrame()
    del pieces
    steps["req"] = positions
    if (positions < 0).any():  # steps of requests that are not in the records
        steps = steps[positions >= 0]
    del positions
    steps = chosen_source(requests, steps)
    notes = fold_names(steps)
    if started_at is None:
        started_at = requests["intended_start"].min().timestamp() if len(requests) else 0.0
    injected = None
    injected_parts = sorted(
        str(p) for p in (run_dir / "faults_injected.parquet").glob("part-*.parquet")
    )
    if injected_parts:
        injected = pq.read_table(injected_parts).to_pandas()
    pa.default_memory_pool().release_unused()  # what the conversions freed goes back now
    return RunFrames(
        requests, steps, started_at, duration, windows, notes=notes, injected=injected, gaps=gaps
    )


def _narrow_counts(found: Any) -> Any:
    """``found`` with its step counts as 32-bit floats, each where every value is exact so."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for position, name in enumerate(found.column_names):
        column = found.column(position)
        if name not in STEP_COUNTS or not pa.types.is_integer(column.type):
            continue
        extent = pc.min_max(column)
        low, high = extent["min"].as_py(), extent["max"].as_py()
        if low is None or max(-low, high) < EXACT_IN_FLOAT32:
            found = found.set_column(position, name, pc.cast(column, pa.float32()))
    return found


def _locate(step_ids: Any, ids: Any) -> np.ndarray:
    """Each step's request position (-1: none), by Arrow's hash lookup of the ids."""
    import pyarrow.compute as pc

    located = pc.fill_null(pc.index_in(step_ids, value_set=ids), -1)
    found: np.ndarray = located.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return found


# Request columns the figures never read: left in the part files (rewrite_requests carries
# them over), never a Python object per row in memory.
ON_DISK = ("event_gaps_ms", "faults")


def _pandas(found: Any) -> pd.DataFrame:
    import pyarrow as pa

    frame: pd.DataFrame = found.to_pandas(self_destruct=True, split_blocks=True)
    del found
    pa.default_memory_pool().release_unused()  # what the conversion freed goes back now
    return frame


def rewrite_requests(run_dir: Path, requests: pd.DataFrame) -> None:
    """Replace ``requests.parquet`` with ``requests`` (after the run, once its records are
    joined with what arrived later): written aside as one part, then swapped in."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agentscale.records.writer import REQUEST_COLUMNS

    schema = pa.schema([pa.field(name, kind) for name, kind in REQUEST_COLUMNS])
    folder = run_dir / "requests.parquet"
    kept = [name for name in schema.names if name not in ON_DISK]
    table = pa.Table.from_pandas(
        requests[kept], schema=pa.schema([schema.field(n) for n in kept]), preserve_index=False
    )
    # The columns that never went into the frame (ON_DISK): taken over from the parts, whose
    # rows are in the frame's order.
    parts = sorted(str(p) for p in folder.glob("part-*.parquet"))
    present = set(pq.ParquetDataset(parts).schema.names) if parts else set()
    for name in ON_DISK:
        column = pa.nulls(len(table), schema.field(name).type)
        if name in present:
            found = pq.read_table(parts, columns=[name])[name]
            if len(found) == len(table):
                column = found.combine_chunks()
        table = table.append_column(schema.field(name), column)
    table = table.select(schema.names)
    aside = run_dir / ".requests.parquet.new"
    old = run_dir / ".requests.parquet.old"
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    pq.write_table(table, aside / "part-000000.parquet", compression="snappy")
    os.replace(folder, old)
    os.replace(aside, folder)
    shutil.rmtree(old, ignore_errors=True)


def chosen_source(requests: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Each request's steps from the source that counts for it (the response body's trace or
    the agent's spans; both are kept in steps.parquet)."""
    if "source" not in steps or "steps_source" not in requests or steps.empty:
        return steps
    # On booleans, never on millions of strings: a step counts when its source is the one
    # its request's steps come from (otlp, or the body: also when either says nothing).
    wanted = (requests["steps_source"] == "otlp").to_numpy(dtype=bool, na_value=False)
    source = (steps["source"] == "otlp").to_numpy(dtype=bool, na_value=False)
    if not wanted.any() and not source.any():
        return steps
    keep = source == wanted[steps["req"].to_numpy()]
    return steps if keep.all() else steps[keep]


def steps_frame(frames: RunFrames, rows: list[tuple[object, ...]]) -> pd.DataFrame:
    """Rows of ``steps.parquet`` (request id first) as the frames' steps: their scorecard
    columns, categorical where the frames' are, and each step's request position."""
    from agentscale.records.writer import STEP_COLUMNS as STEP_SCHEMA

    names = [name for name, _ in STEP_SCHEMA]
    found = pd.DataFrame.from_records(rows, columns=names)
    positions = pd.Index(frames.requests["request_id"].astype(str)).get_indexer(
        pd.Index(found["request_id"])
    )
    out = found[list(STEP_COLUMNS)].assign(req=positions)
    out = out[out["req"] >= 0]
    for column in STEP_CATEGORIES:
        out[column] = out[column].astype("category")
    return out


def read_spans(run_dir: Path) -> pd.DataFrame | None:
    """``spans.parquet`` (the agent's spans as received), or None when there is none."""
    import pyarrow.parquet as pq

    parts = sorted(str(p) for p in (run_dir / "spans.parquet").glob("part-*.parquet"))
    if not parts:
        return None
    found: pd.DataFrame = pq.read_table(parts).to_pandas()
    return found


def fold_names(steps: pd.DataFrame, limit: int = MAX_NAMES) -> list[str]:
    """Keep the ``limit`` most frequent step names of each kind; fold the rest into one name,
    ``(other)``, so that an agent naming every step afresh cannot make the scorecard's work
    grow with the number of names. Returns what it folded, for the scorecard's notes."""
    if steps.empty or "name" not in steps or steps["name"].dtype != "category":
        return []
    if len(steps["name"].cat.categories) <= limit:
        return []
    counts = steps.groupby(["kind", "name"], observed=True).size()
    notes, keep = [], np.zeros(len(steps), dtype=bool)
    for kind, per_kind in counts.groupby(level=0, observed=True):
        names = per_kind.droplevel(0).sort_values(ascending=False)
        kept = set(names.index[:limit])
        mine = (steps["kind"] == kind).to_numpy(dtype=bool)
        keep |= mine & steps["name"].isin(kept).to_numpy(dtype=bool)
        if len(names) > limit:
            notes.append(
                f"{len(names):,} distinct {kind} step names: all but the {limit} most frequent "
                f"are counted as {OTHER!r}"
            )
    if notes:
        extra = [] if OTHER in steps["name"].cat.categories else [OTHER]
        folded = steps["name"].cat.add_categories(extra)
        steps["name"] = folded.where(keep, OTHER).cat.remove_unused_categories()
    return notes


def load_frames(run_dir: Path) -> RunFrames:
    """A finished run's records and timing, from its folder (a folder that is not a run is a
    ConfigError pointing at it)."""
    if not is_run_folder(run_dir):
        raise not_a_run_folder(run_dir)
    info = read_run(run_dir)
    actual = info.get("actual")
    started = actual["started_at"] if actual else None
    started_at = datetime.fromisoformat(started).timestamp() if started else None
    duration = float((actual["load_seconds"] if actual else 0) or info["planned"]["duration_s"])
    frames = read_frames(run_dir, started_at, duration, fault_windows(info))
    frames.traffic = window_traffic(info)
    return frames


def window_traffic(info: RunInfo) -> dict[str, dict[str, Any]]:
    return dict((info.get("faults") or {}).get("traffic") or {})


def fault_windows(info: RunInfo) -> list[tuple[str, float, float]]:
    windows = (info.get("faults") or {}).get("windows") or []
    return [(str(n), float(a), float(b)) for n, a, b in windows]
