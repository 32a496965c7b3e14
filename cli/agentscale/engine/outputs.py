"""Where an engine's records, events and progress go: the run folder and the CLI (a run on its
own), or the master (a worker). No Locust import: a worker's runner is reached through
``RunnerPort``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Protocol

import gevent
import orjson
import pyarrow as pa

from agentscale.engine.spec import EngineSpec
from agentscale.records.writer import REQUEST_COLUMNS, STEP_COLUMNS, EventLog, PartWriter, RowBuffer


class RunnerPort(Protocol):
    """What the engine uses of a Locust runner (local or worker)."""

    @property
    def user_count(self) -> int: ...

    def start(self, user_count: int, spawn_rate: float) -> None: ...

    def quit(self) -> None: ...

    def send_message(self, msg_type: str, data: Any = None) -> None: ...


def encode(writer: PartWriter) -> pa.Table | None:
    """The rows ``writer`` holds, as a table built on the engine's loop between arrivals."""
    return writer.encode(writer.take(), pause=_pause)


def _pause() -> None:
    # A timer, not sleep(0): the loop then polls and fires the arrivals due before resuming.
    gevent.sleep(0.0001)


def record_writers(
    spec: EngineSpec, folder: Path | None = None, worker: int | None = None
) -> tuple[PartWriter, PartWriter]:
    """The run folder's request and step writers. A capacity stage's parts are named for it
    (one engine a stage writes into the same folder) and its requests carry its number; so
    are a local worker's (``worker``), which writes into the master's ``folder`` itself."""
    prefix = "part-" if spec.stage is None else f"part-s{spec.stage:03d}-"
    if worker is not None:
        prefix += f"w{worker:02d}-"
    folder = folder or spec.run_dir
    return (
        PartWriter(folder / "requests.parquet", REQUEST_COLUMNS, prefix,
                   constants={"stage": spec.stage}),
        PartWriter(folder / "steps.parquet", STEP_COLUMNS, prefix),
    )  # fmt: skip


class LocalOutput:
    """A run on its own: records to the run folder, progress to the CLI on stdout."""

    def __init__(self, spec: EngineSpec, wall0: float) -> None:
        self.events: EventLog | WorkerEvents = EventLog(spec.run_dir / "events.jsonl", wall0)
        self.requests, self.steps = record_writers(spec)
        self.cli_gone = False

    def flush(self) -> None:
        """Encode the records here in slices (the scheduler runs between them), then write
        the parquet in a native thread (it releases the GIL while it works)."""
        tables = encode(self.requests), encode(self.steps)
        gevent.get_hub().threadpool.apply(self.store, tables)

    def store(self, requests: pa.Table | None, steps: pa.Table | None) -> None:
        self.requests.store(requests)
        self.steps.store(steps)

    def close(self) -> None:
        self.requests.flush()
        self.steps.flush()

    def emit(self, kind: str, **fields: Any) -> None:
        if self.cli_gone:
            return
        try:
            sys.stdout.write(orjson.dumps({"type": kind, **fields}).decode() + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The CLI was killed: the parent watch ends the run, its records still written.
            # stdout goes to /dev/null, so that the exit's own flush raises nothing either.
            self.cli_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


class WorkerEvents:
    def __init__(self, runner: RunnerPort) -> None:
        self.runner = runner

    def write(self, kind: str, **fields: Any) -> None:
        self.runner.send_message("as_event", {"kind": kind, "fields": fields})

    def close(self) -> None:
        pass


class WorkerOutput:
    """A worker: events and progress go to the master as Locust messages. So do the records
    of a worker on another machine; one on the master's machine (``local_dir``) writes its
    own part files into the run folder: the master then spends no time on its rows (decoding
    and encoding them took a fifth of a core at 8,000 requests/s)."""

    def __init__(
        self,
        runner: RunnerPort,
        spec: EngineSpec | None = None,
        local_dir: Path | None = None,
        index: int = 0,
    ) -> None:
        self.runner = runner
        self.events: EventLog | WorkerEvents = WorkerEvents(runner)
        self.writers: tuple[PartWriter, PartWriter] | None = None
        self.written = 0
        self.requests: RowBuffer
        self.steps: RowBuffer
        if spec is not None and local_dir is not None:
            self.writers = record_writers(spec, local_dir, index)
            self.requests, self.steps = self.writers
        else:
            self.requests, self.steps = RowBuffer(), RowBuffer()

    def flush(self) -> None:
        if self.writers is not None:
            tables = encode(self.writers[0]), encode(self.writers[1])
            gevent.get_hub().threadpool.apply(self._store, tables)
            return
        requests, steps = self.requests.take(), self.steps.take()
        if requests or steps:
            self.runner.send_message("as_rows", {"requests": requests, "steps": steps})

    def _store(self, requests: pa.Table | None, steps: pa.Table | None) -> None:
        assert self.writers is not None
        self.written += self.writers[0].store(requests)
        self.writers[1].store(steps)

    def close(self) -> None:
        if self.writers is not None:
            self.written += self.writers[0].flush()
            self.writers[1].flush()
        else:
            self.flush()

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            self.runner.send_message("as_progress", fields)


Output = LocalOutput | WorkerOutput
