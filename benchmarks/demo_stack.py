"""Throughput of the reference agent stack at --time-scale 0 (no artificial delay).

The stack (one process) is pinned to the last core, agentscale to core 0. First the closed
model with enough users to saturate the stack (its capacity), then the open model at the
rates of BENCH_RATES (does it sustain them: achieved rate, success, p99)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fast_target import pin
from results import record

HERE = Path(__file__).resolve().parent
DATASET = HERE.parent / "scenarios" / "datasets" / "support_golden.jsonl"
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "300").split(",")]

SCENARIO = """
apiVersion: agentscale/v1
kind: Scenario
name: bench-demo
seed: 3
target:
  url: {url}
  timeout: 10s
  body: {{tenant_id: "{{{{tenant}}}}", input: "{{{{prompt}}}}"}}
workload: {{dataset: {dataset}}}
tenants: {{acme: 0.7, globex: 0.3}}
load:
  model: {model}
  shape: {shape}
  duration: {seconds}s
  max_concurrency: 400
pricing:
  mock-small: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
  mock-large: {{input_per_mtok: 2.5, output_per_mtok: 10.0}}
"""


def run(work: Path, url: str, model: str, shape: str) -> dict[str, float]:
    scenario = work / f"{model}.yaml"
    scenario.write_text(
        SCENARIO.format(url=url, model=model, shape=shape, seconds=SECONDS, dataset=DATASET)
    )
    out = work / "runs"
    subprocess.run(
        pin(0, [sys.executable, "-m", "agentscale", "load", str(scenario), "--out", str(out)]),
        capture_output=True,
        check=False,
    )
    info = json.loads((max(out.glob("bench-demo/*")) / "run.json").read_text())
    summary = info["summary"]
    return {
        "rps": summary["sent"] / SECONDS,
        "success": summary["success_rate"] or 0.0,
        "p50": summary["latency_ms"]["p50"],
        "p99": summary["latency_ms"]["p99"],
        "dropped": summary["dropped"],
    }


def main() -> None:
    core = (os.cpu_count() or 1) - 1
    command = pin(core, [sys.executable, "-m", "agentscale.demo", "--time-scale", "0"])
    stack = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert stack.stdout is not None
    url = json.loads(stack.stdout.readline())["agent"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            closed = run(work, url, "closed", "{kind: constant, users: 64}")
            print(f"demo stack, time scale 0, on core {core}; agentscale on core 0, {SECONDS} s")
            print(
                f"closed model, 64 users: {closed['rps']:,.0f} agent requests/s, success "
                f"{closed['success']:.1%}, p50 {closed['p50']:.1f} ms, "
                f"p99 {closed['p99']:.1f} ms"
            )
            record("demo_stack", "closed, 64 users: agent requests/s", closed["rps"], "-", None)
            for rate in RATES:
                m = run(work, url, "open", f"{{kind: constant, rps: {rate}}}")
                print(
                    f"open model at {rate} rps: achieved {m['rps']:,.1f} rps, success "
                    f"{m['success']:.1%}, dropped {m['dropped']}, p50 {m['p50']:.1f} ms, "
                    f"p99 {m['p99']:.1f} ms"
                )
                record("demo_stack", f"open, {rate} rps: achieved / target", m["rps"] / rate,
                       "-", None)  # fmt: skip
    finally:
        stack.terminate()
        stack.wait(timeout=10)


if __name__ == "__main__":
    main()
