"""One run of ``agentscale load``: the run folder, the fault rig, the demo stack, the engine,
and the records read back once into the summary and the candidate the gate judges."""

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

import pandas as pd

from agentscale import __version__, console
from agentscale.analysis.attribution import attribute_faults
from agentscale.analysis.availability import target_losses
from agentscale.analysis.spanjoin import Joined, join_spans
from agentscale.analysis.summary import summarize, validity_problems
from agentscale.chaos import state
from agentscale.chaos.rig import FaultRig
from agentscale.chaos.scheduler import FaultScheduler
from agentscale.config.loader import LoadedProfile, LoadedScenario
from agentscale.config.scenario import DemoOptions, Otlp, Scenario
from agentscale.config.traffic import canaries
from agentscale.demo import DEPENDENCIES, KINDS, DemoProcess, demo_profile
from agentscale.engine.launcher import EngineOutcome, launch
from agentscale.engine.spec import EngineSpec
from agentscale.errors import EXIT_INTERRUPTED, EXIT_OK, Interrupted
from agentscale.gate.verdict import Candidate
from agentscale.jsondata import JsonObject
from agentscale.records.frames import (
    RunFrames,
    chosen_source,
    read_frames,
    read_spans,
    rewrite_requests,
    steps_frame,
    window_traffic,
)
from agentscale.records.receiver import SpanReceiver
from agentscale.records.runfolder import (
    RUN_SCHEMA,
    RunInfo,
    RunVerdict,
    copy_inputs,
    create_run_dir,
    environment,
    versions,
    write_run,
)
from agentscale.records.writer import STEP_COLUMNS, EventLog, append_part, read_events
from agentscale.telemetry.context import new_nonce
from agentscale.telemetry.pricing import PriceBook


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


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def plan_run(loaded: LoadedScenario, options: LoadOptions, run_dir: Path) -> RunInfo:
    scenario = loaded.scenario
    faults = options.faults or (loaded.resolve(scenario.faults) if scenario.faults else None)
    duration = options.duration or scenario.load.duration
    if options.seed is not None:
        seed = options.seed
    elif scenario.seed is not None:
        seed = scenario.seed
    else:
        seed = secrets.randbits(32)
    load: JsonObject = {**scenario.load.model_dump(mode="json"), "duration": duration}
    return {
        "schema": RUN_SCHEMA,
        "run_id": f"{scenario.name}/{run_dir.name}",
        "agentscale": __version__,
        "status": "running",
        "scenario": {
            "name": scenario.name,
            "file": str(loaded.path),
            "sha256": loaded.scenario_sha256,
            "measured_sha256": loaded.measured_sha256,
        },
        "dataset": {
            "file": str(loaded.dataset.path),
            "sha256": loaded.dataset_sha256,
            "items": len(loaded.dataset.items),
        },
        "seed": seed,
        "trace_nonce": new_nonce(),
        "workers": options.workers,
        "target": {"url": scenario.target.url, "method": scenario.target.method},
        "load": load,
        "versions": versions(),
        "environment": environment(),
        "planned": {"duration_s": duration, "created_at": iso(datetime.now(UTC).timestamp())},
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


def run_once(
    loaded: LoadedScenario,
    options: LoadOptions,
    duration: float,
    profile: LoadedProfile | None,
    faults_path: Path | None,
) -> Candidate:
    scenario = loaded.scenario
    run_dir = create_run_dir(options.out, scenario.name)
    copy_inputs(run_dir, loaded.path, faults_path)
    run = plan_run(loaded, options, run_dir)
    write_run(run_dir, run)
    try:
        state.register_run(run_dir)  # killed with -9, the next run or chaos reset closes it
        return _run(loaded, options, duration, profile, run_dir, run)
    except BaseException as error:
        # run.json never stays "running": a run stopped or broken before its end says so.
        stopped = isinstance(error, KeyboardInterrupt | Interrupted)
        run["status"] = "interrupted" if stopped else "failed"
        run["verdict"] = {"result": "interrupted" if stopped else "invalid",
                          "reasons": [str(error) or type(error).__name__]}  # fmt: skip
        write_run(run_dir, run)
        raise
    finally:
        state.release_run(run_dir)


def _run(
    loaded: LoadedScenario,
    options: LoadOptions,
    duration: float,
    profile: LoadedProfile | None,
    run_dir: Path,
    run: RunInfo,
) -> Candidate:
    scenario = loaded.scenario
    target = scenario.target
    console.print_line(f"agentscale {__version__} · {scenario.name} → {target.url}")
    console.print_line(f"run folder: {run_dir}")
    # Until the engine runs (and forwards signals itself), SIGTERM unwinds like Ctrl-C, so the
    # fault set-up below is always undone.
    previous = signal.signal(signal.SIGTERM, _terminate)
    rig: FaultRig | None = None
    scheduler: FaultScheduler | None = None
    receiver: SpanReceiver | None = None
    otlp = otlp_settings(scenario)
    try:
        with contextlib.ExitStack() as stack:
            routes: dict[str, str] = {}
            demo_targets = DEPENDENCIES if target.url == "demo" else ()
            if profile is not None:
                rig = FaultRig(profile.profile, run_dir, options.toxiproxy_url, demo_targets)
                routes = rig.prepare()
            if otlp is not None:
                receiver = stack.enter_context(SpanReceiver(run_dir, otlp.listen))
                run["otlp"] = {"endpoint": receiver.endpoint}
                console.print_line(
                    f"spans: OTLP/HTTP receiver at {receiver.endpoint} "
                    f"(OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint})"
                )
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
                        otlp_endpoint=receiver.endpoint if receiver else None,
                    )
                )
                target_url = process.agent_url + ("/stream" if demo.stream else "")
                run["demo"] = process.description
                console.print_line(
                    f"demo stack ({process.description['profile']}, time scale "
                    f"{demo.time_scale:g}) at {target_url}"
                )
            if rig is not None and profile is not None and run["faults"] is not None:
                rig.connect(run.get("demo", {}).get("services"))
                scheduler = FaultScheduler(
                    rig, profile.profile, EventLog(run_dir / "events.jsonl", time.time())
                )
                run["faults"] = {
                    **run["faults"],
                    "profile": profile.profile.name,
                    "routes": {n: r.__dict__ for n, r in rig.routes.items()},
                    "windows": [(w.name, w.at, w.end) for w in profile.profile.windows],
                }
                console.print_line(
                    f"faults: {profile.profile.name}, {len(profile.profile.windows)} window(s)"
                )
            write_run(run_dir, run)
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
                trace_nonce=run["trace_nonce"],
                propagate=(scenario.telemetry.propagate if scenario.telemetry else "traceparent")
                == "traceparent",
            )
            outcome = _drive(spec, f"{scenario.name} ({scenario.load.model} model)", scheduler)
            if receiver is not None and otlp is not None:
                # An SDK sends its spans in batches: the last ones arrive after the last answer.
                stopped = outcome.interrupted or outcome.returncode == EXIT_INTERRUPTED
                receiver.finish(0.0 if stopped else otlp.grace)
                run["otlp"] = {"endpoint": receiver.endpoint, "received": receiver.received}
    finally:
        signal.signal(signal.SIGTERM, previous)
        leftovers = _tear_down(rig, scheduler)
    fault_problems = [f"a fault failed: {f}" for f in (scheduler.failures if scheduler else [])] + [
        f"a fault could not be removed: {item}" for item in leftovers
    ]
    if scheduler is not None and run["faults"] is not None:
        run["faults"]["lateness_ms_max"] = max(scheduler.lateness_ms, default=None)
        run["faults"]["failures"] = fault_problems
    if rig is not None and run["faults"] is not None and rig.traffic:
        run["faults"]["traffic"] = rig.traffic
    kinds = dict(KINDS) if target.url == "demo" else {}
    if profile is not None:
        kinds.update({d.name: d.kind for d in profile.profile.dependencies})
    addresses = {
        address: name for name, address in (run.get("demo", {}).get("routes") or {}).items()
    }
    if rig is not None:
        addresses.update({r.agent_address: name for name, r in rig.routes.items()})
    return finish(run_dir, run, loaded, outcome, fault_problems, kinds, addresses)


