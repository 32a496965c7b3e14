"""``agentscale capacity``: step the open-model rate up until the target gives way, bisect to
the highest rate it holds, and say which step broke first and what more replicas would buy.

Every stage is a run of the load engine at one constant rate, into one run folder (its records
carry the stage), with the demo stack, the fault stage and the span receiver kept up for the
whole search. Whether a stage held is decided from its requests as soon as it ends; the knee
and the bottleneck are found once, at the end, from every stage's records and spans.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentscale import __version__, console
from agentscale.analysis import capacity as search
from agentscale.analysis.attribution import attribute_faults
from agentscale.analysis.availability import target_losses
from agentscale.analysis.figures import Card
from agentscale.analysis.scorecard import card
from agentscale.analysis.summary import summarize, validity_problems
from agentscale.chaos import state
from agentscale.commands.chaos import check_toxiproxy_url
from agentscale.commands.execute import LoadOptions, RunStack, iso, join_telemetry, plan_run
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
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    ConfigError,
    Interrupted,
)
from agentscale.gate.capacity import compare_capacity, load_capacity
from agentscale.records.frames import read_frames, rewrite_requests, window_traffic
from agentscale.records.runfolder import copy_inputs, create_run_dir, write_json, write_run
from agentscale.records.writer import read_events
from agentscale.report.capacity import answer_lines, write_capacity_report

SCHEMA = "agentscale/capacity/v1"


@dataclass(frozen=True)
class CapacityOptions:
    load: LoadOptions  # out, seed, faults, toxiproxy, workers, remote hosts
    slos: list[search.Slo]
    start: float = 2.0  # requests/s
    maximum: float = 500.0
    stage: float = 30.0  # seconds, at least
    min_requests: int = 100  # arrivals per stage, at least (a slow stage runs longer)
    precision: float = 0.05  # bisection stops when first bad / last good <= 1 + precision
    peak: float | None = None
    headroom: float = 0.3
    baseline: Path | None = None
    tolerance: float = 0.10  # a sustainable rate this much below the baseline's regressed
    force: bool = False


@dataclass
class Stage:
    """One stage as it was run and judged."""

    index: int
    rate: float
    seconds: float
    started_at: float | None = None
    planned: int = 0
    in_flight: list[float] = field(default_factory=list)  # the engine's samples while loading
    card: Card | None = None
    outcome: search.StageOutcome | None = None
    trend: search.Trend | None = None
    mean_service_ms: float | None = None  # for Little's law: rate x mean time in the target
    interrupted: bool = False

    @property
    def littles_law(self) -> str | None:
        rate = self.card["throughput_rps"] or 0.0 if self.card is not None else 0.0
        in_flight = float(np.mean(self.in_flight)) if self.in_flight else None
        return search.littles_law(in_flight, rate, self.mean_service_ms)

    def as_json(self) -> dict[str, Any]:
        assert self.outcome is not None and self.card is not None
        c = self.card
        in_flight = float(np.mean(self.in_flight)) if self.in_flight else None
        rate = c.get("throughput_rps")
        found: dict[str, Any] = search.as_json({
            "stage": self.index,
            "offered_rps": self.rate,
            "seconds": self.seconds,
            "planned": self.planned,
            "requests": c.get("requests"),
            "achieved_rps": c.get("throughput_rps"),
            "dropped": c.get("dropped"),
            "success_rate": c.get("success_rate"),
            "latency_p50_ms": c.get("latency_p50_ms"),
            "latency_p95_ms": c.get("latency_p95_ms"),
            "latency_p99_ms": c.get("latency_p99_ms"),
            "trend_p50_ms": list(self.trend.p50_ms) if self.trend else None,
            "in_flight_mean": in_flight,
            "littles_in_flight": (
                rate * self.mean_service_ms / 1000
                if rate is not None and self.mean_service_ms is not None else None
            ),
            "result": "interrupted" if self.interrupted else (
                "invalid" if self.outcome.invalid else (
                    "pass" if self.outcome.passed else "fail")),
            "reasons": self.outcome.invalid + self.outcome.failures,
        })  # fmt: skip
        return found


def run_capacity(scenario_path: Path, options: CapacityOptions) -> int:
    loaded = load_scenario(scenario_path, allow_remote=options.load.allow_remote, for_run=True)
    for line in state.clean_leftovers():
        console.print_warning(f"left by an earlier run: {line}")
    scenario = loaded.scenario
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
            duration=options.stage,
            allow_remote=load.allow_remote,
        )
    check_toxiproxy_url(load.toxiproxy_url, load.allow_remote)
    baseline = load_capacity(options.baseline, scenario.name, options.force)
    check_out(load.out)
    if load.workers or load.remote_workers:
        check_bindable(*load.master_bind)
    run_dir = create_run_dir(load.out, scenario.name)
    copy_inputs(run_dir, loaded.path, faults_path)
    run = plan_run(loaded, load, run_dir)
    run["capacity"] = _settings(options)  # type: ignore[typeddict-unknown-key]
    write_run(run_dir, run)
    state.register_run(run_dir)
    try:
        searched = _search(loaded, options, profile, run_dir, run)
    except BaseException as error:
        run["status"] = "failed"
        run["verdict"] = {"result": "invalid", "reasons": [str(error) or type(error).__name__]}
        write_run(run_dir, run)
        raise
    finally:
        state.release_run(run_dir)
    return _conclude(loaded, options, profile, run_dir, run, searched, baseline)


def _settings(options: CapacityOptions) -> dict[str, Any]:
    return {
        "slo": [str(s) for s in options.slos],
        "start_rps": options.start,
        "max_rps": options.maximum,
        "stage_s": options.stage,
        "min_requests": options.min_requests,
        "precision": options.precision,
        "peak_rps": options.peak,
        "headroom": options.headroom,
    }


@dataclass
class Searched:
    """What the search did: its stages, why it could not go on (empty when it ended as
    planned or was interrupted: the last stage says so), and what the run's spans and injected
    faults need to be joined (each dependency's kind and address)."""

    stages: list[Stage]
    invalid: list[str]
    kinds: dict[str, str]
    addresses: dict[str, str]


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
                    len(stages) + 1, rate, max(options.stage, options.min_requests / rate)
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
    return Searched(stages, invalid, stack.kinds, stack.addresses)


def _run_stage(
    stack: RunStack, stage: Stage, slos: list[search.Slo], seed: int, seq_base: int
) -> EngineOutcome:
    """One stage: the engine at the stage's rate, then its judgement from its own records."""
    loaded = stack.loaded
    console.print_line(
        f"stage {stage.index}: {stage.rate:,.4g} requests/s for {stage.seconds:,.4g} s"
    )
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
            stage.in_flight.append(float(message.get("in_flight") or 0))

    title = f"{loaded.scenario.name}: stage {stage.index} at {stage.rate:,.4g}/s"
    outcome = stack.drive(spec, title, on_message)
    stage.planned = _planned(stack.run_dir, stage.index)
    stage.interrupted = stack.interrupted(outcome)
    _judge(stage, loaded, stack.run_dir, slos, stack.stage_problems(outcome))
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
    stage.card = card(frames, np.ones(len(frames.requests), dtype=bool), stage.seconds)
    sent = frames.sent
    arrays = frames.arrays
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
    rate = c.get("throughput_rps")
    success = c.get("success_rate")
    verdict = "held" if stage.outcome.passed else "failed"
    if stage.outcome.invalid:
        verdict = "invalid"
    if stage.interrupted:
        verdict = "interrupted"
    line = (
        f"  stage {stage.index}: {verdict} · achieved "
        f"{'-' if rate is None else f'{rate:,.4g}'}/s · p95 "
        f"{'-' if p95 is None else f'{p95:,.0f} ms'} · success "
        f"{'-' if success is None else f'{success:.2%}'} · dropped {c['dropped']:,}"
    )
    console.print_line(line, style="green" if stage.outcome.passed else "yellow")
    for reason in stage.outcome.invalid + stage.outcome.failures:
        console.print_line(f"    - {reason}")


def _conclude(
    loaded: LoadedScenario,
    options: CapacityOptions,
    profile: LoadedProfile | None,
    run_dir: Path,
    run: Any,
    searched: Searched,
    baseline: dict[str, Any] | None,
) -> int:
    """The answer from every stage's records: capacity.json, run.json, the report, the exit."""
    stages, invalid = searched.stages, searched.invalid
    interrupted = bool(stages) and stages[-1].interrupted
    judged = [s for s in stages if s.outcome is not None and not s.interrupted]
    steps = search.Search(options.start, options.maximum, options.precision)
    for s in judged:
        assert s.outcome is not None
        if not s.outcome.invalid:
            steps.record(s.rate, s.outcome.passed)
    levels = _levels(loaded, run_dir, run, searched)
    answer = _answer(options, steps, levels, profile)
    found: dict[str, Any] = {
        "schema": SCHEMA,
        "agentscale": __version__,
        "scenario": run["scenario"]["name"],
        "run_id": run["run_id"],
        "created_at": iso(time.time()),
        "settings": _settings(options),
        "stages": [_stage_json(s, levels) for s in stages if s.outcome is not None],
        **answer,
    }
    result = "interrupted" if interrupted else ("invalid" if invalid else steps.result)
    found["result"] = result
    found["invalid_reasons"] = invalid
    exit_code = {
        "interrupted": EXIT_INTERRUPTED,
        "invalid": EXIT_INVALID,
        "lowest_failed": EXIT_FAILED,
    }.get(result, EXIT_OK)
    if baseline is not None and result in ("found", "max_reached"):
        found["baseline"] = compare_capacity(baseline, found, options.tolerance, options.baseline)
        if found["baseline"]["status"] == "regressed":
            exit_code = EXIT_FAILED
    found["exit_code"] = exit_code
    write_json(run_dir / "capacity.json", found)
    run["status"] = "interrupted" if interrupted else "completed"
    run["exit_code"] = exit_code
    run["verdict"] = {"result": _verdict(result, found), "reasons": invalid}
    write_run(run_dir, run)
    for line in answer_lines(found):
        console.print_line(line, style="bold" if line.startswith("Highest") else None)
    report = write_capacity_report(run_dir, found, run)
    console.print_line(f"report: {report}")
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(step_summary, "a", encoding="utf-8") as file:
            file.write((run_dir / "summary.md").read_text(encoding="utf-8") + "\n")
    return exit_code


def _stage_json(stage: Stage, levels: list[tuple[Stage, search.Level, Card]]) -> dict[str, Any]:
    """A stage as capacity.json keeps it, with each step's p95 and slowest share from the
    whole folder's records (spans joined)."""
    found = stage.as_json()
    level = next((lv for s, lv, _ in levels if s is stage), None)
    found["steps"] = search.as_json({
        name: {"kind": kind, "p95_ms": p95, "slowest_share": share}
        for name, (kind, p95, share) in (level.steps if level else {}).items()
    })  # fmt: skip
    return found


def _verdict(result: str, found: dict[str, Any]) -> str:
    if result in ("found", "max_reached"):
        regressed = (found.get("baseline") or {}).get("status") == "regressed"
        return "fail" if regressed else "pass"
    return {"lowest_failed": "fail"}.get(result, result)


def _levels(
    loaded: LoadedScenario, run_dir: Path, run: Any, searched: Searched
) -> list[tuple[Stage, search.Level, Card]]:
    """Each judged stage's card from the whole folder, spans and injected faults joined."""
    stages = searched.stages
    if not stages:
        return []
    first = min((s.started_at for s in stages if s.started_at), default=None)
    frames = read_frames(run_dir, first, sum(s.seconds for s in stages), [])
    frames.traffic = window_traffic(run)
    joined = join_telemetry(run_dir, frames, run, loaded.scenario, searched.addresses)
    met = attribute_faults(frames, run.get("trace_nonce"), searched.kinds)
    if met or joined.requests:
        rewrite_requests(run_dir, frames.requests)
    column = frames.requests["stage"].to_numpy(dtype=float, na_value=np.nan)
    found = []
    for stage in stages:
        if stage.outcome is None:
            continue
        mask = column == stage.index
        stage_card = card(frames, mask, stage.seconds)
        found.append((stage, search.level_of(stage.rate, stage_card), stage_card))
    return found


def _answer(
    options: CapacityOptions,
    steps: search.Search,
    levels: list[tuple[Stage, search.Level, Card]],
    profile: LoadedProfile | None,
) -> dict[str, Any]:
    """The sustainable rate, the knee, the bottleneck at the knee, the replicas for a peak."""
    rate_limited = {
        w.target for w in (profile.profile.windows if profile else [])
        if w.http is not None and w.http.kind == "rate_limit"
    }  # fmt: skip
    held = [lv for s, lv, _ in levels if s.outcome and s.outcome.passed]
    usable = [lv for s, lv, _ in levels if s.outcome and not s.outcome.invalid]
    knee = search.knee(usable)
    answer: dict[str, Any] = {
        "sustainable_rps": steps.good,
        "first_failed_rps": steps.bad,
        "converged": steps.converged,
        "knee_rps": knee.rate if knee else None,
        "bottleneck": None,
        "replicas": None,
        "littles_law": [],
    }
    for stage, _, _ in levels:  # a queue that keeps growing is no steady state to check
        if stage.outcome and stage.outcome.passed and (gap := stage.littles_law):
            answer["littles_law"].append(f"stage {stage.index}: {gap}")
    compared = knee
    if compared is None:
        failed = [lv for s, lv, _ in levels if s.outcome and s.outcome.failures]
        compared = min(failed, key=lambda v: v.rate) if failed else None
    reference = min(held or usable, key=lambda v: v.rate) if (held or usable) else None
    if reference is not None and compared is not None and compared.rate > reference.rate:
        step = search.bottleneck(reference, compared)
        if step is not None:
            shared = search.shared_by_replicas(step, rate_limited)
            answer["bottleneck"] = search.as_json({
                "step": step.step,
                "kind": step.kind,
                "p95_ms": list(step.p95_ms),
                "slowest_share": list(step.share),
                "reference_rps": step.reference_rps,
                "compared_rps": step.compared_rps,
                "shared": shared,
                "lever": search.lever(step, rate_limited),
            })  # fmt: skip
    if options.peak is not None and steps.good:
        needed = search.replicas_needed(options.peak, options.headroom, steps.good)
        shared = (answer["bottleneck"] or {}).get("shared")
        warning = None
        if shared and needed > 1:
            warning = (
                f"more replicas do not help: the bottleneck is {shared}; {needed} replicas "
                f"would share it and still be held near {steps.good:,.4g} requests/s in all. "
                f"Pull this lever instead: {answer['bottleneck']['lever']}."
            )
        answer["replicas"] = {
            "peak_rps": options.peak,
            "headroom": options.headroom,
            "needed": needed,
            "warning": warning,
        }
    return answer
