"""Open-model accuracy: achieved / target arrival rate and scheduling lag at 200, 1000 and 5000
requests/s (BENCH_RATES) against a fast local target (nginx), generator pinned to core 0; the
goals are at 5000."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from bench_scenario import write_scenario
from fast_target import last_core, nginx, pin
from results import record

SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "200,1000,5000").split(",")]
GOAL_RATE, GOAL_ACHIEVED, GOAL_LAG_MS = 5000, 0.999, 10.0


def measure(url: str, rate: int, work: Path) -> dict[str, float]:
    load = {"shape": {"kind": "constant", "rps": rate}, "duration": f"{SECONDS}s",
            "max_concurrency": 200}  # fmt: skip
    scenario = write_scenario(work / f"open-{rate}.yaml", f"bench-open-{rate}", url, load)
    out = work / "runs"
    command = [sys.executable, "-m", "agentscale", "load", str(scenario), "--out", str(out)]
    subprocess.run(pin(0, command), check=False, capture_output=True)
    run_dir = max(out.glob(f"bench-open-{rate}/*"))
    info = json.loads((run_dir / "run.json").read_text())
    requests = pd.read_parquet(run_dir / "requests.parquet")
    sent = requests[~requests["dropped"]]
    span = (sent["sent_at"].max() - sent["sent_at"].min()).total_seconds()
    return {
        "achieved": (len(sent) - 1) / span,
        "dropped": int(requests["dropped"].sum()),
        "lag_p50": float(sent["lag_ms"].quantile(0.5)),
        "lag_p99": float(sent["lag_ms"].quantile(0.99)),
        "latency_p99": float(sent["latency_ms"].quantile(0.99)),
        "verdict": info["verdict"]["result"],
    }


def main() -> None:
    with nginx(core=last_core()) as url, tempfile.TemporaryDirectory() as tmp:
        print(f"open model, {SECONDS} s per rate, generator on core 0, nginx on core {last_core()}")
        for rate in RATES:
            m = measure(url, rate, Path(tmp))
            print(
                f"{rate:>5} rps target: achieved {m['achieved']:,.1f} rps "
                f"({m['achieved'] / rate:.3f} of target), dropped {m['dropped']}, "
                f"lag p50 {m['lag_p50']:.2f} ms, p99 {m['lag_p99']:.2f} ms, "
                f"latency p99 {m['latency_p99']:.2f} ms, verdict {m['verdict']}",
                flush=True,
            )
            if rate == GOAL_RATE:
                achieved = m["achieved"] / rate
                record("open_model", f"{rate} rps: achieved / target", achieved,
                       f">= {GOAL_ACHIEVED}", achieved >= GOAL_ACHIEVED)  # fmt: skip
                record("open_model", f"{rate} rps: lag p99 ms", m["lag_p99"],
                       f"<= {GOAL_LAG_MS:g}", m["lag_p99"] <= GOAL_LAG_MS)  # fmt: skip


if __name__ == "__main__":
    main()
