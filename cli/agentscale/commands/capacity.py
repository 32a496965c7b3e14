"""``agentscale capacity``: step the open-model rate up until the target gives way, bisect to
the highest rate it holds, and say which step broke first and what more replicas would buy.

Every stage is a run of the load engine at one constant rate, into one run folder (its records
carry the stage), with the demo stack, the fault stage and the span receiver kept up for the
whole search. Whether a stage held is decided from its requests as soon as it ends; the knee
and the bottleneck are found once, at the end, from every stage's records and spans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agentscale import __version__, console
from agentscale.analysis import capacity as search
from agentscale.analysis.availability import target_losses
from agentscale.analysis.scorecard import card
from agentscale.analysis.summary import summarize, validity_problems
from agentscale.chaos import state
from agentscale.commands.capacity_result import conclude
from agentscale.commands.capacity_stage import (
    CapacityOptions,
    Searched,
    Stage,
    settings,
    unit_of,
)
from agentscale.commands.chaos import check_toxiproxy_url
from agentscale.commands.execute import RunStack, plan_run, warn_unredacted
from agentscale.commands.load import check_bindable, check_out
from agentscale.config.loader import (
    LoadedProfile,
    LoadedScenario,
    load_fault_profile,
    load_scenario,
)
from agentscale.config.traffic import own_shapes
from agentscale.demo import DEPENDENCIES
from agentscale.engine.launcher import EngineOutcome
from agentscale.errors import (
    ConfigError,
    Interrupted,
)
from agentscale.formatting import num
from agentscale.gate.capacity import load_capacity
from agentscale.records.frames import read_frames
from agentscale.records.runfolder import copy_inputs, create_run_dir, write_run
from agentscale.records.writer import read_events

SCHEMA = "agentscale/capacity/v1"


def run_capacity(scenario_path: Path, options: CapacityOptions) -> int:
    loaded = load_scenario(scenario_path, allow_remote=options.load.allow_remote, for_run=True)
    warn_unredacted(loaded.scenario.target)
    for line in state.clean_leftovers():
        console.print_warning(f"left by an earlier run: {line}")
    scenario = loaded.scenario
    if scenario.load.model == "closed":
        console.print_warning(
            "the scenario's closed model (its users and think time) is not used: a capacity "
            "search steps open-model arrival rates"
        )
    if own := own_shapes(scenario):
        raise ConfigError(
            f"tenant {own[0]} has a load shape of its own; a capacity search steps one rate",
            location=loaded.document.locate(("tenants", own[0]), key=True),
            hint="give tenants as weights (tenants: {acme: 0.7, globex: 0.3}) for the search",
        )
    load = options.load
    faults_path = load.faults or (loaded.resolve(scenario.faults) if scenario.faults else None)
    profile = None
    if faults_path is not None:
        # Each stage replays the profile from its own start: its windows must fit in one.
        profile = load_fault_profile(
            faults_path,
            demo_targets=DEPENDENCIES if scenario.target.url == "demo" else (),
            demo_only=() if scenario.target.url == "demo" else DEPENDENCIES,
            duration=options.stage,
            allow_remote=load.allow_remote,
            span=("a stage", "lengthen --stage"),
        )
    check_toxiproxy_url(load.toxiproxy_url, load.allow_remote)
    baseline = load_capacity(options.baseline, scenario.name, options.force)
    check_out(load.out)
    if load.workers or load.remote_workers:
        check_bindable(*load.master_bind)
    run_dir = create_run_dir(load.out, scenario.name)
    copy_inputs(run_dir, loaded.path, faults_path)
    run = plan_run(loaded, load, run_dir)
    run["capacity"] = settings(options, unit_of(scenario))  # type: ignore[typeddict-unknown-key]
    write_run(run_dir, run)
    state.register_run(run_dir)
    try:
        searched = _search(loaded, options, profile, run_dir, run)
        return conclude(loaded, options, run_dir, run, searched, baseline)
    except BaseException as error:
        # run.json never stays "running": a search stopped or broken says so (a stop while
        # concluding has written what the finished stages found first).
        stopped = isinstance(error, KeyboardInterrupt | Interrupted)
        if run.get("status") == "running" or not stopped:
            run["status"] = "interrupted" if stopped else "failed"
            run["verdict"] = {"result": "interrupted" if stopped else "invalid",
                              "reasons": [str(error) or type(error).__name__]}  # fmt: skip
            write_run(run_dir, run)
        raise
    finally:
        state.release_run(run_dir)


def _search(
    loaded: LoadedScenario,
    options: CapacityOptions,
    profile: LoadedProfile | None,
    run_dir: Path,
    run: Any,
) -> Searched:
    scenario = loaded.scenario
    console.print_line(f"agentscale {__version__} · capacity of {scenario.name} → "
                       f"{scenario.target.url}")  # fmt: skip
    console.print_line(f"run folder: {run_dir}")
    console.print_line("SLO: " + ", ".join(str(s) for s in options.slos))
    rates = search.Search(options.start, options.maximum, options.precision)
    stages: list[Stage] = []
    invalid: list[str] = []
    seq_base = 0
    with RunStack(loaded, options.load, profile, run_dir, run) as stack:
        outcome = None
        try:
            while (rate := rates.next()) is not None:
                stage = Stage(
                    len(stages) + 1,
                    rate,
                    max(options.stage, options.min_requests / rate),
                    sessions=scenario.workload.sessions is not None,
                )
                stages.append(stage)
                outcome = _run_stage(stack, stage, options.slos, run["seed"], seq_base)
                seq_base += stage.planned + 1
                assert stage.outcome is not None
                if stage.interrupted:
                    break
                if stage.outcome.invalid:
                    invalid = stage.outcome.invalid
                    break
                rates.record(rate, stage.outcome.passed)
        except (KeyboardInterrupt, Interrupted):
            if stages and stages[-1].outcome is None:
                stages.pop()  # stopped before it was judged: its records stay in the folder
            if not stages:
                raise
            stages[-1].interrupted = True
        if outcome is not None:
            stack.collect_spans(outcome)
    invalid += stack.record_faults()
    limited = {
        w.target for w in (profile.profile.windows if profile else [])
        if w.http is not None and w.http.kind == "rate_limit"
    }  # fmt: skip
    return Searched(stages, invalid, stack.kinds, stack.addresses, scenario, limited)


def _run_stage(
    stack: RunStack, stage: Stage, slos: list[search.Slo], seed: int, seq_base: int
) -> EngineOutcome:
    """One stage: the engine at the stage's rate, then its judgement from its own records."""
    loaded = stack.loaded
    unit = unit_of(loaded.scenario)
    console.print_line(f"stage {stage.index}: {num(stage.rate)} {unit} for {num(stage.seconds)} s")
    spec = stack.spec(
        duration=stage.seconds,
        seed=seed + stage.index,
        rate=stage.rate,
        stage=stage.index,
        seq_base=seq_base,
    )

    def on_message(message: dict[str, Any]) -> None:
        if message.get("type") == "started":
            stage.started_at = float(message["started_at"])
        elif message.get("type") == "progress" and message.get("phase") != "draining":
            at = float(message.get("elapsed") or 0.0)
            stage.in_flight.append((at, float(message.get("in_flight") or 0)))

    title = f"{loaded.scenario.name}: stage {stage.index} at {stage.rate:,.4g}/s"
    outcome = stack.drive(spec, title, on_message, more=True)  # unused after the last stage
    stage.planned = _planned(stack.run_dir, stage.index)
    stage.interrupted = stack.interrupted(outcome)
    problems = stack.stage_problems(outcome)
    _judge(stage, loaded, stack.run_dir, slos, [] if stage.interrupted else problems)
    _print_stage(stage)
    return outcome


