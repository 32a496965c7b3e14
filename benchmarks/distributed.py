"""Requests/s with 2 Locust workers against 1, same fast target, one run each, alternating.

nginx answers on the last core; the master and the workers are not pinned, so on a 2-core
machine the workers share the cores with nginx: the ratio says what a second worker buys here,
not what it buys on a machine with a core to spare for it. Prints the figures and the ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_scenario import write_scenario
from fast_target import last_core, nginx
from results import record

USERS = int(os.environ.get("BENCH_USERS", "40"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
GOAL = 1.8


def run(url: str, work: Path, workers: int) -> tuple[float, int]:
    load = {"model": "closed", "shape": {"kind": "constant", "users": USERS},
            "duration": f"{SECONDS}s"}  # fmt: skip
    scenario = write_scenario(work / f"bench-{workers}.yaml", "bench-distributed", url, load)
    out = work / f"runs-{workers}"
    done = subprocess.run(
        [sys.executable, "-m", "agentscale", "load", str(scenario), "--out", str(out),
         "--workers", str(workers)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode not in (0, 3):
        raise SystemExit(f"agentscale failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    run_dir = max(out.glob("*/*"))
    info = json.loads((run_dir / "run.json").read_text())
    summary = info["summary"]
    return summary["sent"] / SECONDS, summary["sent"]


def main() -> None:
    rates: dict[int, list[float]] = {1: [], 2: []}
    with nginx(core=last_core()) as url, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            for workers in (1, 2):
                work = Path(tmp) / f"{round_}-{workers}"
                work.mkdir()
                rate, sent = run(url, work, workers)
                rates[workers].append(rate)
                print(f"round {round_ + 1}, {workers} worker(s): {rate:,.0f} requests/s "
                      f"({sent:,} requests)", flush=True)  # fmt: skip
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"\n{USERS} users (closed model), {SECONDS} s, {os.cpu_count()} cores, nginx on core "
          f"{last_core()}")  # fmt: skip
    print(f"1 worker:  {one:,.0f} requests/s (median of {ROUNDS})")
    print(f"2 workers: {two:,.0f} requests/s (median of {ROUNDS})")
    print(f"ratio 2 workers / 1 worker: {two / one:.2f} (goal at least {GOAL})")
    record("distributed", "2 workers / 1 worker", two / one, f">= {GOAL}", two / one >= GOAL)


if __name__ == "__main__":
    main()
