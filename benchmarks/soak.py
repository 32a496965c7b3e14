"""Memory over a long run: agentscale at 200 requests/s against a fast local target (nginx)
for BENCH_MINUTES (30 by default), printing the resident memory of the CLI process (the
master) and of the load engine every BENCH_EVERY seconds (60; a tenth of a shorter run),
then their growth after the first minute (warm-up). The goal is judged over 30 minutes only;
a shorter run prints its figures unjudged. A load that did not hold its rate is no soak: it
fails.

    BENCH_MINUTES=5 .venv/bin/python benchmarks/soak.py

Growth beyond 50 MB over 30 minutes is a defect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench_scenario import write_scenario
from fast_target import nginx
from results import record

MINUTES = float(os.environ.get("BENCH_MINUTES", "30"))
# A sample a minute; a short run gets ten at least, so that its growth rests on more than two.
EVERY = float(os.environ.get("BENCH_EVERY", str(min(60.0, MINUTES * 6))))
WARM = min(60.0, MINUTES * 12)  # seconds: the first minute (a fifth of a short run) is warm-up
RATE = int(os.environ.get("BENCH_RPS", "200"))
GOAL_MB = 50.0
GOAL_MINUTES = 30


def rss_mb(process: psutil.Process | None) -> float | None:
    try:
        return process.memory_info().rss / 2**20 if process is not None else None
    except psutil.Error:
        return None


def engine_of(cli: psutil.Process) -> psutil.Process | None:
    try:
        for child in cli.children(recursive=True):
            if "agentscale.engine" in " ".join(child.cmdline()):
                return child
    except psutil.Error:
        return None
    return None


def main() -> None:
    with nginx() as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        load = {"shape": {"kind": "constant", "rps": RATE}, "duration": f"{MINUTES * 60:.0f}s"}
        scenario = write_scenario(work / "soak.yaml", "bench-soak", url, load)
        command = [sys.executable, "-m", "agentscale", "load", str(scenario),
                   "--out", str(work / "runs")]  # fmt: skip
        said = (work / "load.out").open("wb")  # (read back should the load fail)
        cli = subprocess.Popen(command, stdout=said, stderr=subprocess.STDOUT)
        master = psutil.Process(cli.pid)
        began = time.monotonic()
        samples: list[tuple[float, float, float]] = []
        print(f"soak: {RATE} requests/s for {MINUTES:g} min; resident memory in MB, a sample "
              f"every {EVERY:g} s (the first {WARM:g} s are warm-up)")  # fmt: skip
        print(f"{'minute':>7} {'master':>8} {'engine':>8}")
        next_at = began + 5.0  # the first sample once the engine runs
        while cli.poll() is None:
            if time.monotonic() >= next_at:
                engine = engine_of(master)
                at, held, engine_mb = time.monotonic() - began, rss_mb(master), rss_mb(engine)
                if held is not None and engine_mb is not None:
                    samples.append((at, held, engine_mb))
                    warm = " (warm-up)" if at < WARM else ""
                    print(f"{at / 60:7.1f} {held:8.1f} {engine_mb:8.1f}{warm}", flush=True)
                next_at += EVERY
            time.sleep(0.5)
        said.close()
        runs = sorted((work / "runs").glob("*/*/run.json"))
        summary = json.loads(runs[-1].read_text())["summary"] if runs else None
        # A soak that did not hold its load measured nothing about a long run.
        if cli.returncode != 0 or summary is None:
            tail = (work / "load.out").read_text(errors="replace").splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            sys.exit(f"the soak's load exited {cli.returncode}: not a measurement")
    achieved = summary["sent"] / (MINUTES * 60)
    if achieved < 0.99 * RATE:
        sys.exit(f"the soak's load sent {achieved:.1f} requests/s of {RATE}: not a measurement")
    steady = [sample for sample in samples if sample[0] >= WARM]
    if len(steady) < 2:
        sys.exit("fewer than two samples after the warm-up: run longer (BENCH_MINUTES)")
    first, last = steady[0], steady[-1]
    growth = {"master": last[1] - first[1], "engine": last[2] - first[2]}
    print(f"achieved {achieved:.1f} requests/s; growth from minute {first[0] / 60:.1f} to "
          f"{last[0] / 60:.1f}: master {growth['master']:+.1f} MB, engine "
          f"{growth['engine']:+.1f} MB (goal: under {GOAL_MB:.0f} MB over {GOAL_MINUTES} "
          "min)")  # fmt: skip
    # Judged only over the goal's 30 minutes: a few minutes scaled up would judge warm-up noise.
    judged = MINUTES >= GOAL_MINUTES
    goal = f"<= {GOAL_MB:.0f}" if judged else f"<= {GOAL_MB:.0f} over 30 min (not judged)"
    for who, mb in growth.items():
        record("soak", f"{who} RSS growth, MB, minute {first[0] / 60:.1f}-{last[0] / 60:.1f}",
               mb, goal, mb <= GOAL_MB if judged else None)  # fmt: skip


if __name__ == "__main__":
    main()