def _drive(spec: EngineSpec, title: str, scheduler: FaultScheduler | None) -> EngineOutcome:
    """Run the engine with the live view; faults start on the load's own clock."""
    with console.LiveView(title) as view:

        def on_message(message: dict[str, object]) -> None:
            started = message.get("started_at")
            if message.get("type") == "started" and scheduler is not None:
                assert isinstance(started, float)
                scheduler.start(started)  # the load's clock, one for all
            if message.get("type") == "waiting":
                console.print_line(
                    f"master at {message['master']}: waiting for {message['workers']} worker(s)"
                )
            view.update(message)

        return launch(spec, on_message)


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
    run: RunInfo,
    loaded: LoadedScenario,
    outcome: EngineOutcome,
    fault_problems: list[str],
    kinds: dict[str, str] | None = None,
    addresses: dict[str, str] | None = None,
) -> Candidate:
    """Read the records once, join what arrived beside them (the faults injected), summarise
    them, and say whether the run can be trusted."""
    events = read_events(run_dir / "events.jsonl")
    started = next((e for e in events if e["type"] == "run_started"), None)
    ended = next((e for e in events if e["type"] == "run_ended"), None)
    planned_event = next((e for e in events if e["type"] == "arrivals_planned"), None)
    started_at = started["started_at"] if started else None
    load_ended_at = ended["load_ended_at"] if ended else None
    load_seconds = (
        load_ended_at - started_at if started_at and load_ended_at else run["planned"]["duration_s"]
    )
    interrupted = outcome.interrupted or outcome.returncode == EXIT_INTERRUPTED
    if not interrupted:
        # A completed open-model schedule ends at its last arrival, just short of the window.
        load_seconds = max(load_seconds, run["planned"]["duration_s"])
    windows = [(n, float(a), float(b)) for n, a, b in (run.get("faults") or {}).get("windows", [])]
    frames = read_frames(run_dir, started_at, load_seconds, windows)
    frames.traffic = window_traffic(run)
    joined = join_telemetry(run_dir, frames, run, loaded.scenario, addresses or {})
    met = attribute_faults(frames, run.get("trace_nonce"), kinds or {})
    if met or joined.requests:
        rewrite_requests(run_dir, frames.requests)  # what arrived beside the records, kept
    requests = frames.requests
    if len(requests) and started_at is not None:
        last_send = requests["sent_at"].max()
        if last_send is not None and last_send == last_send:
            load_seconds = max(load_seconds, last_send.timestamp() - started_at)
            frames.duration = load_seconds
    # A distributed run's total is in run_ended: each worker logs the plan of its own share.
    planned = (ended or {}).get("planned") or (planned_event["count"] if planned_event else None)
    summary = summarize(frames, load_seconds, planned)
    load = loaded.scenario.load
    problems = validity_problems(
        summary, model=load.model, max_dropped=load.max_dropped, max_lag_ms=load.max_lag_ms
    )
    for lost in (ended or {}).get("workers_lost", []):
        if load.on_worker_loss == "continue":
            console.print_warning(f"{lost}: its share of the load is missing (on_worker_loss)")
        else:
            problems.append(f"{lost}: its share of the load is missing")
    problems.extend(fault_problems)
    unjudged = int((ended or {}).get("unjudged") or 0)
    if unjudged:
        problems.append(
            f"agentscale could not send or judge {unjudged:,} request(s) (error class "
            "agentscale_error: a header value the client refused, or a defect of agentscale; "
            "see their trace_warnings and engine.log)"
        )
    for loss in target_losses(frames):
        log = EventLog(run_dir / "events.jsonl", started_at or 0.0)
        log.write("target_lost", at=round(loss.at, 3), until=loss.until, requests=loss.requests)
        log.close()
        if load.on_target_loss == "continue":
            console.print_warning(f"{loss.describe()} (on_target_loss: continue)")
        else:
            problems.append(loss.describe())
    if outcome.returncode not in (EXIT_OK, EXIT_INTERRUPTED):
        problems.insert(
            0,
            f"the load engine failed (exit {outcome.returncode}); engine.log ends:\n"
            f"{outcome.log_tail.strip()}",
        )
    verdict: RunVerdict
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
    if interrupted:
        run["status"] = "interrupted"
    else:
        run["status"] = "completed" if outcome.returncode == 0 else "failed"
    run["actual"] = {
        "started_at": iso(started_at),
        "load_ended_at": iso(load_ended_at),
        "ended_at": iso(ended["ended_at"]) if ended else None,
        "load_seconds": load_seconds,
        "cpu_max": ended.get("cpu_max") if ended else None,
        "cpu_mean": ended.get("cpu_mean") if ended else None,
    }
    run["summary"] = summary.as_json()
    run["price_sources"] = ended.get("price_sources", {}) if ended else {}
    run["verdict"] = verdict
    write_run(run_dir, run)
    console.print_summary(summary, str(run_dir), verdict)
    return Candidate(run_dir, run, frames, loaded.scenario, problems, interrupted)


