"""Absolute limits on run-level figures (``gates.slo``): the median over repeated runs."""

from __future__ import annotations

from statistics import median

from agentscale.analysis.figures import Card, figure, reported
from agentscale.config.scenario import Gates
from agentscale.gate.checks import Check, holds, new_check


def slo_checks(gates: Gates | None, candidate: list[Card]) -> list[Check]:
    checks = []
    for name, rule in gates.slo.items() if gates else []:
        values = [v for c in candidate if (v := figure(c, name)) is not None]
        value = median(values) if values else None
        check = new_check(
            f"slo: {name} {rule}", "slo", name, holds(rule, value), expected=str(rule), value=value
        )
        if not any(reported(c, name) for c in candidate):
            check["status"] = "not measured"
            check["detail"] = "the agent reported no data for it"
        checks.append(check)
    return checks
