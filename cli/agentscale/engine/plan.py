"""Which tenant, workflow and golden item each request uses: a seeded, weighted mix."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from agentscale.dataset import Dataset


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    request_id: str
    tenant: str
    workflow: str
    item: int


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

    def plan(self, seq: int) -> PlannedRequest:
        pick = self.random.choices
        tenant = pick(self.tenants, cum_weights=self.tenant_cum)[0]
        index = pick(range(len(self.workflows)), cum_weights=self.workflow_cum)[0]
        item = self.random.choice(self.items[index])
        return PlannedRequest(f"{self.prefix}{seq:07d}", tenant, self.workflows[index], item)
