"""``agentscale load``: prepare the run folder, run the engine, summarise, decide the verdict."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from agentscale import __version__, console
from agentscale import baseline as baselines
from agentscale.chaos import state
from agentscale.chaos.loading import LoadedProfile, load_fault_profile
from agentscale.chaos.rig import FaultRig
from agentscale.chaos.scheduler import FaultScheduler
from agentscale.demo.process import DemoProcess, demo_profile
from agentscale.demo.settings import DEPENDENCIES
from agentscale.engine.launcher import launch
from agentscale.engine.spec import EngineSpec
from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK, Interrupted
from agentscale.judging import Candidate, judge
from agentscale.loading import LoadedScenario, load_scenario
from agentscale.records import EventLog, read_events
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
from agentscale.tenancy import canaries


@dataclass(frozen=True)
class LoadOptions:
    out: Path
    duration: float | None = None
    seed: int | None = None
    allow_remote: tuple[str, ...] = ()
    faults: Path | None = None
    toxiproxy_url: str | None = None
    baseline: Path | None = None
    repeat: int = 1
    force: bool = False
    workers: int = 0
    remote_workers: int = 0
    master_bind: tuple[str, int] = ("127.0.0.1", 0)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def plan_run(loaded: LoadedScenario, options: LoadOptions, run_dir: Path) -> dict[str, Any]:
    scenario = loaded.scenario
    faults = options.faults or (loaded.resolve(scenario.faults) if scenario.faults else None)
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
        "faults": {"file": str(faults), "sha256": sha256_file(faults)} if faults else None,
        "tenants": {
            name: {
                "canary": canary,
                "weight": spec.weight if spec.shape is None else None,
                "shape": spec.shape.model_dump(mode="json") if spec.shape else None,
            }
            for (name, spec), canary in zip(
                scenario.tenant_specs().items(), canaries(scenario).values(), strict=True
            )
        },
    }


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted("stopped by SIGTERM")


def run_load(scenario_path: Path, options: LoadOptions) -> int:
    loaded = load_scenario(scenario_path, allow_remote=options.allow_remote, for_run=True)
    for line in state.clean_leftovers():  # a killed run's faults go before anything starts
        console.print_warning(f"left by an earlier run: {line}")
    scenario = loaded.scenario
    duration = options.duration or scenario.load.duration
    faults_path = options.faults or (loaded.resolve(scenario.faults) if scenario.faults else None)
    profile = None
    if faults_path is not None:
        demo_targets = DEPENDENCIES if scenario.target.url == "demo" else ()
        profile = load_fault_profile(faults_path, demo_targets=demo_targets, duration=duration)
    baseline, warnings = None, []
    if options.baseline is not None:
        # Before any load: a baseline of something else is a usage error (exit 2).
        baseline = baselines.load(options.baseline)
        planned = plan_run(loaded, options, Path("planned"))
        warnings = baselines.compatibility(baseline, planned, options.baseline, options.force)
    candidates: list[Candidate] = []
    for attempt in range(options.repeat):
        if options.repeat > 1:
            console.print_line(f"run {attempt + 1} of {options.repeat}")
        candidates.append(_run_once(loaded, options, duration, profile, faults_path))
        if candidates[-1].interrupted:
            break
    return judge(candidates, scenario.gates, profile.profile if profile else None,
                 options.baseline, baseline, warnings)  # fmt: skip


def _run_once(
    loaded: LoadedScenario,
    options: LoadOptions,
    duration: float,
    profile: LoadedProfile | None,
    faults_path: Path | None,
) -> Candidate:
    scenario = loaded.scenario
    target = scenario.target
    run_dir = create_run_dir(options.out, scenario.name)
    copy_inputs(run_dir, loaded.path, faults_path)
    run = plan_run(loaded, options, run_dir)
    write_json(run_dir / "run.json", run)
    console.print_line(f"agentscale {__version__} · {scenario.name} → {target.url}")
    console.print_line(f"run folder: {run_dir}")
    # Until the engine runs (and forwards signals itself), SIGTERM unwinds like Ctrl-C, so the
    # fault set-up below is always undone.
    previous = signal.signal(signal.SIGTERM, _terminate)
    rig: FaultRig | None = None
    scheduler: FaultScheduler | None = None
    try:
        with contextlib.ExitStack() as stack:
            routes: dict[str, str] = {}
            if profile is not None:
                rig = FaultRig(
                    profile.profile,
                    run_dir,
                    options.toxiproxy_url,
                    DEPENDENCIES if target.url == "demo" else (),
                )
                routes = rig.prepare()
            target_url = None
            if target.url == "demo":
                demo = target.demo or DemoOptions()
                process = stack.enter_context(
                    DemoProcess(
                        demo_profile(demo.profile),
                        demo.time_scale,
                        run_dir / "demo.log",
                        routes=routes,
                        options=demo,
                    )
                )
                target_url = process.agent_url
                run["demo"] = process.description
                console.print_line(
                    f"demo stack ({run['demo']['profile']}, time scale "
                    f"{demo.time_scale:g}) at {target_url}"
                )
            if rig is not None and profile is not None and faults_path is not None:
                rig.connect(run.get("demo", {}).get("services"))
                scheduler = FaultScheduler(
                    rig, profile.profile, EventLog(run_dir / "events.jsonl", time.time())
                )
                run["faults"] = {
                    **run["faults"],
                    "profile": profile.profile.name,
                    "routes": {n: r.__dict__ for n, r in rig.routes.items()},
                    "windows": [[w.name, w.at, w.end] for w in profile.profile.windows],
                }
                console.print_line(
                    f"faults: {profile.profile.name}, {len(profile.profile.windows)} window(s)"
                )
            write_json(run_dir / "run.json", run)
            spec = EngineSpec(
                scenario_path=loaded.path.resolve(),
                run_dir=run_dir.resolve(),
                duration=duration,
                seed=run["seed"],
                target_url=target_url,
                windows=[(w.name, w.at, w.end) for w in profile.profile.windows] if profile else [],
                allow_remote=options.allow_remote,
                parent_pid=os.getpid(),
                canaries={name: t["canary"] for name, t in run["tenants"].items()},
                workers=options.workers,
                remote_workers=options.remote_workers,
                master_bind=options.master_bind,
            )
            with console.LiveView(f"{scenario.name} ({scenario.load.model} model)") as view:

                def on_message(message: dict[str, Any]) -> None:
                    if message.get("type") == "started" and scheduler is not None:
                        scheduler.start(message["started_at"])  # the load's clock, one for all
                    if message.get("type") == "waiting":
                        console.print_line(
                            f"master at {message['master']}: waiting for "
                            f"{message['workers']} worker(s)"
                        )
                    view.update(message)

                outcome = launch(spec, on_message)
    finally:
        signal.signal(signal.SIGTERM, previous)
        leftovers = _tear_down(rig, scheduler)
    fault_problems = [
        f"a fault could not be applied: {f}" for f in (scheduler.failures if scheduler else [])
    ] + [f"a fault could not be removed: {item}" for item in leftovers]
    if scheduler is not None:
        run["faults"]["lateness_ms_max"] = max(scheduler.lateness_ms, default=None)
        run["faults"]["failures"] = fault_problems
    return finish(
        run_dir,
        run,
        loaded,
        outcome.returncode,
        outcome.interrupted,
        outcome.log_tail,
        fault_problems,
    )


def _tear_down(rig: FaultRig | None, scheduler: FaultScheduler | None) -> list[str]:
    if scheduler is not None:
        scheduler.stop()
    if rig is None:
        return []
    leftovers = rig.close()
    for item in leftovers:
        console.print_warning(f"could not undo {item}; `agentscale chaos reset` will retry")
    return leftovers


def finish(
    run_dir: Path,
    run: dict[str, Any],
    loaded: LoadedScenario,
    returncode: int,
    interrupted: bool,
    log_tail: str,
    fault_problems: list[str] | None = None,
) -> Candidate:
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
    # A distributed run's total is in run_ended: each worker logs the plan of its own share.
    planned = (ended or {}).get("planned") or (planned_event["count"] if planned_event else None)
    summary = summarize(requests, load_seconds, planned)
    load = loaded.scenario.load
    problems = validity_problems(
        summary, model=load.model, max_dropped=load.max_dropped, max_lag_ms=load.max_lag_ms
    )
    for lost in (ended or {}).get("workers_lost", []):
        if load.on_worker_loss == "continue":
            console.print_warning(f"{lost}: its share of the load is missing (on_worker_loss)")
        else:
            problems.append(f"{lost}: its share of the load is missing")
    problems.extend(fault_problems or [])
    if returncode not in (EXIT_OK, EXIT_INTERRUPTED):
        problems.insert(
            0, f"the load engine failed (exit {returncode}); engine.log ends:\n{log_tail.strip()}"
        )
    if interrupted:
        verdict = {"result": "interrupted", "reasons": ["stopped by a signal; records kept"]}
    elif problems:
        verdict = {"result": "invalid", "reasons": problems}
    else:
        verdict = {"result": "pass", "reasons": []}
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
        price_sources=ended.get("price_sources", {}) if ended else {},
        verdict=verdict,
    )
    write_json(run_dir / "run.json", run)
    console.print_summary(summary.as_dict(), str(run_dir), verdict)
    return Candidate(run_dir, problems, interrupted)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
