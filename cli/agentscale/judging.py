"""From finished runs to a verdict: scorecards, expectations, SLOs, baseline checks, files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentscale import baseline as baselines
from agentscale import console, tenantchecks, verdictfiles
from agentscale.chaos.profile import FaultProfile
from agentscale.errors import EXIT_INTERRUPTED
from agentscale.expectations import evaluate
from agentscale.gate import compare, decide, slo_checks, tolerances
from agentscale.runfolder import load_frames, read_json, write_json
from agentscale.scenario import Gates, Scenario
from agentscale.scorecard import scorecard


@dataclass
class Candidate:
    run_dir: Path
    problems: list[str] = field(default_factory=list)  # why the run is invalid
    interrupted: bool = False


def build_scorecard(run_dir: Path, seed: int = 0) -> tuple[dict[str, Any], Any]:
    frames = load_frames(run_dir)
    card = scorecard(frames, seed=seed)
    scenario = _scenario(run_dir)
    if scenario is not None:
        card["tenants"] = tenantchecks.figures(frames, card, scenario)
    write_json(run_dir / "scorecard.json", card)
    return card, frames


def judge(
    candidates: list[Candidate],
    gates: Gates | None,
    profile: FaultProfile | None,
    baseline_path: Path | None,
    baseline: dict[str, Any] | None,
    warnings: list[str],
) -> int:
    cards, checks = [], []
    for i, candidate in enumerate(candidates):
        info = read_json(candidate.run_dir / "run.json")
        card, frames = build_scorecard(candidate.run_dir, seed=int(info.get("seed", 0)))
        cards.append(card["overall"])
        found = []
        if "tenants" in card:
            scenario = _scenario(candidate.run_dir)
            found += tenantchecks.evaluate(scenario.expect if scenario else None, card["tenants"])
        if profile is not None and profile.expect:
            found += evaluate(profile.expect, frames, card)
        if len(candidates) > 1:
            for check in found:
                check["name"] = f"run {i + 1}: {check['name']}"
        checks += found
    checks += slo_checks(gates, cards)
    if baseline is not None:
        runs = [r["scorecard"] for r in baseline["runs"]]
        min_requests = gates.min_requests if gates else 100
        checks += compare(runs, cards, tolerances(gates), min_requests=min_requests)
    invalid = [p for c in candidates for p in c.problems]
    # Security findings head the verdict: a leak seen is a leak, however the run went.
    checks.sort(key=lambda c: c.get("kind") != "security")
    result, code = decide(checks, invalid)
    if any(c.interrupted for c in candidates):
        result, code = "interrupted", EXIT_INTERRUPTED
    last = candidates[-1].run_dir
    info = read_json(last / "run.json")
    verdict = {
        "result": result,
        "exit_code": code,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": info["run_id"],
        "candidate_runs": [str(c.run_dir) for c in candidates],
        "baseline": baseline["name"] if baseline else None,
        "baseline_file": str(baseline_path) if baseline_path else None,
        "checks": checks,
        "invalid_reasons": invalid,
        "warnings": warnings,
    }
    verdictfiles.write(last, verdict)
    for candidate in candidates:
        run = read_json(candidate.run_dir / "run.json")
        run["verdict"] = {"result": result, "reasons": invalid, "verdict_file": str(last)}
        run["exit_code"] = code
        write_json(candidate.run_dir / "run.json", run)
    console.print_scorecard(read_json(last / "scorecard.json"))
    console.print_verdict(verdict, str(last))
    from agentscale.reporting import write_report

    console.print_line(f"report: {write_report(last, 'html', baseline_path, None)}")
    return code


def compare_run(run_dir: Path, baseline_path: Path, force: bool) -> int:
    """``agentscale compare``: gate a finished run; its engine verdict's problems carry over."""
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else None
    if info is None:
        load_frames(run_dir)  # raises the "not a run folder" error
        raise AssertionError("unreachable")
    baseline = baselines.load(baseline_path)
    warnings = baselines.compatibility(baseline, info, baseline_path, force)
    for warning in warnings:
        console.print_warning(warning)
    gates = _gates(run_dir)
    verdict = info.get("verdict") or {}
    problems = list(verdict.get("reasons", [])) if verdict.get("result") == "invalid" else []
    candidate = Candidate(run_dir, problems, interrupted=info.get("status") == "interrupted")
    return judge([candidate], gates, _profile(run_dir), baseline_path, baseline, warnings)


def _gates(run_dir: Path) -> Gates | None:
    scenario = _scenario(run_dir)
    return scenario.gates if scenario else None


def _scenario(run_dir: Path) -> Scenario | None:
    from agentscale.loading import parse_document

    path = run_dir / "scenario.yaml"
    if not path.is_file():
        return None
    return parse_document(path, Scenario, hint="")[1]


def _profile(run_dir: Path) -> FaultProfile | None:
    from agentscale.loading import parse_document

    path = run_dir / "faults.yaml"
    return parse_document(path, FaultProfile, hint="")[1] if path.is_file() else None
