"""The whole scorecard of a run: the figures per group, the tenant section, and the file."""

from __future__ import annotations

from pathlib import Path

from agentscale.analysis.figures import Scorecard
from agentscale.analysis.scorecard import scorecard
from agentscale.analysis.tenants import figures as tenant_figures
from agentscale.config.scenario import Scenario
from agentscale.records.frames import RunFrames
from agentscale.records.runfolder import write_json


def build_scorecard(
    frames: RunFrames, scenario: Scenario | None, out_dir: Path, seed: int = 0
) -> Scorecard:
    """Compute the scorecard from ``frames`` and write ``scorecard.json`` in ``out_dir``."""
    card = scorecard(frames, seed=seed)
    if scenario is not None:
        card["tenants"] = tenant_figures(frames, card, scenario)
    write_json(out_dir / "scorecard.json", card)
    return card
