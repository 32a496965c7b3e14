"""Baselines: the scorecards of one or more runs, and how they were measured."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, cast

import orjson

from agentscale.analysis.figures import Card, Scorecard
from agentscale.config.metrics import METRICS
from agentscale.errors import ConfigError, Location
from agentscale.jsondata import Json, JsonObject
from agentscale.records.runfolder import RunInfo, read_json, read_run, write_json

SCHEMA = "agentscale/baseline/v1"


class Method(TypedDict):
    """How the baseline was measured: what must match, and what should."""

    scenario: str
    scenario_sha256: str
    dataset_sha256: str
    load: JsonObject
    faults: str | None
    demo: dict[str, Json] | None
    environment: dict[str, Json]
    versions: dict[str, str]


class BaselineRun(TypedDict):
    run_id: str
    verdict: str | None
    scorecard: Card


class Baseline(TypedDict):
    schema: str
    name: str
    created_at: str
    method: Method
    runs: list[BaselineRun]


def method(run: RunInfo) -> Method:
    """What must match for two runs to be comparable (and what should, for fairness)."""
    demo = run.get("demo")
    faults = run.get("faults")
    return {
        "scenario": run["scenario"]["name"],
        "scenario_sha256": run["scenario"].get("measured_sha256") or run["scenario"]["sha256"],
        "dataset_sha256": run["dataset"]["sha256"],
        "load": run["load"],
        "faults": faults.get("sha256") if faults else None,
        "demo": {
            "profile": demo.get("profile"),
            "time_scale": demo.get("time_scale"),
            "jitter": demo.get("jitter", 0.0),
        }
        if demo
        else None,
        "environment": {
            k: run["environment"].get(k)
            for k in ("fingerprint", "cpu", "cpu_count", "memory_bytes")
        },
        "versions": run["versions"],
    }


def save(run_dirs: list[Path], name: str, folder: Path) -> Path:
    runs: list[BaselineRun] = []
    methods: list[Method] = []
    for run_dir in run_dirs:
        card_path = run_dir / "scorecard.json"
        if not card_path.is_file():
            raise ConfigError(
                "no scorecard.json in this run folder",
                location=Location(run_dir),
                hint=f"run `agentscale scorecard {run_dir}` first",
            )
        info = read_run(run_dir)
        status = info.get("status")
        result = (info.get("verdict") or {}).get("result")
        if status != "completed" or result in ("invalid", "interrupted", None):
            raise ConfigError(
                f"this run cannot be a baseline: it is {status or 'unfinished'}"
                + (f", its verdict {result}" if result else ""),
                location=Location(run_dir),
                hint="a baseline is what a trusted run measured: use a completed, valid run",
            )
        card: Scorecard = read_json(card_path)
        methods.append(method(info))
        runs.append(
            {
                "run_id": info["run_id"],
                "verdict": info.get("verdict", {}).get("result"),
                "scorecard": card["overall"],
            }
        )
    first = methods[0]
    for run_dir, other in zip(run_dirs[1:], methods[1:], strict=True):
        for what, mine, theirs in (
            ("scenario", other["scenario_sha256"], first["scenario_sha256"]),
            ("dataset", other["dataset_sha256"], first["dataset_sha256"]),
        ):
            if mine != theirs:
                raise ConfigError(
                    f"this run's {what} differs from the first run's",
                    location=Location(run_dir),
                    hint="a baseline's runs measure the same thing",
                )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    baseline: Baseline = {
        "schema": SCHEMA,
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": first,
        "runs": runs,
    }
    write_json(path, baseline)
    return path


def load(path: Path) -> Baseline:
    try:
        found = read_json(path)
    except FileNotFoundError:
        raise ConfigError(
            "baseline not found",
            location=Location(path),
            hint="save one with `agentscale baseline save RUN --name NAME`",
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            "this is a folder; a baseline is a JSON file",
            location=Location(path),
            hint="e.g. --baseline baselines/main.json",
        ) from None
    except (OSError, ValueError) as error:
        reason = "invalid JSON" if isinstance(error, ValueError) else str(error)
        raise ConfigError(f"not a baseline file ({reason})", location=Location(path)) from None
    problem = _shape_problem(found)
    if problem is not None:
        raise ConfigError(
            f"not a baseline file ({problem})",
            location=Location(path),
            hint="save one with `agentscale baseline save RUN --name NAME`",
        )
    return cast(Baseline, found)


def _shape_problem(found: object) -> str | None:
    """What makes ``found`` something other than a baseline, if anything: the gate reads its
    fields without asking again."""
    if not isinstance(found, dict) or found.get("schema") != SCHEMA:
        return f"schema {SCHEMA} expected"
    if not isinstance(found.get("method"), dict):
        return "no method object"
    for key in ("scenario", "scenario_sha256", "dataset_sha256"):
        if not isinstance(found["method"].get(key), str):
            return f"method.{key} is not a string"
    runs = found.get("runs")
    if not isinstance(runs, list) or not runs:
        return "no runs"
    for number, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("scorecard"), dict):
            return f"runs[{number}] has no scorecard object"
        card = run["scorecard"]
        for name in ("requests", "successes", *METRICS):
            value = card.get(name)
            if value is not None and not (_number(value) and abs(value) < 1e300):
                return f"runs[{number}].scorecard.{name} is not a number"
            if value is not None and value < 0:
                return f"runs[{number}].scorecard.{name} is negative"
            if value is not None and name in RATES and value > 1:
                return f"runs[{number}].scorecard.{name} is above 1"
        block = card.get("block_s")
        if block is not None and not (_number(block) and 0 < block < 1e6):
            return f"runs[{number}].scorecard.block_s is not a number of seconds"
        problem = _replicates_problem(card.get("bootstrap", {})) or _gated_problem(
            card.get("gated", {})
        )
        if problem is not None:
            return f"runs[{number}].scorecard.{problem}"
    return None


RATES = frozenset({"success_rate", "expected_answer_rate"})


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _replicates_problem(found: object) -> str | None:
    if not isinstance(found, dict):
        return "bootstrap is not an object"
    for name, values in found.items():
        if not isinstance(values, list) or not all(_number(v) and abs(v) < 1e300 for v in values):
            return f"bootstrap.{name} is not a list of numbers"
    return None


def _gated_problem(found: object) -> str | None:
    if not isinstance(found, dict):
        return "gated is not an object"
    for key, entry in found.items():
        if not isinstance(entry, dict):
            return f"gated.{key} is not an object"
        if entry.get("scope") not in ("step", "workflow"):
            return f"gated.{key}.scope is not step or workflow"
        if not all(isinstance(entry.get(f), str) for f in ("group", "figure")):
            return f"gated.{key} has no group and figure names"
        if not (_number(entry.get("value")) and abs(entry["value"]) < 1e300):
            return f"gated.{key}.value is not a number"
        if not (isinstance(entry.get("n"), int) and entry["n"] >= 0):
            return f"gated.{key}.n is not a count"
        if entry.get("kind") is not None and not isinstance(entry["kind"], str):
            return f"gated.{key}.kind is not a string"
    return None


def compatibility(baseline: Baseline, run: RunInfo, path: Path, force: bool) -> list[str]:
    """Errors (exit 2) when the baseline measured something else; warnings when the way of
    measuring differs."""
    theirs, ours = baseline["method"], method(run)
    # A baseline saved before gates: were left out of the hash matches the whole file's.
    same_scenario = theirs.get("scenario_sha256") in (
        ours["scenario_sha256"],
        run["scenario"]["sha256"],
    )
    warnings = []
    for key, what, same, our_hash in (
        ("scenario_sha256", "scenario", same_scenario, ours["scenario_sha256"]),
        ("dataset_sha256", "dataset", theirs.get("dataset_sha256") == ours["dataset_sha256"],
         ours["dataset_sha256"]),
    ):  # fmt: skip
        their_hash = theirs.get(key)
        if not same and force:
            warnings.append(f"compared with a baseline of another {what} (--force)")
        elif not same:
            raise ConfigError(
                f"the baseline was measured with another {what} ({theirs.get('scenario')}, "
                f"{str(their_hash)[:12]} vs {our_hash[:12]})",
                location=Location(path),
                field=f"method.{key}",
                hint="save a baseline for this scenario, or compare anyway with --force",
            )
    if theirs.get("environment", {}).get("fingerprint") != ours["environment"]["fingerprint"]:
        warnings.append("the baseline ran on another machine (environment fingerprint differs)")
    # What shapes the traffic; settings added later (with their defaults) change nothing.
    traffic = ("model", "shape", "duration", "arrivals", "max_concurrency", "think_time")
    their_load, our_load = theirs.get("load") or {}, ours["load"]
    differs = [k for k in traffic if their_load.get(k) != our_load.get(k)]
    if differs:
        warnings.append(
            "the baseline's load differs: "
            + "; ".join(
                f"{k} {_short(their_load.get(k))} there, {_short(our_load.get(k))} here"
                for k in differs
            )
        )
    if theirs.get("faults") != ours.get("faults"):
        there, here = (str(h)[:12] if h else "none" for h in (theirs.get("faults"), ours["faults"]))
        warnings.append(
            f"the baseline ran with another fault profile (sha256 {there} there, {here} here)"
        )
    their_demo, our_demo = theirs.get("demo") or {}, ours.get("demo") or {}
    # Before a run (load --baseline) the demo has not started yet: nothing to compare then.
    if our_demo and any(
        their_demo.get(k, 0.0) != our_demo.get(k, 0.0) for k in ("time_scale", "jitter")
    ):
        warnings.append("the baseline ran the demo stack with another time_scale or jitter")
    return warnings


def _short(value: Any) -> str:
    """A setting as one short piece of text, for a warning line."""
    text = "none" if value is None else orjson.dumps(value, default=str).decode()
    return text if len(text) <= 60 else text[:57] + "..."
