"""``agentscale load``: prepare the run folder, run the engine, summarise, decide the verdict."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentscale import __version__, console
from agentscale.demo.process import DemoProcess, demo_profile
from agentscale.engine.launcher import launch
from agentscale.engine.spec import EngineSpec
from agentscale.errors import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from agentscale.loading import LoadedScenario, load_scenario
from agentscale.records import read_events
from agentscale.runfolder import (
    RUN_SCHEMA,
    copy_inputs,
    create_run_dir,
    environment,
    versions,
    write_json,
)
from agentscale.scenario import DemoOptions
from agentscale.summary import read_requests, summarize, validity_problems


@dataclass(frozen=True)
class LoadOptions:
    out: Path
    duration: float | None = None
    seed: int | None = None
    allow_remote: tuple[str, ...] = ()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def plan_run(loaded: LoadedScenario, options: LoadOptions, run_dir: Path) -> dict[str, Any]:
    scenario = loaded.scenario
    duration = options.duration or scenario.load.duration
    if options.seed is not None:
        seed = options.seed
    elif scenario.seed is not None:
        seed = scenario.seed
    else:
        seed = secrets.randbits(32)
    return {
        "schema": RUN_SCHEMA,
        "run_id": f"{scenario.name}/{run_dir.name}",
        "agentscale": __version__,
        "status": "running",
        "scenario": {
            "name": scenario.name,
            "file": str(loaded.path),
            "sha256": loaded.scenario_sha256,
        },
        "dataset": {
            "file": str(loaded.dataset.path),
            "sha256": loaded.dataset_sha256,
            "items": len(loaded.dataset.items),
        },
        "seed": seed,
        "target": {"url": scenario.target.url, "method": scenario.target.method},
        "load": {**scenario.load.model_dump(mode="json"), "duration": duration},
        "versions": versions(),
        "environment": environment(),
        "planned": {"duration_s": duration, "created_at": _iso(datetime.now(UTC).timestamp())},
    }


def run_load(scenario_path: Path, options: LoadOptions) -> int:
    loaded = load_scenario(scenario_path, allow_remote=options.allow_remote, for_run=True)
    scenario = loaded.scenario
    run_dir = create_run_dir(options.out, scenario.name)
    faults = loaded.resolve(scenario.faults) if scenario.faults else None
    copy_inputs(run_dir, loaded.path, faults)
    run = plan_run(loaded, options, run_dir)
    write_json(run_dir / "run.json", run)
    target = scenario.target
    console.print_line(f"agentscale {__version__} · {scenario.name} → {target.url}")
    console.print_line(f"run folder: {run_dir}")
    with contextlib.ExitStack() as stack:
        target_url = None
        if target.url == "demo":
            demo = target.demo or DemoOptions()
            profile = demo_profile(demo.profile)
            stack_process = stack.enter_context(
                DemoProcess(profile, demo.time_scale, run_dir / "demo.log")
            )
            target_url = stack_process.agent_url
            run["demo"] = stack_process.description
            write_json(run_dir / "run.json", run)
            console.print_line(
                f"demo stack ({profile}, time scale {demo.time_scale:g}) at {target_url}"
            )
        spec = EngineSpec(
            scenario_path=loaded.path.resolve(),
            run_dir=run_dir.resolve(),
            duration=run["planned"]["duration_s"],
            seed=run["seed"],
            target_url=target_url,
            allow_remote=options.allow_remote,
            parent_pid=os.getpid(),
        )
        with console.LiveView(f"{scenario.name} ({scenario.load.model} model)") as view:
            outcome = launch(spec, view.update)
    return finish(run_dir, run, loaded, outcome.returncode, outcome.interrupted, outcome.log_tail)


def finish(
    run_dir: Path,
    run: dict[str, Any],
    loaded: LoadedScenario,
    returncode: int,
    interrupted: bool,
    log_tail: str,
) -> int:
    events = read_events(run_dir / "events.jsonl")
    started = next((e for e in events if e["type"] == "run_started"), None)
    ended = next((e for e in events if e["type"] == "run_ended"), None)
    planned_event = next((e for e in events if e["type"] == "arrivals_planned"), None)
    started_at = started["started_at"] if started else None
    load_ended_at = ended["load_ended_at"] if ended else None
    load_seconds = (
        load_ended_at - started_at if started_at and load_ended_at else run["planned"]["duration_s"]
    )
    interrupted = interrupted or returncode == EXIT_INTERRUPTED
    if not interrupted:
        # A completed open-model schedule ends at its last arrival, just short of the window.
        load_seconds = max(load_seconds, run["planned"]["duration_s"])
    requests = read_requests(run_dir)
    if len(requests) and started_at is not None:
        last_send = requests["sent_at"].max()
        if last_send is not None and last_send == last_send:
            load_seconds = max(load_seconds, last_send.timestamp() - started_at)
    summary = summarize(requests, load_seconds, planned_event["count"] if planned_event else None)
    load = loaded.scenario.load
    problems = validity_problems(
        summary, model=load.model, max_dropped=load.max_dropped, max_lag_ms=load.max_lag_ms
    )
    if returncode not in (EXIT_OK, EXIT_INTERRUPTED):
        problems.insert(0, f"the load engine failed (exit {returncode}); engine.log ends:\n"
                        f"{log_tail.strip()}")  # fmt: skip
    if interrupted:
        verdict = {"result": "interrupted", "reasons": ["stopped by a signal; records kept"]}
        code = EXIT_INTERRUPTED
    elif problems:
        verdict = {"result": "invalid", "reasons": problems}
        code = EXIT_INVALID
    else:
        verdict = {"result": "pass", "reasons": []}
        code = EXIT_OK
    unpriced = ended.get("unpriced_models", []) if ended else []
    if unpriced:
        console.print_warning(
            "no price for model(s) " + ", ".join(unpriced) + ": cost is unknown, not zero;"
            " add them under pricing: in the scenario"
        )
    run.update(
        status="interrupted" if interrupted else ("completed" if returncode == 0 else "failed"),
        actual={
            "started_at": _iso(started_at),
            "load_ended_at": _iso(load_ended_at),
            "ended_at": _iso(ended["ended_at"]) if ended else None,
            "load_seconds": load_seconds,
            "cpu_max": ended.get("cpu_max") if ended else None,
            "cpu_mean": ended.get("cpu_mean") if ended else None,
        },
        summary=summary.as_dict(),
        verdict=verdict,
        exit_code=code,
    )
    write_json(run_dir / "run.json", run)
    console.print_summary(summary.as_dict(), str(run_dir), verdict)
    return code