def otlp_settings(scenario: Scenario) -> Otlp | None:
    """The receiver's settings, when spans are expected: the scenario's ``telemetry.otlp``,
    or the defaults when the demo agent is told to send its trace as spans."""
    telemetry = scenario.telemetry
    if telemetry is not None and telemetry.otlp is not None:
        return telemetry.otlp
    demo = scenario.target.demo
    if scenario.target.url == "demo" and demo is not None and demo.telemetry != "body":
        return Otlp()
    return None


def join_telemetry(
    run_dir: Path,
    frames: RunFrames,
    run: RunInfo,
    scenario: Scenario,
    addresses: dict[str, str],
) -> Joined:
    """The agent's spans (``spans.parquet``) as steps of their requests (kept as a part of
    ``steps.parquet`` of their own, ``source: otlp``)."""
    spans = read_spans(run_dir)
    if spans is None:
        return Joined()
    telemetry = scenario.telemetry
    joined = join_spans(
        frames, spans, run.get("trace_nonce"),
        rules=telemetry.spans if telemetry else (),
        dependencies=addresses,
        prefer=telemetry.prefer if telemetry else "spans",
        prices=PriceBook(scenario.pricing),
        default_model=telemetry.default_model if telemetry else None,
    )  # fmt: skip
    append_part(run_dir / "steps.parquet", STEP_COLUMNS, joined.steps, "otlp")
    if joined.steps:
        frames.steps = pd.concat([frames.steps, steps_frame(frames, joined.steps)])
        frames.steps = chosen_source(frames.requests, frames.steps)
    found = run.setdefault("otlp", {})
    found["spans"] = joined.spans
    found["requests_with_spans"] = joined.requests
    found["unknown_trace_spans"] = joined.unknown
    console.print_line(
        f"spans: {joined.spans:,} received, {joined.requests:,} request(s) covered, "
        f"{joined.unknown:,} of traces this run did not start"
    )
    if joined.unknown:
        frames.notes.append(
            f"{joined.unknown:,} span(s) belonged to traces this run did not start "
            "(counted, not joined: a request without agentscale's traceparent starts its own)"
        )
    return joined


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
