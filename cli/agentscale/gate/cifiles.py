"""The verdict for CI: ``verdict.json`` (versioned), ``junit.xml`` (one testcase per check)
and ``summary.md`` (GitHub-flavoured Markdown, also appended to ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from agentscale.analysis.figures import Card, shown
from agentscale.formatting import cell, change, interval, num, pct, usd
from agentscale.gate.checks import Check, Verdict
from agentscale.records.runfolder import write_json

LABEL = {
    "pass": "PASS",
    "fail": "FAIL",
    "inconclusive": "INCONCLUSIVE",
    "invalid": "INVALID",
    "interrupted": "INTERRUPTED",
}


def write(run_dir: Path, verdict: Verdict, cards: Sequence[Card] = ()) -> None:
    write_json(run_dir / "verdict.json", verdict)
    (run_dir / "junit.xml").write_bytes(junit(verdict))
    markdown = summary(verdict, cards)
    (run_dir / "summary.md").write_text(markdown, encoding="utf-8")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as file:
            file.write(markdown + "\n")


def junit(verdict: Verdict) -> bytes:
    checks = verdict["checks"]
    suite = ET.Element("testsuite", name=f"agentscale {verdict.get('run_id', '')}".strip())
    failures = errors = skipped = 0
    reasons = verdict.get("invalid_reasons", [])
    for reason in reasons:
        case = ET.SubElement(suite, "testcase", classname="agentscale.run", name="run is valid")
        ET.SubElement(case, "error", message=reason).text = reason
        errors += 1
    if not reasons:
        # A valid run is a passing case too: an ungated run's file is never an empty suite,
        # which CI test reporters read as "no tests found".
        case = ET.SubElement(suite, "testcase", classname="agentscale.run", name="run is valid")
        ET.SubElement(case, "system-out").text = "the run did what it promised"
    for check in checks:
        case = ET.SubElement(
            suite, "testcase", classname=f"agentscale.{check['kind']}", name=check["name"], time="0"
        )
        text = describe(check)
        if check["status"] in ("regressed", "failed"):
            ET.SubElement(case, "failure", message=text).text = text
            failures += 1
        elif check["status"] == "inconclusive":
            ET.SubElement(case, "skipped", message=text)
            skipped += 1
        else:
            ET.SubElement(case, "system-out").text = text
    total = len(checks) + max(errors, 1)
    suite.set("tests", str(total))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element(
        "testsuites",
        tests=str(total),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
    )
    root.append(suite)
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def describe(check: Check) -> str:
    if check["kind"] == "baseline":
        shift = change(check["change"], check["change_pct"])
        text = (
            f"{check['metric']}: {num(check['baseline'])} -> {num(check['candidate'])}"
            f" (change {shift}, 95% CI {interval(check['ci'])}; tolerance "
            f"{check['tolerance']}): {check['status']}"
        )
        return text + (f"; {check['detail']}" if check.get("detail") else "")
    return f"{check['name']}: measured {num(check.get('value'))}: {check['status']}"


NOTHING_GATED = "nothing gated"
UNGATED_HINT = "add --baseline, gates.slo or a fault profile's expect: to gate the run"


def headline(result: str, gated: bool = True) -> str:
    """``PASS``, or ``PASS (nothing gated)`` when no baseline, SLO or expectation was checked."""
    label = LABEL.get(result, result.upper())
    return f"{label} ({NOTHING_GATED})" if result == "pass" and not gated else label


FIGURES: tuple[tuple[str, str, Callable[[float | None], str]], ...] = (
    ("requests", "requests", num),
    ("success rate", "success_rate", pct),
    ("p95 latency (ms)", "latency_p95_ms", num),
    ("throughput (req/s)", "throughput_rps", num),
    ("tool calls / request", "tool_calls_per_request", num),
    ("retries / tool call", "retries_per_tool_call", num),
    ("cost / success", "cost_per_success_usd", usd),
)
# Shown when a run has any: requests that never completed are no part of "requests".
UNFINISHED: tuple[tuple[str, Literal["cancelled", "dropped"]], ...] = (
    ("cancelled (in flight at the stop)", "cancelled"),
    ("dropped arrivals", "dropped"),
)


def figures(cards: Sequence[Card]) -> list[str]:
    """The run's headline figures, a column per run (``--repeat``), whether or not any of them
    was gated: a summary a reviewer reads without opening the report."""
    if not cards:
        return []
    header = (
        ["figure", *(f"run {i + 1}" for i in range(len(cards)))]
        if len(cards) > 1
        else [
            "figure",
            "this run",
        ]
    )
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(cards)]
    for name, key, render in FIGURES:
        lines.append(f"| {name} | " + " | ".join(shown(c, key, render) for c in cards) + " |")
    for name, key in UNFINISHED:
        counts = [c[key] for c in cards]
        if any(counts):
            lines.append(f"| {name} | " + " | ".join(num(n) for n in counts) + " |")
    return [*lines, ""]


def summary(verdict: Verdict, cards: Sequence[Card] = ()) -> str:
    gated = verdict.get("gated", True)
    lines = [f"## agentscale: {headline(verdict['result'], gated)}", ""]
    lines.append(
        f"Run `{verdict.get('run_id', '')}`"
        + (
            f" against baseline `{verdict['baseline']}`"
            if verdict.get("baseline")
            else " (no baseline)"
        )
        + f"; exit code {verdict['exit_code']}."
    )
    lines.append("")
    for reason in verdict.get("invalid_reasons", []):
        lines.append(f"- **invalid:** {cell(reason)}")
    for warning in verdict.get("warnings", []):
        lines.append(f"- warning: {cell(warning)}")
    if verdict.get("invalid_reasons") or verdict.get("warnings"):
        lines.append("")
    compared = [c for c in verdict["checks"] if c["kind"] == "baseline"]
    # Regressions lead (compare ordered them); passing step and workflow checks, a few per
    # step, fold away below the table.
    folded = [c for c in compared if c.get("scope") in GROUPS and c["status"] == "pass"]
    shown = [c for c in compared if c not in folded]
    if shown:
        lines += [BASELINE_HEADER, BASELINE_RULE, *(_baseline_row(c) for c in shown), ""]
    if folded:
        lines += [
            f"<details><summary>{len(folded)} step and workflow checks passed</summary>",
            "",
            BASELINE_HEADER,
            BASELINE_RULE,
            *(_baseline_row(c) for c in folded),
            "",
            "</details>",
            "",
        ]
    other = [c for c in verdict["checks"] if c["kind"] != "baseline"]
    if other:
        lines += ["| check | measured | status |", "| --- | ---: | --- |"]
        for c in other:
            lines.append(
                f"| {cell(c['name'])} | {num(c.get('value'))} | **{c['status']}**{_why(c)} |"
            )
        lines.append("")
    if not gated and not verdict.get("invalid_reasons"):
        lines += [f"Nothing was gated: {UNGATED_HINT}.", ""]
    lines += figures(cards)
    return "\n".join(lines)


GROUPS = ("step", "workflow")
BASELINE_HEADER = "| check | baseline | candidate | change | 95% CI | tolerance | status |"
BASELINE_RULE = "| --- | ---: | ---: | ---: | --- | --- | --- |"


def _baseline_row(c: Check) -> str:
    return (
        f"| {cell(c['metric'])} | {num(c['baseline'])} | {num(c['candidate'])} | "
        f"{change(c['change'], c['change_pct'])} | {interval(c['ci'])} | "
        f"{c['tolerance']} | **{c['status']}**{_why(c)} |"
    )


def _why(check: Check) -> str:
    """Why a check could not be judged, beside its status."""
    return f" ({cell(check['detail'])})" if check["detail"] and check["status"] != "pass" else ""
