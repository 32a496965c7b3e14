"""Tenants' traffic: who sends each arrival, the total load over time, and each tenant's canary.

Tenants without a shape share ``load.shape`` by weight; a tenant with a shape of its own sends
its arrivals on top of that, so one tenant can spike while the others stay steady.
"""

from __future__ import annotations

import re
import secrets

import numpy as np

from agentscale.config.scenario import Scenario
from agentscale.config.shapes import arrival_offsets

SHARED = -1  # an arrival of load.shape: the planner draws its tenant by weight


def shared_weights(scenario: Scenario) -> dict[str, float]:
    return {n: t.weight for n, t in scenario.tenant_specs().items() if t.shape is None}


def own_shapes(scenario: Scenario) -> list[str]:
    """Tenants with their own arrivals, in a fixed order (their index in ``arrivals``)."""
    return sorted(n for n, t in scenario.tenant_specs().items() if t.shape is not None)


def arrivals(
    scenario: Scenario,
    duration: float,
    *,
    seed: int,
    replay_offsets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every intended send time of the run, in order, and who sends it: SHARED, or the index
    of a tenant of ``own_shapes``."""
    load = scenario.load
    poisson = load.arrivals == "poisson"
    parts = [arrival_offsets(load.shape, duration, poisson=poisson, seed=seed,
                             replay_offsets=replay_offsets)]  # fmt: skip
    labels = [np.full(parts[0].size, SHARED, dtype=np.int32)]
    specs = scenario.tenant_specs()
    for index, name in enumerate(own_shapes(scenario)):
        shape = specs[name].shape
        assert shape is not None
        offsets = arrival_offsets(shape, duration, poisson=poisson, seed=seed + 1 + index)
        parts.append(offsets)
        labels.append(np.full(offsets.size, index, dtype=np.int32))
    offsets = np.concatenate(parts)
    who = np.concatenate(labels)
    order = np.argsort(offsets, kind="stable")
    return offsets[order], who[order]


def levels(scenario: Scenario, t: np.ndarray, duration: float) -> np.ndarray:
    """The target level (requests/s or users) of all tenants together at each time of ``t``."""
    total = scenario.load.shape.levels(t, duration).astype(float)
    for spec in scenario.tenant_specs().values():
        if spec.shape is not None:
            total = total + spec.shape.levels(t, duration)
    return total


def level_now(scenario: Scenario, elapsed: float, duration: float) -> float:
    """The live view's target at ``elapsed`` seconds: 0 in the drain, where the shape asks for
    nothing (its level at the end could be a spike's)."""
    if elapsed >= duration:
        return 0.0
    return round(float(levels(scenario, np.array([max(elapsed, 0.0)]), duration)[0]), 2)


def canaries(scenario: Scenario) -> dict[str, str]:
    """Each tenant's canary: the one planted in its data, or a fresh random one for this run
    (never guessable, never reused, so that a hit can only come from this run's traffic)."""
    out = {}
    for name, spec in scenario.tenant_specs().items():
        slug = re.sub(r"[^a-z0-9]+", "", name.lower())[:12] or "t"
        out[name] = spec.canary or f"cnry-{slug}-{secrets.token_hex(6)}"
    return out
