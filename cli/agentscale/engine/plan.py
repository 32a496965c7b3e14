"""Which tenant, workflow and golden item each request uses: a seeded, weighted mix."""

from __future__ import annotations

import itertools
from bisect import bisect
from dataclasses import dataclass

from agentscale.config.dataset import Dataset


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    request_id: str
    tenant: str
    workflow: str
    item: int
    seq: int


class Planner:
    def __init__(
        self,
        dataset: Dataset,
        tenants: dict[str, float],
        workflows: dict[str, float] | None,
        seed: int,
        id_prefix: str = "",
    ) -> None:
        groups = dataset.by_workflow()
        weights = workflows or {name: 1.0 for name in groups}
        self.workflows = list(weights)
        self.workflow_cum = list(itertools.accumulate(weights.values()))
        self.items = [groups[name] for name in self.workflows]
        self.tenants = list(tenants)
        self.tenant_cum = list(itertools.accumulate(tenants.values()))
        self.seed = _mix(seed & MASK)
        self.prefix = id_prefix

    def plan(self, seq: int, tenant: str | None = None) -> PlannedRequest:
        """The request of arrival ``seq``; ``tenant`` is the sender when the arrival is a
        tenant's own, else one is drawn by weight."""
        # Drawn from the seed and the arrival's number alone, not from a stream: arrival 42
        # is the same request however many workers share the arrivals, in whatever order.
        # Every arrival's key has the seed's lowest bit; the item's draw flips it, so that it
        # is never another draw's key (``key | 1`` was the same key for an odd seed).
        key = self.seed ^ (seq << 1)
        bits = _mix(key)  # 32 bits for the tenant, 32 for the workflow
        low, high = (bits & LOW) * UNIT_32, (bits >> 32) * UNIT_32
        drawn = self.tenants[bisect(self.tenant_cum, low * self.tenant_cum[-1])]
        tenant = tenant or drawn
        index = bisect(self.workflow_cum, high * self.workflow_cum[-1])
        items = self.items[index]
        item = items[int(_unit(key ^ 1) * len(items))] if len(items) > 1 else items[0]
        return PlannedRequest(f"{self.prefix}{seq:07d}", tenant, self.workflows[index], item, seq)


MASK = (1 << 64) - 1
LOW = (1 << 32) - 1
UNIT_32 = 1.0 / (1 << 32)


def _mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit integer to a well-spread 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def _unit(key: int) -> float:
    """A uniform number in [0, 1) from ``key``: the top 53 bits of its mix."""
    return (_mix(key & MASK) >> 11) * (1.0 / (1 << 53))
