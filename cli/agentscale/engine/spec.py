"""What the CLI hands the engine's child process (as JSON in the run folder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agentscale.config.loader import LoadedScenario
from agentscale.config.shapes import Constant

# A local worker's scratch folder (its copy of the scenario and dataset), made and removed by
# the master that starts it: a worker killed with SIGKILL cannot remove its own.
WORKER_DIR_ENV = "AGENTSCALE_WORKER_DIR"


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
    # A capacity stage: one constant open-model rate instead of the scenario's load shape,
    # its number in the records' stage column, and its first sequence number (request ids
    # and trace ids stay unique across the stages of one run folder).
    rate: float | None = Field(None, gt=0)
    stage: int | None = None
    seq_base: int = 0


def log_suffix(spec: EngineSpec) -> str:
    """What names a stage's own files (engine-s003.log): every stage keeps its logs."""
    return "" if spec.stage is None else f"-s{spec.stage:03d}"


def staged(loaded: LoadedScenario, spec: EngineSpec) -> LoadedScenario:
    """The scenario as this engine runs it: a capacity stage's constant rate replaces the load
    shape (open model), the rest as written."""
    if spec.rate is None:
        return loaded
    scenario = loaded.scenario
    shape = Constant(kind="constant", rps=spec.rate)
    load = scenario.load.model_copy(update={"model": "open", "shape": shape})
    return dataclasses.replace(loaded, scenario=scenario.model_copy(update={"load": load}))
