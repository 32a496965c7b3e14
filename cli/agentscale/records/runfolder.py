"""The run folder (README "The run folder"): where it goes, and ``run.json``, written atomically."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import orjson

from agentscale.jsondata import JsonObject

RUN_SCHEMA = "agentscale/run/v1"


def create_run_dir(out: Path, scenario_name: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = out / scenario_name / stamp
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{stamp}-{n}")


def copy_inputs(run_dir: Path, scenario_path: Path, faults_path: Path | None) -> None:
    """The files as run; ``${VAR}`` stays a reference, so no secret is copied."""
    shutil.copyfile(scenario_path, run_dir / "scenario.yaml")
    if faults_path is not None:
        shutil.copyfile(faults_path, run_dir / "faults.yaml")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("agentscale", "locust", "pandas", "pyarrow", "pydantic", "gevent"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def environment() -> dict[str, Any]:
    """What decides how fast the load generator can be: recorded so runs can be compared."""
    cpu = _cpu_model()
    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
    }
    stable = {k: facts[k] for k in ("machine", "cpu", "cpu_count", "memory_bytes")}
    facts["fingerprint"] = hashlib.sha256(
        orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:16]
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def write_json(path: Path, data: Any) -> None:
    aside = path.with_name(f".{path.name}.tmp")
    aside.write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    )
    os.replace(aside, path)


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


class FileRef(TypedDict):
    file: str
    sha256: str


class ScenarioRef(FileRef):
    name: str
    measured_sha256: NotRequired[str]  # without its gates: (runs before 0.2 have none)


class DatasetRef(FileRef):
    items: int


class FaultsRef(TypedDict, total=False):
    file: str
    sha256: str
    profile: str
    routes: dict[str, dict[str, str | None]]
    windows: list[tuple[str, float, float]]
    lateness_ms_max: float | None
    failures: list[str]
    # Per http window: the dependency's requests while it was in place, 429s, faults made.
    traffic: dict[str, dict[str, Any]]


class TenantRef(TypedDict):
    canary: str
    weight: float | None
    shape: JsonObject | None


class Planned(TypedDict):
    duration_s: float
    created_at: str | None


class Actual(TypedDict):
    started_at: str | None
    load_ended_at: str | None
    ended_at: str | None
    load_seconds: float
    cpu_max: float | None
    cpu_mean: float | None


class RunVerdict(TypedDict, total=False):
    result: str
    reasons: list[str]
    verdict_file: str


class DemoRef(TypedDict, total=False):
    agent: str
    profile: str
    time_scale: float
    jitter: float
    services: dict[str, str]
    routes: dict[str, str]


class OtlpRef(TypedDict, total=False):
    endpoint: str
    received: int | None
    spans: int
    requests_with_spans: int
    unknown_trace_spans: int


class RunInfo(TypedDict, total=False):
    """``run.json``: how the run was planned, what ran, and how it ended."""

    schema: str
    run_id: str
    agentscale: str
    status: str  # running | completed | failed | interrupted
    scenario: ScenarioRef
    dataset: DatasetRef
    seed: int
    target: dict[str, str]
    load: JsonObject
    versions: dict[str, str]
    environment: JsonObject
    planned: Planned
    faults: FaultsRef | None
    tenants: dict[str, TenantRef]
    demo: DemoRef
    actual: Actual
    summary: JsonObject
    price_sources: dict[str, str]
    verdict: RunVerdict
    exit_code: int
    workers: int  # local Locust workers (master/worker mode), when any
    trace_nonce: str  # the first half of every trace id the run's requests carried
    otlp: OtlpRef  # the span receiver: where it listened, what it received and joined


def read_run(run_dir: Path) -> RunInfo:
    found: RunInfo = read_json(run_dir / "run.json")
    return found


def write_run(run_dir: Path, info: RunInfo) -> None:
    write_json(run_dir / "run.json", info)
