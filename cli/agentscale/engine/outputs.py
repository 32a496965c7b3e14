"""Where an engine's records, events and progress go: the run folder and the CLI (a run on its
own), or the master (a worker). No Locust import: a worker's runner is reached through
``RunnerPort``."""

from __future__ import annotations

import sys
from typing import Any, Protocol

import gevent
import orjson

from agentscale.engine.spec import EngineSpec
from agentscale.records.writer import REQUEST_COLUMNS, STEP_COLUMNS, EventLog, PartWriter, RowBuffer


class RunnerPort(Protocol):
    """What the engine uses of a Locust runner (local or worker)."""

    @property
    def user_count(self) -> int: ...

    def start(self, user_count: int, spawn_rate: float) -> None: ...

    def quit(self) -> None: ...

    def send_message(self, msg_type: str, data: Any = None) -> None: ...


def record_writers(spec: EngineSpec) -> tuple[PartWriter, PartWriter]:
    """The run folder's request and step writers. A capacity stage's parts are named for it
    (one engine a stage writes into the same folder) and its requests carry its number."""
    prefix = "part-" if spec.stage is None else f"part-s{spec.stage:03d}-"
    return (
        PartWriter(spec.run_dir / "requests.parquet", REQUEST_COLUMNS, prefix,
                   constants={"stage": spec.stage}),
        PartWriter(spec.run_dir / "steps.parquet", STEP_COLUMNS, prefix),
    )  # fmt: skip


class LocalOutput:
    """A run on its own: records to the run folder, progress to the CLI on stdout."""

    def __init__(self, spec: EngineSpec, wall0: float) -> None:
        self.events: EventLog | WorkerEvents = EventLog(spec.run_dir / "events.jsonl", wall0)
        self.requests, self.steps = record_writers(spec)

    def flush(self) -> None:
        """Write the records in a native thread: encoding parquet there keeps the arrival
        scheduler on time (it releases the GIL while it works)."""
        requests, steps = self.requests.take(), self.steps.take()
        gevent.get_hub().threadpool.apply(self.write, (requests, steps))

    def write(self, requests: list[Any], steps: list[Any]) -> None:
        self.requests.write(requests)
        self.steps.write(steps)

    def close(self) -> None:
        self.write(self.requests.take(), self.steps.take())

    def emit(self, kind: str, **fields: Any) -> None:
        sys.stdout.write(orjson.dumps({"type": kind, **fields}).decode() + "\n")
        sys.stdout.flush()


class WorkerEvents:
    def __init__(self, runner: RunnerPort) -> None:
        self.runner = runner

    def write(self, kind: str, **fields: Any) -> None:
        self.runner.send_message("as_event", {"kind": kind, "fields": fields})

    def close(self) -> None:
        pass


class WorkerOutput:
    """A worker: records, events and progress go to the master as Locust messages."""

    def __init__(self, runner: RunnerPort) -> None:
        self.runner = runner
        self.events: EventLog | WorkerEvents = WorkerEvents(runner)
        self.requests, self.steps = RowBuffer(), RowBuffer()

    def flush(self) -> None:
        requests, steps = self.requests.take(), self.steps.take()
        if requests or steps:
            self.runner.send_message("as_rows", {"requests": requests, "steps": steps})

    def close(self) -> None:
        self.flush()

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            self.runner.send_message("as_progress", fields)


Output = LocalOutput | WorkerOutput
