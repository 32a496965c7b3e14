"""The report as GitHub-flavoured Markdown, and as an architecture decision record."""

from __future__ import annotations

from typing import Any

from agentscale import report_tenants
from agentscale.formats import fmt_pct, fmt_usd, fmt_value
from agentscale.report import ReportData, check_detail, key_rows, method_rows
from agentscale.verdictfiles import LABEL


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> list[str]:
    numeric = numeric or set()
    align = ["---:" if i in numeric else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _verdict(data: ReportData) -> list[str]:
    verdict = data.verdict or {
        "result": data.run.get("verdict", {}).get("result", "pass"),
        "exit_code": data.run.get("exit_code"),
        "checks": [],
    }
    result = verdict["result"]
    lines = [
        f"**Verdict: {LABEL.get(result, result.upper())}** (exit code "
        f"{verdict.get('exit_code')})"
        + (f", against baseline `{data.baseline_name}`" if data.baseline_name else ""),
        "",
    ]
    lines += [f"- **{_cell(r)}**" for r in report_tenants.leak_lines(data.card.get("tenants"))]
    lines += [f"- invalid: {_cell(r)}" for r in verdict.get("invalid_reasons", [])]
    if verdict.get("checks"):
        lines += _table(
            ["check", "detail", "status"],
            [[c["name"], check_detail(c), f"**{c['status']}**"] for c in verdict["checks"]],
        )
    return lines


def _figures(data: ReportData) -> list[str]:
    if data.baseline:
        return _table(
            ["figure", "before (baseline)", "after (this run)"],
            [list(row) for row in key_rows(data)],
            {1, 2},
        )
    return _table(
        ["figure", "this run"], [[label, value] for label, _, value in key_rows(data)], {1}
    )


def _steps(data: ReportData) -> list[str]:
    overall = data.card["overall"]
    base = (data.baseline or {}).get("steps", {})
    shares = overall.get("slowest_5pct_share", {})
    rows = [
        [
            name,
            st["kind"],
            st["count"],
            fmt_value(st["p95_ms"]),
            fmt_value(base.get(name, {}).get("p95_ms")),
            fmt_pct(shares.get(name)),
        ]
        for name, st in sorted(
            overall.get("steps", {}).items(), key=lambda kv: -(kv[1]["p95_ms"] or 0)
        )
    ]
    return _table(
        ["step", "kind", "calls", "p95 ms", "baseline p95 ms", "share of slowest 5%"],
        rows,
        {2, 3, 4, 5},
    )


def _groups(title: str, groups: dict[str, Any]) -> list[str]:
    if not groups:
        return []
    rows = [
        [
            name,
            c["requests"],
            fmt_pct(c["success_rate"]),
            fmt_value(c["latency_p95_ms"]),
            fmt_value(c["retries_per_tool_call"]),
            fmt_usd(c["cost_per_success_usd"]),
            fmt_pct(c["degraded_share"]),
        ]
        for name, c in groups.items()
    ]
    return [
        f"**{title}**",
        "",
        *_table(
            [
                "group",
                "requests",
                "success",
                "p95 ms",
                "retries / call",
                "cost / success",
                "degraded",
            ],
            rows,
            {1, 2, 3, 4, 5, 6},
        ),
    ]


def _chaos(data: ReportData) -> list[str]:
    lines: list[str] = []
    overall = data.card["overall"]
    lines.append(
        f"Circuit opens {overall['circuit_opens']}, fallbacks {overall['fallbacks']}, "
        f"degraded share {fmt_pct(overall['degraded_share'])}, budget exhaustions "
        f"{overall['budget_exhausted']}."
    )
    lines.append("")
    for name, start, end in data.windows:
        lines += _groups(
            f"{name} ({start:g}s to {end:g}s)", data.card.get("by_window", {}).get(name, {})
        )
    checks = [c for c in (data.verdict or {}).get("checks", []) if c["kind"] == "expectation"]
    if checks:
        lines += _table(
            ["expectation", "measured", "status"],
            [[c["name"], fmt_value(c.get("value")), c["status"]] for c in checks],
        )
    return lines


def markdown(data: ReportData) -> str:
    run = data.run
    lines = [f"# agentscale report: {run['scenario']['name']} `{run['run_id']}`", ""]
    lines += _verdict(data)
    lines += ["## Key figures", "", *_figures(data)]
    d = data.diagnosis
    lines += [
        "## Bottleneck diagnosis",
        "",
        f"**Pull first: {_cell(d.lever)}**: {_cell(d.why)}.",
        "",
        *[f"- {_cell(item)}" for item in d.evidence],
        "",
    ]
    lines += ["## p95 by step", "", *_steps(data)]
    lines += ["## Per tenant", "", *_groups("tenants", data.card.get("by_tenant", {}))]
    for title, note, (header, *rows) in report_tenants.sections(data.card.get("tenants")):
        lines += [f"### {title}", "", *([note, ""] if note else []), *_table(header, rows)]
    lines += ["## Per workflow", "", *_groups("workflows", data.card.get("by_workflow", {}))]
    if data.windows:
        lines += ["## Resilience", "", *_chaos(data)]
    lines += ["## Measurement method", "", *_table(["", ""], [list(r) for r in method_rows(data)])]
    return "\n".join(lines)


def adr(data: ReportData) -> str:
    """An ADR skeleton filled with the evidence: the decision itself is the engineers'."""
    run, overall, d = data.run, data.card["overall"], data.diagnosis
    cache = overall.get("cache_hit_rate")
    lines = [
        f"# ADR: scaling {run['scenario']['name']}",
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
    ]
    lines += _verdict(data)
    lines += [
        "### Scorecard before and after" if data.baseline else "### Scorecard",
        "",
        *_figures(data),
        "### p95 by step",
        "",
        *_steps(data),
    ]
    lines += [
        "## Chaos summary",
        "",
        *(_chaos(data) if data.windows else ["No fault profile in this run.", ""]),
    ]
    lines += [
        "## Cache safety",
        "",
        f"Cache hit rate {fmt_pct(cache)}. The scorecard cannot see a cache key; check that "
        "every cached read is keyed by tenant, auth scope and tool version, and that a "
        "tenant's answer never reaches another tenant.",
        "",
    ]
    lines += [
        "## Decision",
        "",
        f"Lever to pull first: **{_cell(d.lever)}**, because {_cell(d.why)}.",
        "",
        *[f"- {_cell(item)}" for item in d.evidence],
        "",
        "## Consequences",
        "",
        "Re-run the same scenario with `--baseline` to confirm the "
        "effect; the gate fails on a regression beyond the measured noise.",
        "",
        "## Measurement method",
        "",
        *_table(["", ""], [list(r) for r in method_rows(data)]),
    ]
    return "\n".join(lines)
