"""How long the demo's services take: their nominal times, scaled by ``time_scale`` and, with
``jitter``, stretched or shrunk at random per call (uniform within +-jitter), so that two runs
of the demo differ as two runs of a real agent do (the gate's calibration needs that)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Pace:
    time_scale: float = 1.0
    jitter: float = 0.0  # 0.3: each call takes 70% to 130% of its nominal time
    rng: random.Random = field(default_factory=random.Random)

    def seconds(self, nominal: float) -> float:
        factor = self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter) if self.jitter else 1.0
        return nominal * self.time_scale * factor
