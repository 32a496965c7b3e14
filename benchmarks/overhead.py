"""agentscale's load engine against bare Locust FastHttpUser, same target, same core, one run.

Both generators are pinned to core 0 and nginx to the last core. Each side runs ROUNDS times,
alternating; each round's ratio is taken and the median of them is the figure (the medians
of the rates and their ratio are printed too).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_scenario import write_scenario
from fast_target import last_core, nginx, pin
from results import record

HERE = Path(__file__).resolve().parent
USERS = int(os.environ.get("BENCH_USERS", "20"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
GOAL = 0.9


def bare(url: str, work: Path) -> float:
    prefix = work / "bare"
    subprocess.run(
        pin(0, [sys.executable, "-m", "locust", "-f", str(HERE / "bare_locustfile.py"),
                "--headless", "-u", str(USERS), "-r", str(USERS * 100), "-t", f"{SECONDS}s",
                "--host", url, "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR"]),
        check=False, capture_output=True,
    )  # fmt: skip
    with open(f"{prefix}_stats.csv", newline="") as file:
        row = next(r for r in csv.DictReader(file) if r["Name"] == "Aggregated")
    # Requests over the test time (the users all spawn at once: -r is 100 a user).
    return int(row["Request Count"]) / SECONDS


def agentscale(url: str, work: Path) -> tuple[float, float]:
    load = {"model": "closed", "shape": {"kind": "constant", "users": USERS},
            "duration": f"{SECONDS}s"}  # fmt: skip
    scenario = write_scenario(work / "bench.yaml", "bench-overhead", url, load)
    out = work / "runs"
    done = subprocess.run(
        pin(0, [sys.executable, "-m", "agentscale", "load", str(scenario), "--out", str(out)]),
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    run_dir = max(out.glob("*/*"))
    info = json.loads((run_dir / "run.json").read_text())
    if done.returncode not in (0, 3):
        raise SystemExit(f"agentscale failed: {done.stderr[-2000:]}")
    summary = info["summary"]
    return summary["sent"] / SECONDS, summary["success_rate"] or 0.0


def main() -> None:
    bare_rates, own_rates = [], []
    with nginx(core=last_core()) as url, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            work = Path(tmp) / str(round_)
            work.mkdir()
            bare_rates.append(bare(url, work))
            rate, success = agentscale(url, work)
            own_rates.append(rate)
            print(f"round {round_ + 1}: bare Locust {bare_rates[-1]:,.0f} rps · "
                  f"agentscale {rate:,.0f} rps (success {success:.1%})", flush=True)  # fmt: skip
    bare_median, own_median = statistics.median(bare_rates), statistics.median(own_rates)
    print(f"\n{USERS} users, {SECONDS} s, generator pinned to core 0, nginx on core {last_core()}")
    print(f"bare Locust FastHttpUser: {bare_median:,.0f} requests/s (median of {ROUNDS})")
    print(f"agentscale load engine:   {own_median:,.0f} requests/s (median of {ROUNDS})")
    print(f"ratio of the medians:     {own_median / bare_median:.3f}")
    # Each round's two runs are back to back: their ratio is what a neighbour on a shared
    # machine disturbs least (rates here have moved 2x between rounds, ratios by 0.2).
    ratio = statistics.median(own / bare for own, bare in zip(own_rates, bare_rates, strict=True))
    print(f"ratio agentscale / bare:  {ratio:.3f}, median of the {ROUNDS} rounds' ratios "
          f"(goal at least {GOAL})")  # fmt: skip
    record("overhead", f"agentscale / bare Locust (median of {ROUNDS})", ratio,
           f">= {GOAL}", ratio >= GOAL)  # fmt: skip


if __name__ == "__main__":
    main()
