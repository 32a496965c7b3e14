"""The end of a capacity search: every stage's figures from the whole folder (spans joined,
injected faults attributed), the answer, capacity.json, run.json, the report and the exit."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from agentscale import __version__, console
from agentscale.analysis import capacity as search
from agentscale.analysis.attribution import attribute_faults
from agentscale.analysis.figures import Card
from agentscale.analysis.scorecard import card
from agentscale.commands.capacity_stage import CapacityOptions, Searched, Stage, settings, unit_of
from agentscale.commands.execute import iso, join_telemetry
from agentscale.config.loader import LoadedScenario
from agentscale.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, Interrupted
from agentscale.formatting import num
from agentscale.gate.capacity import compare_capacity
from agentscale.records.frames import read_frames, rewrite_requests, window_traffic
from agentscale.records.runfolder import write_json, write_run
from agentscale.report.capacity import answer_lines, write_capacity_report

SCHEMA = "agentscale/capacity/v1"
EXITS = {"interrupted": EXIT_INTERRUPTED, "invalid": EXIT_INVALID, "lowest_failed": EXIT_FAILED}


def conclude(
    loaded: LoadedScenario,
    options: CapacityOptions,
    run_dir: Path,
    run: Any,
    searched: Searched,
    baseline: dict[str, Any] | None,
) -> int:
    """capacity.json, run.json, the terminal's answer, the report; the exit code. A stop while
    the records are read again still leaves what the finished stages found."""
    interrupted = bool(searched.stages) and searched.stages[-1].interrupted
    try:
        levels = _levels(loaded, run_dir, run, searched)
    except (KeyboardInterrupt, Interrupted):
        levels, interrupted = _judged_levels(searched.stages), True
        _write(options, run_dir, run, searched, levels, baseline, interrupted=True)
        raise
    found = _write(options, run_dir, run, searched, levels, baseline, interrupted)
    for line in answer_lines(found):
        console.print_line(line, style="bold" if line.startswith("Highest") else None)
    try:
        report = write_capacity_report(run_dir, found, run)
    except (KeyboardInterrupt, Interrupted):
        _write(options, run_dir, run, searched, levels, baseline, interrupted=True)
        raise
    console.print_line(f"report: {report}")
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(step_summary, "a", encoding="utf-8") as file:
            file.write((run_dir / "summary.md").read_text(encoding="utf-8") + "\n")
    return int(found["exit_code"])


def _write(
    options: CapacityOptions,
    run_dir: Path,
    run: Any,
    searched: Searched,
    levels: list[tuple[Stage, search.Level, Card]],
    baseline: dict[str, Any] | None,
    interrupted: bool,
) -> dict[str, Any]:
    stages, invalid = searched.stages, searched.invalid
    rates = search.Search(options.start, options.maximum, options.precision)
    for stage in stages:
        if stage.outcome is not None and not stage.interrupted and not stage.outcome.invalid:
            rates.record(stage.rate, stage.outcome.passed)
    result = "interrupted" if interrupted else ("invalid" if invalid else rates.result)
    unit = unit_of(searched.scenario)
    found: dict[str, Any] = {
        "schema": SCHEMA,
        "agentscale": __version__,
        "scenario": run["scenario"]["name"],
        "run_id": run["run_id"],
        "created_at": iso(time.time()),
        "settings": settings(options, unit),
        "stages": [_stage_json(s, levels) for s in stages if s.outcome is not None],
        **_answer(options, rates, levels, searched, result),
        "result": result,
        "invalid_reasons": invalid,
    }
    exit_code = EXITS.get(result, EXIT_OK)
    if baseline is not None and result in ("found", "max_reached"):
        found["baseline"] = compare_capacity(baseline, found, options.tolerance, options.baseline)
        status = found["baseline"]["status"]
        exit_code = {"regressed": EXIT_FAILED, "inconclusive": EXIT_INVALID}.get(status, exit_code)
    found["exit_code"] = exit_code
    write_json(run_dir / "capacity.json", found)
    run["status"] = "interrupted" if interrupted else "completed"
    run["exit_code"] = exit_code
    run["verdict"] = {"result": _verdict(result, found), "reasons": invalid}
    write_run(run_dir, run)
    return found


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
        status = str((found.get("baseline") or {}).get("status"))
        return {"regressed": "fail", "inconclusive": "inconclusive"}.get(status, "pass")
    return {"lowest_failed": "fail"}.get(result, result)


def _levels(
    loaded: LoadedScenario, run_dir: Path, run: Any, searched: Searched
) -> list[tuple[Stage, search.Level, Card]]:
    """Each judged stage's card from the whole folder, spans and injected faults joined."""
    stages = [s for s in searched.stages if s.outcome is not None]
    if not stages:
        return []
    first = min((s.started_at for s in stages if s.started_at), default=None)
    frames = read_frames(run_dir, first, sum(s.seconds for s in stages), [])
    frames.traffic = window_traffic(run)
    joined = join_telemetry(run_dir, frames, run, loaded.scenario, searched.addresses)
    met = attribute_faults(frames, run.get("trace_nonce"), searched.kinds)
    if met or joined.requests:
        with contextlib.suppress(OSError):  # the stages' own parts stay if this cannot
            rewrite_requests(run_dir, frames.requests)
    column = frames.requests["stage"].to_numpy(dtype=float, na_value=np.nan)
    found = []
    for stage in stages:
        stage_card = card(frames, column == stage.index, stage.seconds)
        found.append((stage, search.level_of(stage.rate, stage_card), stage_card))
    return found


