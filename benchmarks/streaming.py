"""The streamed path's cost against the plain path, same fast target, same core, one run.

nginx (pinned to the last core) answers ``/agent`` with the plain trace-contract reply and
``/stream`` with the same trace as Server-Sent Events: 20 content events and a final one. The
engine (pinned to core 0, closed model, BENCH_USERS users) runs three ways, ROUNDS times each,
alternating: plain with ``target.stream: none`` (the old path), plain with ``auto`` (the
default: the Content-Type is looked at), and streamed (``sse``, every event framed and timed).
Prints requests/s and events/s (median of the rounds) and the ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench_scenario import write_scenario
from fast_target import EVENTS, last_core, nginx, pin
from results import record

USERS = int(os.environ.get("BENCH_USERS", "20"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WAYS = {"plain, stream: none": ("/agent", "none"), "plain, stream: auto": ("/agent", "auto"),
        "streamed, sse": ("/stream", "sse")}  # fmt: skip


def run(url: str, path: str, mode: str, work: Path) -> tuple[float, float, float | None]:
    load = {"model": "closed", "shape": {"kind": "constant", "users": USERS},
            "duration": f"{SECONDS}s"}  # fmt: skip
    scenario = write_scenario(work / "bench.yaml", "bench-streaming", url, load)
    document = yaml.safe_load(scenario.read_text())
    document["target"]["url"] = f"{url}{path}"
    document["target"]["stream"] = mode
    scenario.write_text(yaml.safe_dump(document, sort_keys=False))
    out = work / "runs"
    done = subprocess.run(
        pin(0, [sys.executable, "-m", "agentscale", "load", str(scenario), "--out", str(out)]),
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode not in (0, 3):
        raise SystemExit(f"agentscale failed: {done.stderr[-2000:]}")
    run_dir = max(out.glob("*/*"))
    summary = json.loads((run_dir / "run.json").read_text())["summary"]
    card = json.loads((run_dir / "scorecard.json").read_text())["overall"]
    rate = summary["sent"] / SECONDS
    events = rate * (EVENTS + 1) if path == "/stream" else 0.0
    return rate, events, card.get("ttft_p50_ms")


def main() -> None:
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    with nginx(core=last_core()) as url, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            for way, (path, mode) in WAYS.items():
                work = Path(tmp) / f"{round_}-{mode}"
                work.mkdir()
                rate, events, ttft = run(url, path, mode, work)
                rates[way].append(rate)
                extra = f", {events:,.0f} events/s, TTFT p50 {ttft:.2f} ms" if events else ""
                print(f"round {round_ + 1}: {way}: {rate:,.0f} requests/s{extra}", flush=True)
    medians = {way: statistics.median(values) for way, values in rates.items()}
    plain = medians["plain, stream: none"]
    print(f"\n{USERS} users, {SECONDS} s, engine pinned to core 0, nginx on core {last_core()}")
    for way, rate in medians.items():
        events = f" = {rate * (EVENTS + 1):,.0f} events/s" if WAYS[way][1] == "sse" else ""
        print(f"{way:22} {rate:8,.0f} requests/s{events}  (ratio to plain {rate / plain:.2f})")
        record("streaming", f"{way}: requests/s", rate, "-", None)
        if way != "plain, stream: none":
            record("streaming", f"{way}: ratio to plain", rate / plain, "-", None)


if __name__ == "__main__":
    main()
