"""``agentscale load``: run a scenario (``--repeat`` times), then judge and report."""

from __future__ import annotations

from pathlib import Path

from agentscale import console
from agentscale.chaos import state
from agentscale.commands.chaos import check_toxiproxy_url
from agentscale.commands.execute import LoadOptions, plan_run, run_once
from agentscale.commands.outcome import present
from agentscale.config.checks import arrivals_problem
from agentscale.config.loader import load_fault_profile, load_scenario
from agentscale.demo import DEPENDENCIES
from agentscale.errors import ConfigError
from agentscale.gate import baseline as baselines
from agentscale.gate.verdict import Candidate, judge

__all__ = ["LoadOptions", "plan_run", "run_load"]


def run_load(scenario_path: Path, options: LoadOptions) -> int:
    loaded = load_scenario(scenario_path, allow_remote=options.allow_remote, for_run=True)
    for line in state.clean_leftovers():  # a killed run's faults go before anything starts
        console.print_warning(f"left by an earlier run: {line}")
    scenario = loaded.scenario
    duration = options.duration or scenario.load.duration
    too_many = arrivals_problem(scenario, duration)
    if too_many:
        raise ConfigError(too_many, field="--duration", hint="lower the rate or run shorter")
    faults_path = options.faults or (loaded.resolve(scenario.faults) if scenario.faults else None)
    profile = None
    if faults_path is not None:
        demo_targets = DEPENDENCIES if scenario.target.url == "demo" else ()
        profile = load_fault_profile(
            faults_path,
            demo_targets=demo_targets,
            duration=duration,
            allow_remote=options.allow_remote,
        )
    check_toxiproxy_url(options.toxiproxy_url, options.allow_remote)
    baseline, warnings = None, []
    if options.baseline is not None:
        # Before any load: a baseline of something else is a usage error (exit 2).
        baseline = baselines.load(options.baseline)
        planned = plan_run(loaded, options, Path("planned"))
        warnings = baselines.compatibility(baseline, planned, options.baseline, options.force)
    candidates: list[Candidate] = []
    for attempt in range(options.repeat):
        if options.repeat > 1:
            console.print_line(f"run {attempt + 1} of {options.repeat}")
        candidates.append(run_once(loaded, options, duration, profile, faults_path))
        if candidates[-1].interrupted:
            break
    verdict = judge(
        candidates,
        scenario.gates,
        profile.profile if profile else None,
        baseline,
        options.baseline,
        warnings,
    )
    return present(candidates[-1], verdict, baseline)
