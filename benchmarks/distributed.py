"""Requests/s with 2 Locust workers against 1, same fast target, one run each, alternating.

nginx answers on the last core; the master and the workers are not pinned, so on a 2-core
machine the workers share the cores with nginx: the ratio says what a second worker buys here,
not what it buys on a machine with a core to spare for it. Prints the figures and the ratio,
and where the machine's cores went in the middle of each run (the workers, the rest of
agentscale, nginx, idle, stolen by the hypervisor): the workers' cores with 2 against 1 are
the ceiling of the ratio when a request costs a worker the same.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench_scenario import write_scenario
from fast_target import last_core, nginx
from results import record

USERS = int(os.environ.get("BENCH_USERS", "40"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
GOAL = 1.8


def run(url: str, work: Path, workers: int) -> tuple[float, int, dict[str, float]]:
    load = {"model": "closed", "shape": {"kind": "constant", "users": USERS},
            "duration": f"{SECONDS}s"}  # fmt: skip
    scenario = write_scenario(work / f"bench-{workers}.yaml", "bench-distributed", url, load)
    out = work / f"runs-{workers}"
    said = (work / f"load-{workers}.out").open("wb")
    cli = subprocess.Popen(
        [sys.executable, "-m", "agentscale", "load", str(scenario), "--out", str(out),
         "--workers", str(workers)],
        stdout=said, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cores = steady_cores(cli, out)
    cli.wait()
    said.close()
    if cli.returncode not in (0, 3):
        raise SystemExit(f"agentscale failed: {(work / f'load-{workers}.out').read_text()[-3000:]}")
    run_dir = max(out.glob("*/*"))
    info = json.loads((run_dir / "run.json").read_text())
    summary = info["summary"]
    return summary["sent"] / SECONDS, summary["sent"], cores


def steady_cores(cli: subprocess.Popen[bytes], out: Path) -> dict[str, float]:
    """Cores used by each part of the machine from 2 s after the load began to 2 s before it
    ends (no start-up, no drain)."""
    while cli.poll() is None and not any(
        "run_started" in p.read_text() for p in out.glob("*/*/events.jsonl")
    ):
        time.sleep(0.1)
    time.sleep(2.0)
    before, machine, began = _cpu(cli.pid), psutil.cpu_times(), time.monotonic()
    time.sleep(max(SECONDS - 4.0, 1.0))
    after, machine_after, took = _cpu(cli.pid), psutil.cpu_times(), time.monotonic() - began
    used = {part: (after.get(part, 0.0) - before.get(part, 0.0)) / took for part in after}
    total = sum(machine_after) - sum(machine)
    for part in ("idle", "steal"):
        share = (getattr(machine_after, part) - getattr(machine, part)) / total
        used[part] = share * (os.cpu_count() or 1)
    return used


def _cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the workers, the rest of agentscale and nginx."""
    found = {"workers": 0.0, "agentscale master": 0.0, "nginx": 0.0}
    try:
        cli = psutil.Process(pid)
        tree = [cli, *cli.children(recursive=True)]
    except psutil.Error:
        tree = []
    nginx_processes = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "nginx"]
    for process in [*tree, *nginx_processes]:
        try:
            times = process.cpu_times()
            line = " ".join(process.cmdline())
        except psutil.Error:
            continue
        part = ("nginx" if process in nginx_processes
                else "workers" if " worker " in f"{line} " else "agentscale master")  # fmt: skip
        found[part] += times.user + times.system
    return found


def main() -> None:
    rates: dict[int, list[float]] = {1: [], 2: []}
    cores: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with nginx(core=last_core()) as url, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            for workers in (1, 2):
                work = Path(tmp) / f"{round_}-{workers}"
                work.mkdir()
                rate, sent, used = run(url, work, workers)
                rates[workers].append(rate)
                cores[workers].append(used)
                where = ", ".join(f"{part} {share:.2f}" for part, share in used.items())
                print(f"round {round_ + 1}, {workers} worker(s): {rate:,.0f} requests/s "
                      f"({sent:,} requests); cores: {where}", flush=True)  # fmt: skip
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    worker_cores = {n: statistics.median(c["workers"] for c in cores[n]) for n in (1, 2)}
    cost = {n: worker_cores[n] / statistics.median(rates[n]) * 1e6 for n in (1, 2)}
    print(f"\n{USERS} users (closed model), {SECONDS} s, {os.cpu_count()} cores, nginx on core "
          f"{last_core()}")  # fmt: skip
    print(f"1 worker:  {one:,.0f} requests/s (median of {ROUNDS}), workers on "
          f"{worker_cores[1]:.2f} cores, {cost[1]:.0f} µs of worker CPU a request")  # fmt: skip
    print(f"2 workers: {two:,.0f} requests/s (median of {ROUNDS}), workers on "
          f"{worker_cores[2]:.2f} cores, {cost[2]:.0f} µs of worker CPU a request")  # fmt: skip
    ceiling = worker_cores[2] / worker_cores[1]
    print(f"ratio 2 workers / 1 worker: {two / one:.2f} (goal at least {GOAL}); the workers "
          f"had {ceiling:.2f}x the cores: the rest went to nginx, agentscale's master and "
          "the hypervisor (the table above)")  # fmt: skip
    record("distributed", "2 workers / 1 worker", two / one, f">= {GOAL}", two / one >= GOAL)
    record("distributed", "worker cores, 2 workers / 1 (the ceiling here)", ceiling, "-", None)


if __name__ == "__main__":
    main()
