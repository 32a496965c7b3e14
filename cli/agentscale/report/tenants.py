"""The report's tenant evidence: the leak banner, fairness, the noisy neighbour, guardrails and
budgets under load. Rows for the report's sections."""

from __future__ import annotations

from agentscale.analysis.figures import TenantFigures
from agentscale.formatting import num, pct


def leak_lines(tenants: TenantFigures | None) -> list[str]:
    """One sentence per leaking pair, worst first: the first thing a reader must see."""
    if not tenants:
        return []
    lines = []
    for pair in tenants["leakage"]["pairs"]:
        excerpt = pair["excerpt"]
        excerpt_text = f' It answered: "{excerpt[:160]}"' if isinstance(excerpt, str) else ""
        lines.append(
            f"SECURITY: cross-tenant leak. Tenant {pair['tenant']} received tenant "
            f"{pair['canary_of']}'s canary in {pair['responses']:,} response(s), first in "
            f"request {pair['first_request_id']}.{excerpt_text}"
        )
    return lines


def sections(tenants: TenantFigures | None) -> list[tuple[str, str | None, list[list[str]]]]:
    """(title, note, rows with the header first) for each part of the evidence."""
    if not tenants:
        return []
    out: list[tuple[str, str | None, list[list[str]]]] = []
    leakage = tenants["leakage"]
    if leakage["probed"]:
        note = (
            f"{leakage['responses_checked']:,} responses searched for every other tenant's "
            f"canary: {leakage['leaks']:,} carried one."
        )
    else:
        note = (
            "Not probed: the requests carry no {{canary}} and no tenant has a planted canary "
            "(or there is one tenant)."
        )
    fairness = tenants["fairness"]
    out.append(
        (
            "Fairness and isolation",
            note,
            [
                ["figure", "value"],
                ["tenants", str(fairness["tenants"])],
                ["Jain index of success rates", num(fairness["success_rate"])],
                ["Jain index of p95 latencies", num(fairness["latency_p95_ms"])],
            ],
        )
    )
    nn = tenants.get("noisy_neighbor")
    if nn and "before" in nn:
        rows = [["victim " + nn["victim"], "requests", "p95 ms", "success"]]
        for label, part in (
            ("before the first spike", nn["before"]),
            (f"while {nn['neighbor']} spikes", nn.get("during") or nn["before"]),
        ):
            rows.append(
                [label, f"{part['requests']:,}", num(part["latency_p95_ms"]),
                 pct(part["success_rate"])]
            )  # fmt: skip
        out.append(("Noisy neighbour", None, rows))
    by_load = tenants.get("guardrails_by_load")
    if by_load and "low" in by_load:
        low_level, high_level = by_load["levels"]
        rows = [["load", "answers", "blocks / answer", "redactions / answer"]]
        for name, side in (("low", by_load["low"]), ("high", by_load.get("high") or {})):
            rows.append(
                [name, f"{side.get('answers', 0):,}", num(side.get("blocks_per_answer")),
                 num(side.get("redactions_per_answer"))]
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
                    ["most steps of one request", num(spent["max_steps"])],
                    ["most tokens of one request", num(spent["max_tokens"])],
                    ["longest service time (ms)", num(spent["max_service_ms"])],
                    ["requests that hit a budget", pct(spent["exhausted_share"])],
                    ["of those, not labelled degraded", str(spent["exhausted_not_degraded"])],
                ],
            )
        )
    return out
