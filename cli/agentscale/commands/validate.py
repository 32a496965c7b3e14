"""``agentscale validate`` (a scenario with its fault profile, or a fault profile alone) and
``agentscale schema``."""

from __future__ import annotations

from pathlib import Path

from agentscale.config.faults import FaultProfile
from agentscale.config.loader import load_fault_profile, load_scenario
from agentscale.config.scenario import Scenario, is_loopback
from agentscale.config.source import load_yaml
from agentscale.demo import DEPENDENCIES
from agentscale.jsondata import JsonObject


def validate_file(path: Path) -> list[str]:
    """Raise ``ConfigError`` with the file's positions for anything wrong; return what a run
    will still ask for (an allow for a host beyond loopback)."""
    kind = load_yaml(path).data
    kind = kind.get("kind") if isinstance(kind, dict) else None
    if kind == "FaultProfile":
        # Alone, a profile may target the demo's dependencies or declare its own.
        load_fault_profile(path, demo_targets=DEPENDENCIES)
        return []
    loaded = load_scenario(path)
    scenario = loaded.scenario
    if scenario.faults:
        demo = DEPENDENCIES if scenario.target.url == "demo" else ()
        load_fault_profile(
            loaded.resolve(scenario.faults), demo_targets=demo, duration=scenario.load.duration
        )
    host = scenario.target.host
    if scenario.target.url != "demo" and not is_loopback(host) and not scenario.target.allow_remote:
        return [f"{path}: target host {host} is beyond loopback: a run needs --allow-remote {host}"]
    return []


def schema_document(kind: str) -> JsonObject:
    """The JSON Schema of a file kind, for editors: ``scenario`` or ``fault-profile``."""
    model = Scenario if kind == "scenario" else FaultProfile
    document: JsonObject = model.model_json_schema(by_alias=True)
    document["title"] = f"agentscale {model.__name__}"
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return document
