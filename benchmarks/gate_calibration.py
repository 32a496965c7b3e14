"""The gate's false alarms and detections, measured: N A/A pairs and N pairs where one tool is
150 ms slower, against the demo stack with jittered latencies and random seeds.

Each of N baselines (a run saved as a baseline) is compared with one more run of the same
agent (A/A: any regression is a false alarm) and with one run where a Toxiproxy latency toxic
adds 150 ms to every crm_lookup call (any regression naming crm_lookup is a detection).
Prints the false-alarm count, the detection count, and the checks that fired.

    BENCH_PAIRS=20 BENCH_SECONDS=12 python benchmarks/gate_calibration.py   # ~25 minutes
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAIRS = int(os.environ.get("BENCH_PAIRS", "20"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "12"))
RPS = int(os.environ.get("BENCH_RPS", "20"))
SLOWER_MS = 150


def scenario(work: Path) -> Path:
    shutil.copytree(ROOT / "scenarios" / "datasets", work / "datasets")
    document = yaml.safe_load((ROOT / "scenarios" / "smoke.yaml").read_text())
    document["name"] = "calibration"
    document["target"]["demo"] = {"profile": "resilient", "time_scale": 0.5, "jitter": 0.3}
    document["load"].update(shape={"kind": "poisson", "rps": RPS}, duration=f"{SECONDS}s")
    document["gates"] = {"min_requests": 100}
    path = work / "calibration.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    window = {"name": "crm_slower", "target": "crm_lookup", "at": "0s", "for": f"{SECONDS}s",
              "toxic": {"type": "latency", "latency": SLOWER_MS}}  # fmt: skip
    profile = {"apiVersion": "agentscale/v1", "kind": "FaultProfile", "name": "crm-slower",
               "windows": [window]}  # fmt: skip
    (work / "slower.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def run(path: Path, out: Path, seed: int, *extra: str) -> tuple[int, Path]:
    done = subprocess.run(
        [sys.executable, "-m", "agentscale", "load", str(path), "--seed", str(seed),
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=SECONDS * 10 + 120,
    )  # fmt: skip
    found = [p for p in out.glob("*/*") if p.is_dir()]
    if done.returncode not in (0, 1) or not found:
        tail = done.stdout[-2000:] + done.stderr[-2000:]
        sys.exit(f"run failed (exit {done.returncode}):\n{tail}")
    return done.returncode, max(found)


def regressed(run_dir: Path) -> list[str]:
    verdict = json.loads((run_dir / "verdict.json").read_text())
    return [c["metric"] for c in verdict["checks"] if c["status"] == "regressed"]


def main() -> None:
    rng = random.Random(int(os.environ.get("BENCH_SEED", "1")))
    work = Path(tempfile.mkdtemp(prefix="agentscale-calibration-"))
    path = scenario(work)
    alarms, detections, fired = 0, 0, Counter[str]()
    checks_per_run: list[int] = []
    started = time.monotonic()
    for pair in range(PAIRS):
        seeds = [rng.randrange(2**31) for _ in range(3)]
        _, base_dir = run(path, work / f"base-{pair}", seeds[0])
        saved = subprocess.run(
            [sys.executable, "-m", "agentscale", "baseline", "save", str(base_dir),
             "--name", f"b{pair}", "--dir", str(work / "baselines")],
            capture_output=True, text=True,
        )  # fmt: skip
        if saved.returncode != 0:
            sys.exit(f"baseline save failed: {saved.stdout}{saved.stderr}")
        baseline = str(work / "baselines" / f"b{pair}.json")
        code, aa_dir = run(path, work / f"aa-{pair}", seeds[1], "--baseline", baseline)
        found = regressed(aa_dir)
        verdict = json.loads((aa_dir / "verdict.json").read_text())
        checks_per_run.append(sum(c["kind"] == "baseline" for c in verdict["checks"]))
        if code == 1 or found:
            alarms += 1
            fired.update(f"A/A: {name}" for name in found)
        code, slow_dir = run(
            path, work / f"slow-{pair}", seeds[2], "--baseline", baseline,
            "--faults", str(work / "slower.yaml"),
        )  # fmt: skip
        found = regressed(slow_dir)
        if code == 1 and any("crm_lookup" in name for name in found):
            detections += 1
        fired.update(f"+{SLOWER_MS} ms: {name}" for name in found)
        print(
            f"pair {pair + 1}/{PAIRS}: false alarms {alarms}, detections {detections} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    print()
    print(f"gate calibration: {PAIRS} A/A pairs, {PAIRS} pairs with crm_lookup +{SLOWER_MS} ms")
    print(f"  runs of {SECONDS} s at {RPS} requests/s (Poisson), demo jitter 30%")
    print(f"  baseline checks per comparison: {min(checks_per_run)}-{max(checks_per_run)}")
    print(f"  false alarms: {alarms} of {PAIRS}   (goal: at most 1)")
    print(f"  detections:   {detections} of {PAIRS}   (goal: at least {PAIRS - 1})")
    print("  checks that fired:")
    for name, count in fired.most_common():
        print(f"    {count:3d}  {name}")
    print(f"  took {time.monotonic() - started:.0f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
