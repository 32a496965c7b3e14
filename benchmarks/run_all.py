"""`make bench`: every benchmark in turn (their own output as they go), then one table of the
headline figures with the goal beside each. BENCH_MINUTES shortens the soak (30 by default);
BENCH_ONLY=overhead,scorecard runs some of them. Exits 1 when a benchmark failed to run or a
goal was missed, 2 for a name in BENCH_ONLY that is no benchmark."""

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
              "streaming", "span_intake")  # fmt: skip
MET = {True: "yes", False: "NO", None: "-"}  # None: no goal, or not judged (the goal says)


def main() -> None:
    only = [b.strip() for b in os.environ.get("BENCH_ONLY", "").split(",") if b.strip()]
    unknown = [b for b in only if b not in BENCHMARKS]
    if unknown:
        print(f"BENCH_ONLY: no benchmark named {', '.join(unknown)} (the benchmarks: "
              f"{', '.join(BENCHMARKS)})", file=sys.stderr)  # fmt: skip
        sys.exit(2)
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
              f"{MET[row['met']]} |")  # fmt: skip
    for name in failed:
        print(f"| {name} | (failed to run) | | | NO |")
    missed = [row for row in rows if row["met"] is False]
    if failed or missed:
        print(f"\n{len(failed)} benchmark(s) failed to run, {len(missed)} goal(s) missed")
        sys.exit(1)


if __name__ == "__main__":
    main()
