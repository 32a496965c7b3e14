"""``agentscale scorecard``, ``baseline save``, ``compare`` and ``report``: commands on a run
folder that ``agentscale load`` left."""

from __future__ import annotations

import re
from pathlib import Path

from agentscale import console
from agentscale.analysis.build import build_scorecard
from agentscale.commands.outcome import present
from agentscale.config.faults import FaultProfile
from agentscale.config.loader import parse_document
from agentscale.errors import ConfigError, Location
from agentscale.gate import baseline as baselines
from agentscale.gate.verdict import Candidate, judge
from agentscale.records.frames import damaged_run, is_run_folder, load_frames, not_a_run_folder
from agentscale.records.runfolder import read_json, read_run
from agentscale.report.capacity import write_capacity_report
from agentscale.report.data import scenario_as_run
from agentscale.report.write import write_report


def open_run(run_dir: Path) -> Candidate:
    """A finished run as the gate sees it; the engine's reasons for an invalid run carry over."""
    if not is_run_folder(run_dir):
        raise not_a_run_folder(run_dir)
    if (run_dir / "capacity.json").is_file():
        # Its stages are loads at different rates: one scorecard of them all would mean nothing.
        raise ConfigError(
            "this folder holds a capacity search, not one load run",
            location=Location(run_dir),
            hint="`agentscale report` rewrites its report; gate a new search on it with "
            "`agentscale capacity SCENARIO --baseline FOLDER`",
        )
    with damaged_run(run_dir):
        info = read_run(run_dir)
        verdict = info.get("verdict") or {}
        problems = list(verdict.get("reasons", [])) if verdict.get("result") == "invalid" else []
        return Candidate(
            run_dir,
            info,
            load_frames(run_dir),
            scenario_as_run(run_dir),
            problems,
            interrupted=info.get("status") == "interrupted",
        )


def profile_as_run(run_dir: Path) -> FaultProfile | None:
    path = run_dir / "faults.yaml"
    return parse_document(path, FaultProfile, hint="")[1] if path.is_file() else None


def scorecard(run_dir: Path) -> int:
    run = open_run(run_dir)
    with damaged_run(run_dir):
        card = build_scorecard(run.frames, run.scenario, run_dir, run.info.get("seed", 0))
    console.print_scorecard(card)
    console.print_line(f"scorecard.json written in {run_dir}")
    return 0


def save_baseline(run_dirs: list[Path], name: str, folder: Path) -> int:
    for run_dir in run_dirs:
        if not (run_dir / "scorecard.json").is_file():
            run = open_run(run_dir)
            with damaged_run(run_dir):
                build_scorecard(run.frames, run.scenario, run_dir, run.info.get("seed", 0))
    with damaged_run(run_dirs[0]):
        path = baselines.save(run_dirs, name, folder)
    console.print_line(f"baseline {name} ({len(run_dirs)} run(s)) saved: {path}")
    return 0


def compare(run_dir: Path, baseline_path: Path, force: bool) -> int:
    """Gate a finished run against a baseline."""
    run = open_run(run_dir)
    baseline = baselines.load(baseline_path)
    warnings = baselines.compatibility(baseline, run.info, baseline_path, force)  # shown once
    gates = run.scenario.gates if run.scenario else None
    # The run stays as it was: the comparison's verdict, scorecard and report go beside it.
    folder = run_dir / f"compare-{_safe(baseline['name'])}"
    folder.mkdir(exist_ok=True)
    with damaged_run(run_dir):
        verdict = judge(
            [run], gates, profile_as_run(run_dir), baseline, baseline_path, warnings,
            out_dir=folder,
        )  # fmt: skip
        return present(run, verdict, baseline, out_dir=folder)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "baseline"


def report(run_dir: Path, kind: str, baseline: Path | None, out: Path | None) -> int:
    if not is_run_folder(run_dir):
        raise not_a_run_folder(run_dir)
    with damaged_run(run_dir):
        if (run_dir / "capacity.json").is_file():
            written = write_capacity_report(
                run_dir, read_json(run_dir / "capacity.json"), read_run(run_dir), kind, out
            )
        else:
            written = write_report(run_dir, kind, baseline, out)
    console.print_line(f"report: {written}")
    return 0
