"""The report's tenant evidence: the leak banner, fairness, the noisy neighbour, guardrails and
budgets under load. Rows are built once and rendered as HTML or Markdown."""

from __future__ import annotations

from html import escape
from typing import Any

from agentscale.formats import fmt_pct, fmt_value


def leak_lines(tenants: dict[str, Any] | None) -> list[str]:
    """One sentence per leaking pair, worst first: the first thing a reader must see."""
    leakage = (tenants or {}).get("leakage") or {}
    lines = []
    for pair in leakage.get("pairs", []):
        excerpt = pair.get("excerpt")
        excerpt_text = f' It answered: "{excerpt[:160]}"' if isinstance(excerpt, str) else ""
        lines.append(
            f"SECURITY: cross-tenant leak. Tenant {pair['tenant']} received tenant "
            f"{pair['canary_of']}'s canary in {pair['responses']:,} response(s), first in "
            f"request {pair['first_request_id']}.{excerpt_text}"
        )
    return lines


def sections(tenants: dict[str, Any] | None) -> list[tuple[str, str | None, list[list[str]]]]:
    """(title, note, rows with the header first) for each part of the evidence."""
    if not tenants:
        return []
    out: list[tuple[str, str | None, list[list[str]]]] = []
    leakage = tenants.get("leakage") or {}
    if leakage.get("probed"):
        note = (
            f"{leakage['responses_checked']:,} responses searched for every other tenant's "
            f"canary: {leakage['leaks']:,} carried one."
        )
    else:
        note = (
            "Not probed: the requests carry no {{canary}} and no tenant has a planted canary "
            "(or there is one tenant)."
        )
    fairness = tenants.get("fairness") or {}
    out.append(
        (
            "Fairness and isolation",
            note,
            [
                ["figure", "value"],
                ["tenants", str(fairness.get("tenants", "-"))],
                ["Jain index of success rates", fmt_value(fairness.get("success_rate"))],
                ["Jain index of p95 latencies", fmt_value(fairness.get("latency_p95_ms"))],
            ],
        )
    )
    nn = tenants.get("noisy_neighbor")
    if nn and "before" in nn:
        rows = [["victim " + nn["victim"], "requests", "p95 ms", "success"]]
        for when in ("before", "during"):
            part = nn[when]
            label = (
                "before the first spike" if when == "before" else f"while {nn['neighbor']} spikes"
            )
            rows.append(
                [label, f"{part['requests']:,}", fmt_value(part["latency_p95_ms"]),
                 fmt_pct(part["success_rate"])]
            )  # fmt: skip
        out.append(("Noisy neighbour", None, rows))
    by_load = tenants.get("guardrails_by_load")
    if by_load and "low" in by_load:
        low_level, high_level = by_load["levels"]
        rows = [["load", "answers", "blocks / answer", "redactions / answer"]]
        for name in ("low", "high"):
            part = by_load[name]
            rows.append(
                [name, f"{part['answers']:,}", fmt_value(part["blocks_per_answer"]),
                 fmt_value(part["redactions_per_answer"])]
            )  # fmt: skip
        note = (
            f"Low: target level up to {(low_level + high_level) / 2:g}; high: above it. At low "
            f"load's rates for its workflow mix, high load would show "
            f"{by_load['high']['blocks_expected']:g} blocks and "
            f"{by_load['high']['redactions_expected']:g} redactions."
        )
        out.append(("Guardrails under load", note, rows))
    spent = tenants.get("budgets") or {}
    if spent.get("requests"):
        out.append(
            (
                "Budgets",
                None,
                [
                    ["figure", "value"],
                    ["most steps of one request", fmt_value(spent["max_steps"])],
                    ["most tokens of one request", fmt_value(spent["max_tokens"])],
                    ["longest service time (ms)", fmt_value(spent["max_service_ms"])],
                    ["requests that hit a budget", fmt_pct(spent["exhausted_share"])],
                    ["of those, not labelled degraded", str(spent["exhausted_not_degraded"])],
                ],
            )
        )
    return out


def html(tenants: dict[str, Any] | None) -> str:
    e = escape
    parts = []
    for title, note, rows in sections(tenants):
        parts.append(f"<h3>{e(title)}</h3>")
        if note:
            parts.append(f"<p>{e(note)}</p>")
        header, *body = rows
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for row in body:
            parts.append(
                "<tr>"
                + "".join(
                    f"<td{' class=n' if i else ''}>{e(cell)}</td>" for i, cell in enumerate(row)
                )
                + "</tr>"
            )
        parts.append("</table>")
    return "".join(parts)
