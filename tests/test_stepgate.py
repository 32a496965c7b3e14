"""The gate per step and per workflow, end to end: an agent of 40 steps whose one tool slows
down by 60% (the run's p95 moving under 5%) and whose rare workflow starts failing (the run's
success moving under a point) regresses, naming both; the same agent unchanged passes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pandas as pd

from conftest import Server, agentscale, only_run, scenario_dict, start_server, write_scenario

# 1 refund per 20 requests: its success can fall 15 points while the run's falls under one.
DATASET = [{"workflow": "status", "prompt": f"Where is order {k}?"} for k in range(19)] + [
    {"workflow": "refund", "prompt": "Please refund order 1182"}
]


def _configure(server: Server, **settings: object) -> None:
    request = urllib.request.Request(
        server.url("/steps/config"), data=json.dumps(settings).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def _verdict(out: Path) -> dict:
    return json.loads((only_run(out) / "verdict.json").read_text())


def test_a_slower_tool_and_a_failing_workflow_regress_by_name(tmp_path):
    server = start_server()
    try:
        (tmp_path / "golden.jsonl").write_text("".join(json.dumps(x) + "\n" for x in DATASET))
        document = scenario_dict(
            server.url("/steps"),
            load__shape={"kind": "constant", "rps": 300},
            load__duration="10s",
            # 12,000 steps/s parsed beside a parallel suite: on a busy CI machine the
            # generator's lag passed the default 100 ms, which is not what this test is about.
            load__max_lag_ms=1000,
            workload__workflows={"status": 19, "refund": 1},
            gates={"min_workflow_requests": 40, "steps": {"crm_lookup": {"max_increase": "20%"}}},
        )
        path = write_scenario(tmp_path, document)
        first = agentscale("load", str(path), "--out", str(tmp_path / "base"), timeout=180)
        assert first.code == 0, first.output
        saved = agentscale(
            "baseline", "save", str(only_run(tmp_path / "base")), "--name", "steps",
            "--dir", str(tmp_path / "baselines"),
        )  # fmt: skip
        assert saved.code == 0, saved.output
        baseline = str(tmp_path / "baselines" / "steps.json")

        same = agentscale(
            "load", str(path), "--seed", "2", "--baseline", baseline, "--out", str(tmp_path / "aa"),
            timeout=180,
        )  # fmt: skip
        assert same.code == 0, same.output
        checks = _verdict(tmp_path / "aa")["checks"]
        steps = {c["metric"] for c in checks if c.get("scope") == "step"}
        assert len({m.split()[1] for m in steps}) == 40  # every step was checked ...
        assert all(c["status"] != "regressed" for c in checks)  # ... and none moved

        _configure(server, tool_ms=16.0, fail="refund", fail_rate=0.15)
        changed = agentscale(
            "load", str(path), "--seed", "3", "--baseline", baseline, "--out", str(tmp_path / "b"),
            timeout=180,
        )  # fmt: skip
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
    assert changed.code == 1, changed.output
    verdict = _verdict(tmp_path / "b")
    regressed = [c for c in verdict["checks"] if c["status"] == "regressed"]
    names = [c["metric"] for c in regressed]
    assert "step crm_lookup p95_ms" in names and "workflow refund success_rate" in names, names
    assert all(c["scope"] in ("step", "workflow") for c in regressed), names  # run-level held
    tool = next(c for c in regressed if c["metric"] == "step crm_lookup p95_ms")
    assert 0.4 < tool["change_pct"] < 0.8 and tool["ci"][0] > 0 and tool["tolerance"]
    run = {c["metric"]: c for c in verdict["checks"] if c.get("scope") == "run"}
    # The run's p95 cannot show what the step's does: under 5% on an idle machine, but 6.4%
    # on a loaded CI machine and 14.9% on a VM with 15% steal, so it is held against the
    # step's own change (40-80%), which the gate above saw and the run-level gate did not.
    assert abs(run["latency_p95_ms"]["change_pct"]) < tool["change_pct"] / 2
    assert abs(run["success_rate"]["change"]) < 0.01
    flow = next(c for c in regressed if c["metric"] == "workflow refund success_rate")
    assert flow["baseline"] == 1.0 and 0.8 < flow["candidate"] < 0.9
    # Named in the terminal and in summary.md, before everything else.
    assert "step crm_lookup p95_ms" in changed.output
    summary = (only_run(tmp_path / "b") / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert {rows[2].split("|")[1].strip(), rows[3].split("|")[1].strip()} == set(names[:2])
    requests = pd.read_parquet(only_run(tmp_path / "b") / "requests.parquet")
    assert (requests["workflow"] == "refund").sum() >= 40
