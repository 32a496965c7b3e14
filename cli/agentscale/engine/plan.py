"""Which tenant, workflow and golden item each request uses: a seeded, weighted mix."""

from __future__ import annotations

import itertools
import random
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
        self.random = random.Random(seed)
        self.prefix = id_prefix

    def plan(self, seq: int, tenant: str | None = None) -> PlannedRequest:
        """The request of arrival ``seq``; ``tenant`` is the sender when the arrival is a
        tenant's own, else one is drawn by weight."""
        draw = self.random.random
        drawn = self.tenants[bisect(self.tenant_cum, draw() * self.tenant_cum[-1])]
        tenant = tenant or drawn
        index = bisect(self.workflow_cum, draw() * self.workflow_cum[-1])
        items = self.items[index]
        item = items[int(draw() * len(items))]
        return PlannedRequest(f"{self.prefix}{seq:07d}", tenant, self.workflows[index], item, seq)
