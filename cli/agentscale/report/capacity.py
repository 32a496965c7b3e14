"""The report of a capacity search: the answer first, then the curves against the offered rate,
the stages that held and failed, and how it was measured. HTML and Markdown from the same
sections, as for a load run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentscale.analysis.capacity import OUTSIDE
from agentscale.errors import ConfigError
from agentscale.formatting import num, pct
from agentscale.records.runfolder import RunInfo
from agentscale.report.charts import line_chart
from agentscale.report.html import page
from agentscale.report.markdown import section
from agentscale.report.sections import Chart, Section, Table, run_rows

RESULTS = {
    "found": "pass",
    "max_reached": "pass",
    "lowest_failed": "fail",
    "invalid": "invalid",
    "interrupted": "interrupted",
}


def answer_lines(found: dict[str, Any]) -> list[str]:
    """The answer in sentences, as the terminal, the report and summary.md give it."""
    result = found["result"]
    settings = found["settings"]
    unit = settings.get("unit", "requests/s")

    def rps(value: float | None) -> str:
        return "-" if value is None else f"{num(value)} {unit}"

    lines = []
    good, bad = found.get("sustainable_rps"), found.get("first_failed_rps")
    if result == "lowest_failed":
        first = next(iter(found["stages"]), None)
        why = "; ".join(first["reasons"]) if first else "no stage ran"
        lines.append(
            f"Even the lowest rate, {rps(settings['start_rps'])}, fails ({why}): lower --start, "
            "loosen --slo, or look at the agent at rest first."
        )
    elif result == "max_reached":
        lines.append(
            f"The target held the highest rate tried, {rps(good)} (--max): its capacity is at "
            "least that."
        )
    elif result == "found":
        lines.append(
            f"Highest sustainable rate: {rps(good)}; {rps(bad)} failed"
            + (
                f" (bisected to within {settings['precision']:.0%})."
                if found.get("converged")
                else " (the search stopped before it converged)."
            )
        )
    elif good is not None:  # invalid or interrupted: what held so far is a lower bound
        failed = f"; {rps(bad)} failed" if bad is not None else ""
        lines.append(f"So far the target held {rps(good)}{failed}; the search did not finish.")
    if found.get("knee_judged", True):
        knee = found.get("knee_rps")
        lines.append(
            f"Knee: p95 grew faster than the rate from {rps(knee)} on."
            if knee is not None
            else "Knee: none among the rates tried (p95 never grew faster than the rate)."
        )
    if result != "lowest_failed":  # one stage: nothing to compare it with
        lines += _bottleneck_lines(found.get("bottleneck"), bool(found["stages"]), rps)
    replicas = found.get("replicas")
    if replicas:
        bound = "at most " if replicas.get("at_most") else ""
        lines.append(
            f"For a peak of {rps(replicas['peak_rps'])} with {replicas['headroom']:.0%} headroom: "
            f"{bound}{replicas['needed']} replica(s) at {rps(good)} each."
        )
        if replicas.get("warning"):
            lines.append(f"Warning: {replicas['warning']}")
    lines += [f"Cross-check: {gap}" for gap in found.get("littles_law", [])]
    check = found.get("baseline")
    if check:
        note = f" ({check['detail']})" if check.get("detail") else ""
        lines.append(
            f"Against the saved capacity {check['file']}: {rps(check['baseline_rps'])} → "
            f"{rps(check['candidate_rps'])} ({check['change']:+.1%}, {check['tolerance']}): "
            f"{check['status']}{note}."
        )
    lines += [f"Invalid: {reason}" for reason in found.get("invalid_reasons", [])]
    return lines


def _bottleneck_lines(
    step: dict[str, Any] | None, any_stage: bool, rps: Callable[[float | None], str]
) -> list[str]:
    if not step:
        if not any_stage:
            return []
        return [
            "Bottleneck: not reported (the agent's trace names no steps, or no stage gave way)."
        ]
    before, after = step["p95_ms"]
    grew = f"from {num(before)} ms at {rps(step['reference_rps'])} to {num(after)} ms at " + rps(
        step["compared_rps"]
    )
    shares = f"{pct(step['slowest_share'][0])}, then {pct(step['slowest_share'][1])}"
    if step["step"] == OUTSIDE:
        return [
            f"Bottleneck: time outside the steps the agent reports: end-to-end p95 grew {grew} "
            f"while no reported step grew by half as much, and the slowest 5% spent {shares} of "
            f"their time outside steps (a queue, a lock or a worker pool inside the agent). "
            f"Lever: {step['lever']}."
        ]
    what = (
        "the time the agent's trace leaves unattributed (its own, between the steps it names)"
        if step["kind"] == "unattributed"
        else f"{step['step']} ({step['kind']})"
    )
    near = step.get("runner_up")
    beside = f"; {near[0]} grew nearly as much (+{num(near[1])} ms)" if near else ""
    return [
        f"Bottleneck: {what}: its p95 grew {grew}, and its share of the slowest 5% went "
        f"{shares}{beside}. Lever: {step['lever']}."
    ]


def _stage_table(found: dict[str, Any]) -> Table:
    rows = []
    for s in found["stages"]:
        in_flight = f"{num(s['in_flight_mean'])} / {num(s['littles_in_flight'])}"
        rows.append([
            str(s["stage"]), num(s["offered_rps"]), num(s["achieved_rps"]), num(s["seconds"]),
            num(s["requests"]), num(s["latency_p50_ms"]), num(s["latency_p95_ms"]),
            pct(s["success_rate"]), num(s["dropped"]), in_flight,
            {"fail": "failed"}.get(s["result"], s["result"]), "; ".join(s["reasons"]),
        ])  # fmt: skip
    header = ["stage", "offered/s", "achieved/s", "seconds", "requests", "p50 ms", "p95 ms",
              "success", "dropped", "in flight (seen / rate x latency)", "result",
              "why"]  # fmt: skip
    return Table(header, rows, frozenset(range(1, 10)), status=10)


def _charts(found: dict[str, Any]) -> list[Chart]:
    stages = sorted(found["stages"], key=lambda s: s["offered_rps"])
    if len(stages) < 2:
        return []
    x = [s["offered_rps"] for s in stages]

    def chart(
        series: dict[str, list[float | None]], unit: str, title: str, top: float | None = None
    ) -> Chart:
        svg = line_chart(x, series, unit=unit, x_unit="/s", x_max=max(x), markers=True, y_max=top)
        return Chart(svg, title)

    charts = [
        chart(
            {"offered": list(x), "achieved": [s["achieved_rps"] for s in stages]},
            "requests/s",
            "achieved vs offered rate",
        ),
        chart(
            {
                "p95": [s["latency_p95_ms"] for s in stages],
                "p50": [s["latency_p50_ms"] for s in stages],
            },
            "ms",
            "latency (from the intended start) vs offered rate",
        ),
        chart(
            {"success rate": [_percent(s["success_rate"]) for s in stages]},
            "%",
            "success vs offered rate",
            100.0,
        ),
    ]
    step = found.get("bottleneck")
    if step:
        name = step["step"]
        series = [((s.get("steps") or {}).get(name) or {}).get("p95_ms") for s in stages]
        charts.append(chart({name: series}, "ms", f"bottleneck {name}: p95 vs offered rate"))
    return charts


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def capacity_sections(found: dict[str, Any], run: RunInfo) -> list[Section]:
    settings = found["settings"]
    method = run_rows(run)
    unit = settings.get("unit", "requests/s")
    method.insert(2, [
        "search",
        f"SLO {', '.join(settings['slo'])}; from {num(settings['start_rps'])} {unit} doubling "
        f"to at most {num(settings['max_rps'])}, then bisection to {settings['precision']:.0%}; "
        f"stages of at least {settings['stage_s']:g} s and {settings['min_requests']} "
        "arrivals, open model",
    ])  # fmt: skip
    method.append(["reproduce", reproduce(run, settings)])
    return [
        Section("Capacity", bullets=answer_lines(found), charts=_charts(found)),
        Section("Stages", tables=[_stage_table(found)]),
        Section("Measurement method", tables=[Table(["what", "how"], method)]),
    ]


def reproduce(run: RunInfo, settings: dict[str, Any]) -> str:
    """The command that runs this search again, with every setting it had."""
    faults = (run.get("faults") or {}).get("file") or settings.get("faults")
    parts = [
        f"agentscale capacity {run['scenario']['file']}",
        f'--slo "{", ".join(settings["slo"])}"',
        f"--start {settings['start_rps']:g}rps --max {settings['max_rps']:g}rps",
        f"--stage {settings['stage_s']:g}s --min-requests {settings['min_requests']}",
        f"--precision {settings['precision'] * 100:g}% --seed {run.get('seed')}",
    ]
    if settings.get("peak_rps") is not None:
        parts.append(
            f"--peak {settings['peak_rps']:g}rps --headroom {settings['headroom'] * 100:g}%"
        )
    if settings.get("workers"):
        parts.append(f"--workers {settings['workers']}")
    if faults:
        parts.append(f"--faults {faults}")
    return " ".join(parts)


def write_capacity_report(
    run_dir: Path, found: dict[str, Any], run: RunInfo, kind: str = "html", out: Path | None = None
) -> Path:
    """The report of a capacity search from capacity.json's content: ``html`` writes
    report.html and summary.md, ``md`` report.md (``out`` instead of either)."""
    if kind == "adr":
        raise ConfigError(
            "a capacity search has no ADR form",
            field="--format",
            hint="use --format md (or html) and quote its answer in your ADR",
        )
    sections = capacity_sections(found, run)
    result = RESULTS.get(found["result"], found["result"])
    if (found.get("baseline") or {}).get("status") == "regressed":
        result = "fail"
    label = {
        "found": "capacity found",
        "max_reached": "held --max",
        "lowest_failed": "lowest rate failed",
    }.get(found["result"], found["result"])
    if result == "fail" and found["result"] != "lowest_failed":
        label = "capacity regressed"
    lines = [f"# agentscale capacity: {run['scenario']['name']} `{run['run_id']}`", "",
             f"**{label}** (exit code {found.get('exit_code')})", ""]  # fmt: skip
    for s in sections:
        lines += section(s)
    text = "\n".join(lines)
    if kind == "md":
        path = out or run_dir / "report.md"
        path.write_text(text, encoding="utf-8")
        return path
    path = out or run_dir / "report.html"
    path.write_text(
        page(run, result=result, label=label, exit_code=found.get("exit_code"),
             baseline_name=None, alerts=[], sections=sections),
        encoding="utf-8",
    )  # fmt: skip
    (run_dir / "summary.md").write_text(text, encoding="utf-8")
    return path
