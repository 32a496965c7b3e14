"""The report as GitHub-flavoured Markdown (the same sections as the HTML), and as an
architecture decision record."""

from __future__ import annotations

from agentscale.formatting import cell, pct
from agentscale.report.data import ReportData
from agentscale.report.sections import (
    Section,
    Table,
    alerts,
    check_detail,
    key_figures,
    label,
    method_rows,
    resilience,
    result_of,
    sections,
    steps,
)


def table(t: Table) -> list[str]:
    align = ["---:" if i in t.numeric else "---" for i in range(len(t.header))]
    lines = ["| " + " | ".join(cell(h) for h in t.header) + " |", "| " + " | ".join(align) + " |"]
    for row in t.rows:
        cells = [f"**{cell(v)}**" if i == t.status else cell(v) for i, v in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def section(s: Section) -> list[str]:
    lines = ["#" * s.level + " " + s.title, ""]
    for text in s.text:
        lines += [cell(text), ""]
    if s.lever:
        lines += [f"**Pull first: {cell(s.lever[0])}**: {cell(s.lever[1])}.", ""]
    if s.bullets:
        lines += [*(f"- {cell(item)}" for item in s.bullets), ""]
    for chart in s.charts:
        name = f" ({chart.title})" if chart.title else ""
        lines += [f"_Chart{name} in the HTML report._", ""]
    for t in s.tables:
        lines += table(t)
    return lines


def _verdict(data: ReportData) -> list[str]:
    _, exit_code = result_of(data)
    against = f", against baseline `{data.baseline_name}`" if data.baseline_name else ""
    lines = [f"**Verdict: {label(data)}** (exit code {exit_code}){against}", ""]
    lines += [f"- **{cell(line)}**" for line in alerts(data)]
    return [*lines, ""] if alerts(data) else lines


def markdown(data: ReportData) -> str:
    run = data.run
    lines = [f"# agentscale report: {cell(run['scenario']['name'])} `{run['run_id']}`", ""]
    lines += _verdict(data)
    for s in sections(data):
        lines += section(s)
    return "\n".join(lines)


def adr(data: ReportData) -> str:
    """An ADR skeleton filled with the evidence: the decision itself is the engineers'."""
    run, overall, d = data.run, data.card["overall"], data.diagnosis
    lines = [
        f"# ADR: scaling {cell(run['scenario']['name'])}",
        "",
        "Status: proposed",
        "",
        "## Context",
        "",
        f"We load-tested `{run['scenario']['name']}` with agentscale (run `{run['run_id']}`)"
        + (f" against the baseline `{data.baseline_name}`" if data.baseline_name else "")
        + ".",
        "",
        "## What we measured",
        "",
        *_verdict(data),
    ]
    checks = data.verdict["checks"] if data.verdict else []
    if checks:
        lines += table(
            Table(
                ["check", "detail", "status"],
                [[c["name"], check_detail(c), c["status"]] for c in checks],
                status=2,
            )
        )
    lines += ["### Scorecard before and after" if data.baseline else "### Scorecard", ""]
    lines += table(key_figures(data))
    for s in steps(data):
        lines += ["### p95 by step", "", *table(s.tables[0])]
    lines += ["## Chaos summary", ""]
    for s in resilience(data):
        lines += section(s)
    if not data.windows:
        lines += ["No fault profile in this run.", ""]
    lines += [
        "## Cache safety",
        "",
        f"Cache hit rate {pct(overall['cache_hit_rate'])}. The scorecard cannot see a cache key; "
        "check that every cached read is keyed by tenant, auth scope and tool version, and that "
        "a tenant's answer never reaches another tenant.",
        "",
        "## Decision",
        "",
        f"Lever to pull first: **{cell(d.lever)}**, because {cell(d.why)}.",
        "",
        *[f"- {cell(item)}" for item in d.evidence],
        "",
        "## Consequences",
        "",
        "Re-run the same scenario with `--baseline` to confirm the "
        "effect; the gate fails on a regression beyond the measured noise.",
        "",
        "## Measurement method",
        "",
        *table(Table(["", ""], method_rows(data))),
    ]
    return "\n".join(lines)
