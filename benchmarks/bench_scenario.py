"""The scenario every benchmark runs against the fast target: only the load differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DATASET = Path(__file__).resolve().parent.parent / "scenarios" / "datasets" / "support_golden.jsonl"


def write_scenario(path: Path, name: str, url: str, load: dict[str, Any]) -> Path:
    document = {
        "apiVersion": "agentscale/v1",
        "kind": "Scenario",
        "name": name,
        "seed": 1,
        "target": {
            "url": f"{url}/agent",
            "timeout": "10s",
            "body": {"tenant_id": "{{tenant}}", "input": "{{prompt}}"},
        },
        "workload": {"dataset": str(DATASET)},
        "load": load,
        "success": {"expect": "none"},
        "pricing": {"mock-small": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
