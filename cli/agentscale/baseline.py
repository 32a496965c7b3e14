"""Baselines: the scorecards of one or more runs, and how they were measured."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentscale.errors import ConfigError, Location
from agentscale.runfolder import read_json, write_json

SCHEMA = "agentscale/baseline/v1"


def method(run: dict[str, Any]) -> dict[str, Any]:
    """What must match for two runs to be comparable (and what should, for fairness)."""
    return {
        "scenario": run["scenario"]["name"],
        "scenario_sha256": run["scenario"]["sha256"],
        "dataset_sha256": run["dataset"]["sha256"],
        "load": run["load"],
        "faults": (run.get("faults") or {}).get("sha256"),
        "demo": {k: (run.get("demo") or {}).get(k) for k in ("profile", "time_scale")}
        if run.get("demo")
        else None,
        "environment": {
            k: run["environment"].get(k)
            for k in ("fingerprint", "cpu", "cpu_count", "memory_bytes")
        },
        "versions": run["versions"],
    }


def save(run_dirs: list[Path], name: str, folder: Path) -> Path:
    runs = []
    methods = []
    for run_dir in run_dirs:
        card_path = run_dir / "scorecard.json"
        if not card_path.is_file():
            raise ConfigError(
                "no scorecard.json in this run folder",
                location=Location(run_dir),
                hint=f"run `agentscale scorecard {run_dir}` first",
            )
        info = read_json(run_dir / "run.json")
        methods.append(method(info))
        runs.append(
            {
                "run_id": info["run_id"],
                "verdict": info.get("verdict", {}).get("result"),
                "scorecard": read_json(card_path)["overall"],
            }
        )
    first = methods[0]
    for run_dir, other in zip(run_dirs[1:], methods[1:], strict=True):
        for key in ("scenario_sha256", "dataset_sha256"):
            if other[key] != first[key]:
                raise ConfigError(
                    f"this run's {key.split('_')[0]} differs from the first run's",
                    location=Location(run_dir),
                    hint="a baseline's runs measure the same thing",
                )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    write_json(
        path,
        {
            "schema": SCHEMA,
            "name": name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "method": first,
            "runs": runs,
        },
    )
    return path


def load(path: Path) -> dict[str, Any]:
    try:
        found = read_json(path)
    except FileNotFoundError:
        raise ConfigError(
            "baseline not found",
            location=Location(path),
            hint="save one with `agentscale baseline save RUN --name NAME`",
        ) from None
    except ValueError:
        raise ConfigError("not a baseline file (invalid JSON)", location=Location(path)) from None
    if not isinstance(found, dict) or found.get("schema") != SCHEMA or not found.get("runs"):
        raise ConfigError(
            f"not a baseline file (schema {SCHEMA} expected)", location=Location(path)
        )
    return found


def compatibility(
    baseline: dict[str, Any], run: dict[str, Any], path: Path, force: bool
) -> list[str]:
    """Errors (exit 2) when the baseline measured something else; warnings when the way of
    measuring differs."""
    theirs, ours = baseline["method"], method(run)
    for key, what in (("scenario_sha256", "scenario"), ("dataset_sha256", "dataset")):
        if theirs.get(key) != ours.get(key) and not force:
            raise ConfigError(
                f"the baseline was measured with another {what} ({theirs.get('scenario')}, "
                f"{str(theirs.get(key))[:12]} vs {str(ours.get(key))[:12]})",
                location=Location(path),
                field=f"method.{key}",
                hint="save a baseline for this scenario, or compare anyway with --force",
            )
    warnings = []
    if theirs.get("environment", {}).get("fingerprint") != ours["environment"]["fingerprint"]:
        warnings.append("the baseline ran on another machine (environment fingerprint differs)")
    # What shapes the traffic; settings added later (with their defaults) change nothing.
    traffic = ("model", "shape", "duration", "arrivals", "max_concurrency", "think_time")
    if any((theirs.get("load") or {}).get(k) != (ours.get("load") or {}).get(k) for k in traffic):
        warnings.append("the baseline's load shape or duration differs")
    if theirs.get("faults") != ours.get("faults"):
        warnings.append("the baseline ran with a different fault profile")
    return warnings
