"""`make bench`: every benchmark in turn (their own output as they go), then one table of the
headline figures with the goal beside each. BENCH_MINUTES shortens the soak (30 by default);
BENCH_ONLY=overhead,scorecard runs some of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("overhead", "open_model", "scorecard", "distributed", "soak", "demo_stack",
              "streaming")  # fmt: skip


def main() -> None:
    only = [b for b in os.environ.get("BENCH_ONLY", "").split(",") if b]
    chosen = [b for b in BENCHMARKS if not only or b in only]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        env = {**os.environ, "BENCH_RESULTS": str(results)}
        failed = []
        for name in chosen:
            print(f"\n=== benchmarks/{name}.py", flush=True)
            began = time.monotonic()
            done = subprocess.run([sys.executable, str(HERE / f"{name}.py")], env=env,
                                  check=False)  # fmt: skip
            print(f"=== {name}: {time.monotonic() - began:.0f} s, exit {done.returncode}")
            if done.returncode != 0:
                failed.append(name)
        lines = results.read_text().splitlines() if results.exists() else []
    rows = [json.loads(line) for line in lines]
    print("\n| benchmark | figure | measured | goal | met |")
    print("| --- | --- | ---: | --- | --- |")
    for row in rows:
        value = row["value"]
        shown = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        print(f"| {row['benchmark']} | {row['figure']} | {shown} | {row['goal']} | "
              f"{'yes' if row['met'] else 'NO'} |")  # fmt: skip
    for name in failed:
        print(f"| {name} | (failed to run) | | | NO |")


if __name__ == "__main__":
    main()
