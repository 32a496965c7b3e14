"""The run folder (DESIGN "Run folder"): where it goes, and ``run.json``, written atomically."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agentscale.errors import ConfigError, Location

if TYPE_CHECKING:
    from agentscale.scorecard import RunFrames

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


def load_frames(run_dir: Path) -> RunFrames:
    """The run's records and timing, for the scorecard; a folder that is not a run is a
    ConfigError pointing at it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from agentscale.scorecard import STEP_CATEGORIES, STEP_COLUMNS, RunFrames

    info_path = run_dir / "run.json"
    if not info_path.is_file() or not (run_dir / "requests.parquet").exists():
        raise ConfigError(
            "not a run folder (no run.json or requests.parquet)",
            location=Location(run_dir),
            hint="pass a folder that agentscale load wrote, e.g. "
            "reports/<scenario>/<UTC timestamp>",
        )
    info = read_json(info_path)
    # Strings as dictionaries, and steps tied to their requests by Arrow's own hash lookup:
    # millions of rows load in seconds.
    requests_table = pq.read_table(
        run_dir / "requests.parquet",
        read_dictionary=["workflow", "tenant", "phase", "error_class", "status"],
    )
    requests = requests_table.to_pandas()
    step_columns = ["request_id", *STEP_COLUMNS]
    steps_table = pq.read_table(
        run_dir / "steps.parquet", columns=step_columns, read_dictionary=list(STEP_CATEGORIES)
    )
    positions = pc.index_in(steps_table["request_id"], value_set=requests_table["request_id"])
    steps = steps_table.drop_columns(["request_id"]).to_pandas()
    steps["req"] = positions.to_numpy(zero_copy_only=False)
    steps = steps[steps["req"].notna()].astype({"req": "int64"})
    actual = info.get("actual") or {}
    started = actual.get("started_at")
    started_at = (
        datetime.fromisoformat(started).timestamp()
        if started
        else (requests["intended_start"].min().timestamp() if len(requests) else 0.0)
    )
    duration = float(actual.get("load_seconds") or info["planned"]["duration_s"])
    windows = [tuple(w) for w in (info.get("faults") or {}).get("windows", [])]
    return RunFrames(
        requests=requests,
        steps=steps,
        started_at=started_at,
        duration=duration,
        windows=[(str(n), float(a), float(b)) for n, a, b in windows],
    )
