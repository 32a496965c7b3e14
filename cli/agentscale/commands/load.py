"""``agentscale load``: run a scenario (``--repeat`` times), then judge and report."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from agentscale import console
from agentscale.chaos import state
from agentscale.commands.chaos import check_toxiproxy_url
from agentscale.commands.execute import LoadOptions, plan_run, run_once, warn_unredacted
from agentscale.commands.outcome import present
from agentscale.config.checks import arrivals_problem
from agentscale.config.loader import load_fault_profile, load_scenario
from agentscale.demo import DEPENDENCIES
from agentscale.errors import ConfigError
from agentscale.gate import baseline as baselines
from agentscale.gate.verdict import Candidate, judge
from agentscale.records.runfolder import write_run

__all__ = ["LoadOptions", "plan_run", "run_load"]


def run_load(scenario_path: Path, options: LoadOptions) -> int:
    loaded = load_scenario(scenario_path, allow_remote=options.allow_remote, for_run=True)
    warn_unredacted(loaded.scenario.target)
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
            demo_only=() if demo_targets else DEPENDENCIES,
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
    check_out(options.out)  # last of the checks: a refused run leaves no folder behind
    if options.workers or options.remote_workers:
        check_bindable(*options.master_bind)
    candidates: list[Candidate] = []
    for attempt in range(options.repeat):
        if options.repeat > 1:
            console.print_line(f"run {attempt + 1} of {options.repeat}")
        more = attempt < options.repeat - 1
        candidates.append(run_once(loaded, options, duration, profile, faults_path, more))
        if candidates[-1].interrupted:
            break
    try:
        verdict = judge(
            candidates,
            scenario.gates,
            profile.profile if profile else None,
            baseline,
            options.baseline,
            warnings,
        )
        return present(candidates[-1], verdict, baseline, earlier=candidates[:-1])
    except KeyboardInterrupt:
        # Stopped while scoring or writing the report: the folder must not claim a verdict.
        last = candidates[-1]
        last.info["status"] = "interrupted"
        last.info["verdict"] = {
            "result": "interrupted",
            "reasons": ["stopped while judging or reporting; the records are complete"],
        }
        write_run(last.run_dir, last.info)
        raise


def check_out(out: Path) -> None:
    """The output root must be a folder agentscale can write, before any load is sent."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".agentscale-write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(
            f"cannot write run folders under {out}: {reason}",
            field="--out",
            hint="give a folder you can write to (it is created if missing)",
        ) from None


def check_bindable(host: str, port: int) -> None:
    """The master's address must be one this machine can listen on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {error.strerror or error}",
            field="--master-bind",
            hint="an address of this machine and a free port, e.g. 0.0.0.0:5557",
        ) from None