def _planned(run_dir: Path, index: int) -> int:
    """The arrivals the engine planned for stage ``index`` (its run_ended; 0 if it has none:
    an engine that broke off)."""
    current, planned = None, 0
    for event in read_events(run_dir / "events.jsonl"):
        if event["type"] == "run_started":
            current = event.get("stage")
        elif event["type"] == "run_ended" and current == index:
            planned = int(event.get("planned") or 0)
    return planned


def _judge(
    stage: Stage,
    loaded: LoadedScenario,
    run_dir: Path,
    slos: list[search.Slo],
    problems: list[str],
) -> None:
    """The stage's figures from its own records, and whether it held."""
    frames = read_frames(run_dir, stage.started_at, stage.seconds, [], stage=stage.index)
    load = loaded.scenario.load
    summary = summarize(frames, stage.seconds, stage.planned or None)
    # Drops are the target's failure here, judged below; the generator's lag is ours.
    problems = problems + validity_problems(
        summary, model="open", max_dropped=1.0, max_lag_ms=load.max_lag_ms
    )
    problems += [loss.describe() for loss in target_losses(frames)]
    sent = frames.sent
    arrays = frames.arrays
    seconds = stage.seconds
    if stage.interrupted and sent.any():  # it ran as long as its last arrival, not as planned
        seconds = min(seconds, float(np.nanmax(arrays["offset"][sent])) + 1 / stage.rate)
    stage.card = card(frames, np.ones(len(frames.requests), dtype=bool), seconds)
    started = sent
    if stage.sessions and "turn" in frames.requests:
        started = sent & (frames.requests["turn"].to_numpy(dtype=float, na_value=0) == 1)
    stage.achieved = int(started.sum()) / seconds if seconds > 0 else None
    stage.trend = search.trend(arrays["offset"][sent], arrays["latency_ms"][sent])
    service = arrays["service_ms"][sent]
    if service.size and not np.isnan(service).all():
        stage.mean_service_ms = float(np.nanmean(service))
    stage.outcome = search.judge_stage(
        stage.card, stage.planned or len(frames.requests), slos, stage.trend, problems
    )


def _print_stage(stage: Stage) -> None:
    assert stage.outcome is not None and stage.card is not None
    c = stage.card
    p95 = c.get("latency_p95_ms")
    rate = stage.achieved
    success = c.get("success_rate")
    verdict = "held" if stage.outcome.passed else "failed"
    if stage.outcome.invalid:
        verdict = "invalid"
    if stage.interrupted:
        verdict = "interrupted"
    line = (
        f"  stage {stage.index}: {verdict} · achieved "
        f"{'-' if rate is None else num(rate)}/s · p95 "
        f"{'-' if p95 is None else f'{p95:,.0f} ms'} · success "
        f"{'-' if success is None else f'{success:.2%}'} · dropped {c['dropped']:,}"
    )
    console.print_line(line, style="green" if stage.outcome.passed else "yellow")
    for reason in stage.outcome.invalid + stage.outcome.failures:
        console.print_line(f"    - {reason}")
