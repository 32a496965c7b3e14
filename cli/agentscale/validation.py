"""``agentscale validate``: a scenario (with its fault profile) or a fault profile alone."""

from __future__ import annotations

from pathlib import Path

from agentscale.chaos.loading import load_fault_profile
from agentscale.demo.settings import DEPENDENCIES
from agentscale.loading import load_scenario
from agentscale.yamlsource import load_yaml


def validate_file(path: Path) -> None:
    """Raise ``ConfigError`` with the file's positions for anything wrong."""
    kind = load_yaml(path).data
    kind = kind.get("kind") if isinstance(kind, dict) else None
    if kind == "FaultProfile":
        # Alone, a profile may target the demo's dependencies or declare its own.
        load_fault_profile(path, demo_targets=DEPENDENCIES)
        return
    loaded = load_scenario(path)
    scenario = loaded.scenario
    if scenario.faults:
        demo = DEPENDENCIES if scenario.target.url == "demo" else ()
        load_fault_profile(
            loaded.resolve(scenario.faults), demo_targets=demo, duration=scenario.load.duration
        )
