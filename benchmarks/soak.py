"""Memory over a long run: agentscale at 200 requests/s against a fast local target (nginx)
for BENCH_MINUTES (30 by default), printing the resident memory of the CLI process (the
master) and of the load engine every BENCH_EVERY seconds (60), then their growth.

    BENCH_MINUTES=5 BENCH_EVERY=30 .venv/bin/python benchmarks/soak.py

Growth beyond 50 MB over 30 minutes is a defect.
"""

from __future__ import annotations

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
EVERY = float(os.environ.get("BENCH_EVERY", "60"))
RATE = int(os.environ.get("BENCH_RPS", "200"))
GOAL_MB = 50.0


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
        cli = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        master = psutil.Process(cli.pid)
        began = time.monotonic()
        samples: list[tuple[float, float | None, float | None]] = []
        print(f"soak: {RATE} requests/s for {MINUTES:g} min; resident memory in MB")
        print(f"{'minute':>7} {'master':>8} {'engine':>8}")
        next_at = began + 5.0  # the first sample once the engine runs
        while cli.poll() is None:
            if time.monotonic() >= next_at:
                engine = engine_of(master)
                sample = ((time.monotonic() - began) / 60, rss_mb(master), rss_mb(engine))
                if sample[2] is not None:
                    samples.append(sample)
                    print(f"{sample[0]:7.1f} {sample[1] or 0:8.1f} {sample[2]:8.1f}", flush=True)
                next_at += EVERY
            time.sleep(0.5)
        if len(samples) < 2:
            sys.exit(f"the run ended (exit {cli.returncode}) before two samples")
        first, last = samples[0], samples[-1]
        master_growth = (last[1] or 0) - (first[1] or 0)
        engine_growth = (last[2] or 0) - (first[2] or 0)
        scale = 30 / max(last[0] - first[0], 1e-9)  # per 30 minutes, for the goal
        print(f"exit {cli.returncode}; growth from minute {first[0]:.1f} to {last[0]:.1f}: "
              f"master {master_growth:+.1f} MB, engine {engine_growth:+.1f} MB "
              f"(per 30 min: {master_growth * scale:+.1f} / {engine_growth * scale:+.1f}; "
              f"goal under {GOAL_MB:.0f})")  # fmt: skip
    for who, growth in (("master", master_growth * scale), ("engine", engine_growth * scale)):
        record("soak", f"{who} RSS growth per 30 min, MB ({MINUTES:g} min run)", growth,
               f"<= {GOAL_MB:.0f}", growth <= GOAL_MB)  # fmt: skip


if __name__ == "__main__":
    main()
