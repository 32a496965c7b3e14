"""What the CLI hands the engine's child process (as JSON in the run folder)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class EngineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario_path: Path
    run_dir: Path
    duration: float
    seed: int
    target_url: str | None = None  # the demo stack's address when target.url is demo
    windows: list[tuple[str, float, float]] = []  # fault windows: name, start, end (offsets)
    allow_remote: tuple[str, ...] = ()
    canaries: dict[str, str] = {}  # tenant -> canary, for {{canary}} and the leakage probe
    workers: int = 0  # local worker processes (Locust master/worker mode when any)
    remote_workers: int = 0  # workers expected from other machines
    master_bind: tuple[str, int] = ("127.0.0.1", 0)
    progress_every: float = 0.5
    flush_every: float = 1.0
    parent_pid: int | None = None
    trace_nonce: str = "0000000000000001"  # the first half of every trace id of the run
    propagate: bool = True  # send traceparent and baggage with each request
