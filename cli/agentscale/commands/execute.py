"""One run of ``agentscale load``: the run folder, the fault rig, the demo stack, the engine,
and the records read back once into the summary and the candidate the gate judges."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

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
from agentscale.config.scenario import DemoOptions, Otlp, Scenario, Target
from agentscale.config.template import MIN_REDACTED, unredacted
from agentscale.config.traffic import canaries
from agentscale.demo import DEPENDENCIES, KINDS, DemoProcess, demo_profile
from agentscale.engine import spare
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
    more: bool = False,
) -> Candidate:
    scenario = loaded.scenario
    run_dir = create_run_dir(options.out, scenario.name)
    copy_inputs(run_dir, loaded.path, faults_path)
    run = plan_run(loaded, options, run_dir)
    write_run(run_dir, run)
    try:
        state.register_run(run_dir)  # killed with -9, the next run or chaos reset closes it
        return _run(loaded, options, duration, profile, run_dir, run, more)
    except BaseException as error:
        # run.json never stays "running": a run stopped or broken before its end says so.
        stopped = isinstance(error, KeyboardInterrupt | Interrupted)
        reason = str(error) or ("stopped by a signal" if stopped else type(error).__name__)
        if isinstance(error, ScoringStopped):
            reason = (f"stopped while the records were scored; they are complete, and "
                      f"`agentscale report {run_dir}` scores them")  # fmt: skip
            console.print_line(f"interrupted: {reason}")
        run["status"] = "interrupted" if stopped else "failed"
        run["verdict"] = {"result": "interrupted" if stopped else "invalid", "reasons": [reason]}
        if stopped:
            run["exit_code"] = EXIT_INTERRUPTED
        write_run(run_dir, run)
        raise
    finally:
        state.release_run(run_dir)


class RunStack:
    """What a run needs besides the engine, up for one engine run or for many (a capacity
    search): the fault rig, the span receiver, the demo stack. Entered, it has them started;
    left on any path, every fault it made is undone and every process stopped. Until an
    engine runs (and forwards signals itself), SIGTERM unwinds like Ctrl-C."""

    def __init__(
        self,
        loaded: LoadedScenario,
        options: LoadOptions,
        profile: LoadedProfile | None,
        run_dir: Path,
        run: RunInfo,
    ) -> None:
        self.loaded, self.options, self.profile = loaded, options, profile
        self.run_dir, self.run = run_dir, run
        self.rig: FaultRig | None = None
        self.receiver: SpanReceiver | None = None
        self.otlp = otlp_settings(loaded.scenario)
        self.target_url: str | None = None
        self.stack = contextlib.ExitStack()
        self.fault_failures: list[str] = []
        self.lateness_ms: list[float] = []
        self.leftovers: list[str] = []

    def __enter__(self) -> RunStack:
        self.previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            self._start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._close()

    def _start(self) -> None:
        scenario, run, run_dir = self.loaded.scenario, self.run, self.run_dir
        target = scenario.target
        routes: dict[str, str] = {}
        demo_targets = DEPENDENCIES if target.url == "demo" else ()
        profile = self.profile
        if profile is not None:
            self.rig = FaultRig(profile.profile, run_dir, self.options.toxiproxy_url, demo_targets)
            routes = self.rig.prepare()
        if self.otlp is not None:
            self.receiver = self.stack.enter_context(SpanReceiver(run_dir, self.otlp.listen))
            run["otlp"] = {"endpoint": self.receiver.endpoint}
            console.print_line(
                f"spans: OTLP/HTTP receiver at {self.receiver.endpoint} "
                f"(OTEL_EXPORTER_OTLP_ENDPOINT={self.receiver.endpoint})"
            )
        if target.url == "demo":
            demo = target.demo or DemoOptions()
            process = self.stack.enter_context(
                DemoProcess(
                    demo_profile(demo.profile),
                    demo.time_scale,
                    run_dir / "demo.log",
                    routes=routes,
                    options=demo,
                    otlp_endpoint=self.receiver.endpoint if self.receiver else None,
                )
            )
            self.target_url = process.agent_url + ("/stream" if demo.stream else "")
            run["demo"] = process.description
            console.print_line(
                f"demo stack ({process.description['profile']}, time scale "
                f"{demo.time_scale:g}) at {self.target_url}"
            )
        if self.rig is not None and profile is not None and run["faults"] is not None:
            self.rig.connect(run.get("demo", {}).get("services"))
            run["faults"] = {
                **run["faults"],
                "profile": profile.profile.name,
                "routes": {n: r.__dict__ for n, r in self.rig.routes.items()},
                "windows": [(w.name, w.at, w.end) for w in profile.profile.windows],
            }
            console.print_line(
                f"faults: {profile.profile.name}, {len(profile.profile.windows)} window(s)"
            )
        write_run(run_dir, run)

    def spec(self, *, duration: float, seed: int, **stage: float | int) -> EngineSpec:
        """The engine's spec for one run of it (``stage``: a capacity stage's rate, number
        and first sequence number)."""
        scenario, run, options = self.loaded.scenario, self.run, self.options
        windows = self.profile.profile.windows if self.profile else []
        return EngineSpec(
            scenario_path=self.loaded.path.resolve(),
            run_dir=self.run_dir.resolve(),
            duration=duration,
            seed=seed,
            target_url=self.target_url,
            windows=[(w.name, w.at, w.end) for w in windows],
            allow_remote=options.allow_remote,
            parent_pid=os.getpid(),
            canaries={name: t["canary"] for name, t in run["tenants"].items()},
            workers=options.workers,
            remote_workers=options.remote_workers,
            master_bind=options.master_bind,
            trace_nonce=run["trace_nonce"],
            propagate=(scenario.telemetry.propagate if scenario.telemetry else "traceparent")
            == "traceparent",
            **stage,
        )

    def drive(
        self,
        spec: EngineSpec,
        title: str,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        more: bool = False,
    ) -> EngineOutcome:
        """One engine run with the live view; the profile's windows start on its clock and
        whatever is still in force when it ends is removed. With ``more`` (another run
        follows), the next engine starts importing while this one's records are scored."""
        scheduler = None
        if self.rig is not None and self.profile is not None:
            scheduler = FaultScheduler(
                self.rig, self.profile.profile, EventLog(self.run_dir / "events.jsonl", time.time())
            )
        try:
            with console.LiveView(title) as view:

                def relay(message: dict[str, Any]) -> None:
                    started = message.get("started_at")
                    if message.get("type") == "started" and scheduler is not None:
                        assert isinstance(started, float)
                        scheduler.start(started)  # the load's clock, one for all
                    if message.get("type") == "waiting":
                        console.print_line(
                            f"master at {message['master']}: waiting for "
                            f"{message['workers']} worker(s)"
                        )
                    if on_message is not None:
                        on_message(message)
                    view.update(message)

                outcome = launch(spec, relay)
            if more and not self.interrupted(outcome):
                spare.prepare()
            return outcome
        finally:
            if scheduler is not None:
                scheduler.stop()
                self.fault_failures += scheduler.failures
                self.lateness_ms += scheduler.lateness_ms

    @staticmethod
    def interrupted(outcome: EngineOutcome) -> bool:
        return outcome.interrupted or outcome.returncode == EXIT_INTERRUPTED

    def collect_spans(self, outcome: EngineOutcome) -> None:
        """An SDK sends its spans in batches: the last ones arrive after the last answer."""
        if self.receiver is not None and self.otlp is not None:
            self.receiver.finish(0.0 if self.interrupted(outcome) else self.otlp.grace)
            self.run["otlp"] = {
                "endpoint": self.receiver.endpoint, "received": self.receiver.received,
            }  # fmt: skip

    def stage_problems(self, outcome: EngineOutcome) -> list[str]:
        """What broke during one engine run: the engine itself, a fault (each named once)."""
        problems = [f"a fault failed: {f}" for f in self.fault_failures]
        self.fault_failures = []
        if outcome.returncode not in (EXIT_OK, EXIT_INTERRUPTED) and not outcome.interrupted:
            problems.insert(
                0,
                f"the load engine failed (exit {outcome.returncode}); engine.log ends:\n"
                f"{outcome.log_tail.strip()}",
            )
        return problems

    def _close(self) -> None:
        try:
            self.stack.close()
        finally:
            signal.signal(signal.SIGTERM, self.previous)
            if self.rig is not None:
                self.leftovers = self.rig.close()
                for item in self.leftovers:
                    console.print_warning(
                        f"could not undo {item}; `agentscale chaos reset` will retry"
                    )

    def record_faults(self) -> list[str]:
        """After the stack is closed: the fault problems of the whole run, written in run.json
        with the stage's traffic counts."""
        problems = [f"a fault failed: {f}" for f in self.fault_failures] + [
            f"a fault could not be removed: {item}" for item in self.leftovers
        ]
        faults = self.run["faults"]
        if self.rig is not None and faults is not None:
            faults["lateness_ms_max"] = max(self.lateness_ms, default=None)
            faults["failures"] = problems
            if self.rig.traffic:
                faults["traffic"] = self.rig.traffic
        return problems

    @property
    def kinds(self) -> dict[str, str]:
        """What each dependency is (llm, tool, ...), for error classes."""
        kinds = dict(KINDS) if self.loaded.scenario.target.url == "demo" else {}
        if self.profile is not None:
            kinds.update({d.name: d.kind for d in self.profile.profile.dependencies})
        return kinds

    @property
    def addresses(self) -> dict[str, str]:
        """Dependency by the address the agent calls it at, for spans that name a peer."""
        routes = self.run.get("demo", {}).get("routes") or {}
        addresses = {address: name for name, address in routes.items()}
        if self.rig is not None:
            addresses.update({r.agent_address: name for name, r in self.rig.routes.items()})
        return addresses


