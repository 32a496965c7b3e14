"""From finished runs to a verdict: scorecards, expectations, SLOs and baseline checks, decided
into one result and exit code, written for CI (``verdict.json``, ``junit.xml``, ``summary.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agentscale.analysis.build import build_scorecard
from agentscale.analysis.figures import Card, Scorecard
from agentscale.config.faults import FaultProfile
from agentscale.config.metrics import MIN_REQUESTS
from agentscale.config.scenario import Gates, Scenario
from agentscale.errors import EXIT_INTERRUPTED
from agentscale.gate import cifiles
from agentscale.gate.baseline import Baseline
from agentscale.gate.checks import FAILING, VERDICT_SCHEMA, Check, Verdict, new_check
from agentscale.gate.compare import compare
from agentscale.gate.expectations import evaluate as window_checks
from agentscale.gate.slo import slo_checks
from agentscale.gate.tenants import evaluate as tenant_checks
from agentscale.gate.tolerance import set_by, tolerances
from agentscale.records.frames import RunFrames
from agentscale.records.runfolder import RunInfo, read_run, write_run


@dataclass
class Candidate:
    """A finished run, as the gate judges it."""

    run_dir: Path
    info: RunInfo
    frames: RunFrames
    scenario: Scenario | None  # as run: its gates and tenant expectations
    problems: list[str] = field(default_factory=list)  # why the run is invalid
    interrupted: bool = False
    card: Scorecard | None = None  # set by ``judge``


def decide(checks: list[Check], invalid: list[str]) -> tuple[str, int]:
    """(result, exit code): invalid 3, regressed or failed 1, inconclusive 3, else 0. A check
    the scenario asked for whose data the agent never reported makes the run inconclusive."""
    if any(c["kind"] == "security" and c["status"] == "failed" for c in checks):
        return "fail", 1
    if invalid:
        return "invalid", 3
    statuses = {c["status"] for c in checks}
    if statuses & FAILING:
        return "fail", 1
    unmeasured = any(c["status"] == "not measured" and not c.get("optional") for c in checks)
    if "inconclusive" in statuses or unmeasured:
        return "inconclusive", 3
    return "pass", 0


GATES = frozenset({"baseline", "slo", "expectation", "tenants", "budgets"})


def judge(
    candidates: list[Candidate],
    gates: Gates | None,
    profile: FaultProfile | None,
    baseline: Baseline | None,
    baseline_path: Path | None,
    warnings: list[str],
    out_dir: Path | None = None,
) -> Verdict:
    """Score every candidate, check it, decide; write the CI files (and the scorecard) beside
    the last run and the verdict into each run's ``run.json`` - or, with ``out_dir`` (a
    compare), all of it there, leaving the runs as they were."""
    cards: list[Card] = []
    checks: list[Check] = []
    for i, candidate in enumerate(candidates):
        card = build_scorecard(
            candidate.frames,
            candidate.scenario,
            out_dir or candidate.run_dir,
            candidate.info.get("seed", 0),
        )
        candidate.card = card
        cards.append(card["overall"])
        found: list[Check] = []
        if "tenants" in card:
            expect = candidate.scenario.expect if candidate.scenario else None
            found += tenant_checks(expect, card["tenants"])
        if profile is not None and profile.expect:
            found += window_checks(profile.expect, candidate.frames, card)
        overall = card["overall"]
        if overall["requests"] and not overall["successes"]:
            # Whatever was gated, an agent that answered nothing right has not passed.
            found.append(
                new_check(
                    "at least one request succeeded", "run", "successes", "failed",
                    expected="> 0", value=0, detail="no request of the run succeeded",
                )
            )  # fmt: skip
        if len(candidates) > 1:
            for check in found:
                check["name"] = f"run {i + 1}: {check['name']}"
        checks += found
    checks += slo_checks(gates, cards)
    if baseline is not None:
        runs = [r["scorecard"] for r in baseline["runs"]]
        min_requests = gates.min_requests if gates else MIN_REQUESTS
        checks += compare(
            runs, cards, tolerances(gates), min_requests=min_requests, required=set_by(gates),
            gates=gates,
        )  # fmt: skip
    invalid = [p for c in candidates for p in c.problems]
    # Security findings head the verdict: a leak seen is a leak, however the run went.
    checks.sort(key=lambda c: c["kind"] != "security")
    result, code = decide(checks, invalid)
    if any(c.interrupted for c in candidates):
        result, code = "interrupted", EXIT_INTERRUPTED
    last = candidates[-1]
    verdict: Verdict = {
        "schema": VERDICT_SCHEMA,
        "result": result,
        "exit_code": code,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": last.info["run_id"],
        "candidate_runs": [str(c.run_dir) for c in candidates],
        "baseline": baseline["name"] if baseline else None,
        "baseline_file": str(baseline_path) if baseline_path else None,
        "checks": checks,
        "invalid_reasons": invalid,
        "warnings": warnings,
        "gated": any(c["kind"] in GATES for c in checks),
    }
    cifiles.write(out_dir or last.run_dir, verdict, cards)
    if out_dir is not None:
        return verdict
    for candidate in candidates:
        info = read_run(candidate.run_dir)
        info["verdict"] = {"result": result, "reasons": invalid, "verdict_file": str(last.run_dir)}
        info["exit_code"] = code
        write_run(candidate.run_dir, info)
        candidate.info = info
    return verdict
