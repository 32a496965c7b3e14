"""Scorecard of a synthetic run: BENCH_REQUESTS requests (1,000,000) with five steps each,
one fault window. Times `agentscale scorecard RUN` in a fresh process (reading the parquet
folders included) and reports its peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from results import record

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "1000000"))
STEPS_PER_REQUEST = 5
DURATION = 600.0
START = 1_790_000_000.0


def synthetic_run(folder: Path) -> None:
    rng = np.random.default_rng(1)
    n = REQUESTS
    ids = np.char.add("r", np.arange(n).astype(str))
    intended = START + np.sort(rng.uniform(0, DURATION, n))
    latency = rng.lognormal(6.5, 0.5, n)
    success = rng.random(n) > 0.03
    ts = pa.timestamp("us", tz="UTC")
    requests = pa.table(
        {
            "request_id": ids,
            "workflow": rng.choice(["refund", "status", "triage"], n),
            "tenant": rng.choice(["acme", "globex"], n),
            "item": rng.integers(0, 9, n),
            "intended_start": pa.array((intended * 1e6).astype("int64")).cast(ts),
            "sent_at": pa.array((intended * 1e6 + 500).astype("int64")).cast(ts),
            "latency_ms": latency,
            "service_ms": latency - 0.5,
            "lag_ms": np.full(n, 0.5),
            "status_code": np.full(n, 200, dtype="int32"),
            "error_class": pa.array(np.where(success, None, "http_5xx").tolist(), pa.string()),
            "success": success,
            "status": rng.choice(["ok", "degraded"], n, p=[0.9, 0.1]),
            "expect_ok": success,
            "input_tokens": rng.integers(100, 2000, n),
            "output_tokens": rng.integers(10, 200, n),
            "cached_input_tokens": np.zeros(n, "int64"),
            "steps": np.full(n, STEPS_PER_REQUEST, "int32"),
            "tool_calls": np.full(n, 2, "int32"),
            "retries": rng.integers(0, 2, n).astype("int32"),
            "circuit_opens": np.zeros(n, "int32"),
            "fallbacks": np.zeros(n, "int32"),
            "budget_exhausted": np.zeros(n, "int32"),
            "agent_events": pa.nulls(n, pa.string()),
            "cost_usd": rng.uniform(0.0001, 0.002, n),
            "phase": rng.choice(["base", "spike", "recovery"], n),
            "faults": pa.array([[]] * n, pa.list_(pa.string())),
            "dropped": np.zeros(n, bool),
            "response_bytes": np.full(n, 600, "int64"),
        }
    )
    k = STEPS_PER_REQUEST
    names = np.tile(["classify", "plan", "kb_search", "crm_lookup", "answer"], n)
    kinds = np.tile(["llm", "llm", "retrieval", "tool", "llm"], n)
    steps = pa.table(
        {
            "request_id": np.repeat(ids, k),
            "index": np.tile(np.arange(k, dtype="int32"), n),
            "kind": kinds,
            "kind_detail": kinds,
            "name": names,
            "latency_ms": rng.lognormal(5, 0.7, n * k),
            "attempts": np.tile([1, 1, 1, 2, 1], n),
            "outcome": np.full(n * k, "ok"),
            "error": pa.nulls(n * k, pa.string()),
            "cache": np.tile(["", "", "hit", "miss", ""], n),
            "model": pa.nulls(n * k, pa.string()),
            "input_tokens": rng.integers(10, 500, n * k),
            "output_tokens": rng.integers(1, 50, n * k),
            "cached_input_tokens": pa.nulls(n * k, pa.int64()),
            "top_k": np.tile([0, 0, 3, 0, 0], n),
            "chunk_tokens": np.tile([0, 0, 900, 0, 0], n),
            "action": pa.nulls(n * k, pa.string()),
            "rule": pa.nulls(n * k, pa.string()),
        }
    )
    (folder / "requests.parquet").mkdir()
    (folder / "steps.parquet").mkdir()
    pq.write_table(requests, folder / "requests.parquet" / "part-000000.parquet")
    pq.write_table(steps, folder / "steps.parquet" / "part-000000.parquet")
    info = {
        "run_id": "bench/synthetic",
        "planned": {"duration_s": DURATION},
        "actual": {"started_at": "2026-09-21T12:26:40+00:00", "load_seconds": DURATION},
        "faults": {"windows": [["w", 200.0, 260.0]]},
    }
    (folder / "run.json").write_text(json.dumps(info))
    # A scenario too, so that the tenant figures (fairness, guardrails by load) are computed.
    (folder / "scenario.yaml").write_text(SCENARIO)
    (folder / "golden.jsonl").write_text('{"prompt": "p", "workflow": "refund"}\n')


SCENARIO = """
apiVersion: agentscale/v1
kind: Scenario
name: bench-synthetic
target: {url: "http://127.0.0.1:9/agent", body: {input: "{{prompt}}", ref: "{{canary}}"}}
workload: {dataset: golden.jsonl}
tenants:
  acme: 1
  globex:
    shape: {kind: spike, base_rps: 500, peak_rps: 3000, every: 120s, spike_for: 30s}
load: {shape: {kind: constant, rps: 1000}, duration: 600s}
expect:
  noisy_neighbor: {victim: acme, neighbor: globex}
  guardrails: {max_drop: 10%}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        # Written by a process of its own: a scorecard started from this one would inherit
        # its memory's high-water mark across fork and exec (Linux keeps it), and report the
        # synthetic run's 1.9 GiB as its own peak.
        subprocess.run([sys.executable, __file__, "--write", str(folder)], check=True)
        print(
            f"synthetic run: {REQUESTS:,} requests, {REQUESTS * STEPS_PER_REQUEST:,} steps "
            f"(written in {time.perf_counter() - began:.1f} s)"
        )
        began = time.perf_counter()
        log = folder / "scorecard.err"
        with log.open("wb") as errors:
            child = subprocess.Popen(
                [sys.executable, "-m", "agentscale", "scorecard", str(folder)],
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, no other's
        elapsed = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(log.read_text(errors="replace")[-2000:])
        peak_kib = usage.ru_maxrss
        peak_gb = peak_kib * 1024 / 1e9
        print(
            f"agentscale scorecard: {elapsed:.1f} s, peak memory {peak_gb:.2f} GB "
            f"({peak_kib / 1024**2:.2f} GiB; reading the records included)"
        )
        record("scorecard", f"{REQUESTS:,} requests: seconds", elapsed, "<= 5", elapsed <= 5)
        record("scorecard", f"{REQUESTS:,} requests: peak GB", peak_gb, "<= 1.5", peak_gb <= 1.5)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        synthetic_run(Path(sys.argv[2]))
    else:
        main()