def _run(
    loaded: LoadedScenario,
    options: LoadOptions,
    duration: float,
    profile: LoadedProfile | None,
    run_dir: Path,
    run: RunInfo,
    more: bool,
) -> Candidate:
    scenario = loaded.scenario
    console.print_line(f"agentscale {__version__} · {scenario.name} → {scenario.target.url}")
    console.print_line(f"run folder: {run_dir}")
    with RunStack(loaded, options, profile, run_dir, run) as stack:
        spec = stack.spec(duration=duration, seed=run["seed"])
        outcome = stack.drive(spec, f"{scenario.name} ({scenario.load.model} model)", more=more)
        stack.collect_spans(outcome)
    fault_problems = stack.record_faults()
    try:
        return finish(run_dir, run, loaded, outcome, fault_problems, stack.kinds, stack.addresses)
    except KeyboardInterrupt as stop:
        raise ScoringStopped from stop


class ScoringStopped(KeyboardInterrupt):
    """A stop after the load had ended, while its records were read and scored."""


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
    if outcome.returncode not in (EXIT_OK, EXIT_INTERRUPTED) and not interrupted:
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


def warn_unredacted(target: Target) -> None:
    """Name the ``${VAR}`` values too short to redact from answers, before the run."""
    for name in unredacted([target.headers, target.body], os.environ):
        console.print_warning(
            f"${{{name}}} is shorter than {MIN_REDACTED} characters: it is not redacted from "
            "what the target answers (so short a value would match ordinary text)"
        )
