"""A benchmark's headline figures, for the table `make bench` prints (benchmarks/run_all.py).

Each benchmark prints its own figures; ``record`` also appends one JSON line per figure to the
file named by ``BENCH_RESULTS`` when that is set, with the goal beside it.
"""

from __future__ import annotations

import json
import os


def record(benchmark: str, figure: str, value: float, goal: str, met: bool | None) -> None:
    """``met``: None for a figure with no goal (or one this run cannot judge): shown as such,
    never as a goal met."""
    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    line = {"benchmark": benchmark, "figure": figure, "value": value, "goal": goal, "met": met}
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
