"""A capacity search against a saved one: did the highest sustainable rate drop?

The saved capacity is a ``capacity.json`` (or the run folder that holds one). A search only
brackets its answer to within its precision, so a drop counts as a regression when it is
beyond the tolerance *and* beyond what the two searches' precisions allow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentscale.errors import ConfigError, Location
from agentscale.records.runfolder import read_json

CAPACITY_HINT = "pass a capacity.json that `agentscale capacity` wrote (or its run folder)"


def load_capacity(path: Path | None, scenario: str, force: bool) -> dict[str, Any] | None:
    """The saved capacity at ``path`` (None: no baseline), refused before any load when it
    cannot be compared: not a capacity, no sustainable rate, another scenario."""
    if path is None:
        return None
    file = path / "capacity.json" if path.is_dir() else path
    try:
        found = read_json(file)
    except FileNotFoundError:
        raise ConfigError("capacity baseline not found", location=Location(file),
                          hint=CAPACITY_HINT) from None  # fmt: skip
    except (OSError, ValueError) as error:
        reason = "invalid JSON" if isinstance(error, ValueError) else str(error)
        raise ConfigError(f"not a capacity file ({reason})", location=Location(file),
                          hint=CAPACITY_HINT) from None  # fmt: skip
    if not isinstance(found, dict) or not str(found.get("schema", "")).startswith(
        "agentscale/capacity/"
    ):
        raise ConfigError("not a capacity file (no agentscale/capacity schema)",
                          location=Location(file), hint=CAPACITY_HINT)  # fmt: skip
    if found.get("result") not in ("found", "max_reached"):
        raise ConfigError(
            f"this capacity search did not finish (result {found.get('result')!r}): what it "
            "held is a lower bound, not a capacity to gate on",
            location=Location(file),
            hint="save a search that found its rate (or held --max) as the baseline",
        )
    rate = found.get("sustainable_rps")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
        raise ConfigError(
            f"this capacity search found no sustainable rate (result {found.get('result')!r})",
            location=Location(file),
            hint="use a search that ended with a rate the target held",
        )
    if found.get("scenario") != scenario and not force:
        raise ConfigError(
            f"the baseline is a capacity of scenario {found.get('scenario')!r}, not {scenario!r}",
            location=Location(file),
            field="--baseline",
            hint="compare like with like, or pass --force",
        )
    found["_path"] = str(file)
    return found


def compare_capacity(
    baseline: dict[str, Any], candidate: dict[str, Any], tolerance: float, path: Path | None
) -> dict[str, Any]:
    """The check of the sustainable rate: pass, regressed or improved, with its figures."""
    before = float(baseline["sustainable_rps"])
    after = float(candidate["sustainable_rps"])
    precision = max(
        float((baseline.get("settings") or {}).get("precision") or 0.0),
        float((candidate.get("settings") or {}).get("precision") or 0.0),
    )
    allowed = max(tolerance, precision)
    change = (after - before) / before
    status = "pass"
    if change < -allowed:
        status = "regressed"
    elif change > allowed:
        status = "improved"
    detail = None
    if candidate.get("result") == "max_reached" and change < -allowed:
        # Every rate tried held: the search stopped at --max, below the baseline's rate.
        status = "inconclusive"
        detail = "--max is below the saved rate: raise it to measure a drop"
    return {
        "name": "capacity: sustainable_rps",
        "file": str(path) if path else baseline.get("_path"),
        "baseline_rps": before,
        "candidate_rps": after,
        "change": round(change, 4),
        "tolerance": f"max decrease {allowed:.0%}",
        "status": status,
        "detail": detail,
    }