def _judged_levels(stages: list[Stage]) -> list[tuple[Stage, search.Level, Card]]:
    """Each stage's level from its own judgement (no spans): what a stop leaves time for."""
    return [
        (s, search.level_of(s.rate, s.card), s.card)
        for s in stages
        if s.outcome is not None and s.card is not None
    ]


def _answer(
    options: CapacityOptions,
    rates: search.Search,
    levels: list[tuple[Stage, search.Level, Card]],
    searched: Searched,
    result: str,
) -> dict[str, Any]:
    """The sustainable rate, the knee, the bottleneck at the knee, the replicas for a peak."""
    limited = searched.rate_limited
    rate_limited = limited | {f"kind:{searched.kinds[t]}" for t in limited if t in searched.kinds}
    held = [lv for s, lv, _ in levels if s.outcome and s.outcome.passed and not s.interrupted]
    usable = [lv for s, lv, _ in levels if s.outcome and not s.outcome.invalid
              and not s.interrupted]  # fmt: skip
    knee = search.knee(usable) if len(usable) >= 2 else None
    answer: dict[str, Any] = {
        "sustainable_rps": rates.good,
        "first_failed_rps": rates.bad,
        "converged": rates.converged,
        "knee_rps": knee.rate if knee else None,
        "knee_judged": len(usable) >= 2,
        "bottleneck": None,
        "replicas": None,
        "littles_law": [],
    }
    for stage, _, _ in levels:  # a queue that keeps growing is no steady state to check
        if stage.result == "pass" and (gap := stage.littles_law):
            answer["littles_law"].append(f"stage {stage.index}: {gap}")
    compared = knee
    if compared is None:
        failed = [lv for s, lv, _ in levels if s.result == "fail"]
        compared = min(failed, key=lambda v: v.rate) if failed else None
    reference = min(held or usable, key=lambda v: v.rate) if (held or usable) else None
    if reference is not None and compared is not None and compared.rate > reference.rate:
        step = search.bottleneck(reference, compared)
        if step is not None:
            answer["bottleneck"] = search.as_json({
                "step": step.step,
                "kind": step.kind,
                "p95_ms": list(step.p95_ms),
                "slowest_share": list(step.share),
                "reference_rps": step.reference_rps,
                "compared_rps": step.compared_rps,
                "runner_up": list(step.runner_up) if step.runner_up else None,
                "shared": search.shared_by_replicas(step, rate_limited),
                "lever": search.lever(step, rate_limited),
            })  # fmt: skip
    if options.peak is not None and rates.good and result in ("found", "max_reached"):
        answer["replicas"] = _replicas(options, rates.good, answer["bottleneck"], result)
    return answer


def _replicas(
    options: CapacityOptions, good: float, step: dict[str, Any] | None, result: str
) -> dict[str, Any]:
    assert options.peak is not None
    needed = search.replicas_needed(options.peak, options.headroom, good)
    shared = (step or {}).get("shared")
    warning = None
    if shared and needed > 1 and step is not None:
        warning = (
            f"more replicas do not help: the bottleneck is {shared}; {needed} replicas "
            f"would share it and still be held near {num(good)} in all. Pull this lever "
            f"instead: {step['lever']}."
        )
    return {
        "peak_rps": options.peak,
        "headroom": options.headroom,
        "needed": needed,
        "at_most": result == "max_reached",  # each replica holds at least the rate tried
        "warning": warning,
    }
