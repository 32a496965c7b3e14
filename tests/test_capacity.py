"""agentscale capacity: the search against targets whose limit is known, the answer it gives,
and how it ends when it cannot find one."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from agentscale.analysis import capacity as search
from conftest import ROOT, agentscale, only_run, scenario_dict, spawn, write_scenario

SLO = "latency_p95_ms < 500, success_rate >= 0.99"


def slots_scenario(tmp_path: Path, server, slots: int) -> Path:
    """A target of ``slots`` slots busy 100 ms each: it sustains slots * 10 requests/s."""
    document = scenario_dict(server.url(f"/slots?n={slots}&ms=100"))
    return write_scenario(tmp_path, document)


def capacity(path: Path, out: Path, *extra: str, timeout: float = 240):
    return agentscale(
        "capacity", str(path), "--slo", SLO, "--stage", "3s", "--min-requests", "30",
        "--out", str(out), *extra, timeout=timeout,
    )  # fmt: skip


def test_finds_the_known_limit_of_eight_slots_and_a_drop_against_it(tmp_path, server):
    """8 slots of 100 ms hold 80 requests/s: the search brackets it within 10% in under three
    minutes; a search against 3 slots on two workers, gated on the first, regresses (exit 1)."""
    began = time.monotonic()
    result = capacity(slots_scenario(tmp_path, server, 8), tmp_path / "eight",
                      "--start", "20rps", "--max", "400rps", "--peak", "200rps")  # fmt: skip
    took = time.monotonic() - began
    assert result.code == 0, result.output
    assert took < 180, took
    folder = only_run(tmp_path / "eight")
    found = json.loads((folder / "capacity.json").read_text())
    assert found["result"] == "found" and found["converged"]
    assert 72 <= found["sustainable_rps"] <= 88, found["sustainable_rps"]
    assert found["first_failed_rps"] / found["sustainable_rps"] <= 1.05 + 1e-9
    rates = [s["offered_rps"] for s in found["stages"]]
    assert rates[:4] == [20, 40, 80, 160]  # doubling, then bisection
    failed = [s for s in found["stages"] if s["result"] == "fail"]
    assert failed and all(s["offered_rps"] > found["sustainable_rps"] for s in failed)
    assert any("a queue building up" in r for s in failed for r in s["reasons"])
    # The slot's own work stays 100 ms: the wait for a slot is what grew, and no step says so.
    assert found["bottleneck"]["step"] == search.OUTSIDE
    assert found["bottleneck"]["shared"] is None  # more replicas do help here
    assert found["replicas"]["needed"] == int(np.ceil(200 * 1.3 / found["sustainable_rps"]))
    assert found["replicas"]["warning"] is None
    assert found["littles_law"] == []  # held stages: in flight == rate x latency
    requests = pd.read_parquet(folder / "requests.parquet")
    assert sorted(requests["stage"].unique()) == list(range(1, len(rates) + 1))
    assert requests["request_id"].is_unique and requests["trace_id"].dropna().is_unique
    per_stage = requests.groupby("stage").size()
    assert all(per_stage[s["stage"]] == s["planned"] for s in found["stages"])
    assert "Highest sustainable rate: 80 requests/s" in result.stdout
    report = (folder / "report.html").read_text()
    assert "achieved vs offered rate" in report and "<svg" in report
    assert "Highest sustainable rate" in (folder / "summary.md").read_text()
    run = json.loads((folder / "run.json").read_text())
    assert run["verdict"]["result"] == "pass" and run["exit_code"] == 0

    smaller = capacity(
        slots_scenario(tmp_path, server, 3), tmp_path / "three", "--start", "20rps",
        "--max", "80rps", "--precision", "50%", "--workers", "2", "--baseline", str(folder),
    )  # fmt: skip
    assert smaller.code == 1, smaller.output
    found = json.loads((only_run(tmp_path / "three") / "capacity.json").read_text())
    assert found["sustainable_rps"] in (20, 30) and len(found["stages"]) == 3
    assert found["baseline"]["status"] == "regressed" and found["baseline"]["change"] < -0.5
    assert "regressed" in smaller.stdout


def test_names_the_shared_model_endpoint_of_the_demo(tmp_path):
    """The demo's model serves two completions at once: an LLM step gives way first, and more
    replicas would not help."""
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    path = tmp_path / "scenarios" / "capacity.yaml"
    document = yaml.safe_load(path.read_text())
    document["target"]["demo"].update({"time_scale": 0.2, "llm_capacity": 2})
    path.write_text(yaml.safe_dump(document))
    result = agentscale(
        "capacity", str(path), "--slo", "latency_p95_ms < 2000, success_rate >= 0.99",
        "--start", "4rps", "--max", "48rps", "--stage", "3s", "--min-requests", "20",
        "--precision", "20%", "--peak", "30rps", "--out", str(tmp_path / "out"), timeout=240,
    )  # fmt: skip
    assert result.code == 0, result.output
    found = json.loads((only_run(tmp_path / "out") / "capacity.json").read_text())
    assert found["bottleneck"]["kind"] == "llm", found["bottleneck"]
    assert found["bottleneck"]["shared"].startswith("the shared model endpoint")
    warning = found["replicas"]["warning"]
    assert warning and "more replicas do not help" in warning
    assert "the shared model endpoint" in warning
    assert "Warning: more replicas do not help" in result.stdout


def test_an_slo_the_lowest_rate_breaks_ends_at_once(tmp_path, server):
    result = agentscale(
        "capacity", str(slots_scenario(tmp_path, server, 8)), "--slo", "latency_p95_ms < 1",
        "--start", "5rps", "--stage", "2s", "--min-requests", "10", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert result.code == 1, result.output
    assert "Even the lowest rate, 5 requests/s, fails (latency_p95_ms" in result.stdout
    found = json.loads((only_run(tmp_path / "o") / "capacity.json").read_text())
    assert found["result"] == "lowest_failed" and len(found["stages"]) == 1
    assert found["sustainable_rps"] is None


def test_ctrl_c_keeps_the_finished_stages_and_exits_130(tmp_path, server):
    out = tmp_path / "out"
    process = spawn(
        "capacity", str(slots_scenario(tmp_path, server, 8)), "--slo", SLO, "--start", "10rps",
        "--stage", "3s", "--min-requests", "10", "--out", str(out),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = list(out.glob("*/*/events.jsonl"))
        if events and events[0].read_text().count('"run_started"') >= 2:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # the second stage is under way
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    folder = only_run(out)
    found = json.loads((folder / "capacity.json").read_text())
    assert found["result"] == "interrupted"
    assert found["stages"][0]["result"] == "pass"
    assert found["stages"][-1]["result"] == "interrupted"
    requests = pd.read_parquet(folder / "requests.parquet")
    assert (requests["stage"] == 1).sum() == found["stages"][0]["planned"]
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--slo", "latency_p95 < 8000"], "--slo: 'latency_p95' is not a run-level figure"),
        (["--slo", "latency_p95_ms < fast"], "--slo: 'latency_p95_ms < fast': write a figure"),
        (["--slo", SLO, "--start", "fast"], "--start: 'fast' is not a rate above zero"),
        (["--slo", SLO, "--start", "50rps", "--max", "5rps"], "--max: --max 5rps is below"),
        (["--slo", SLO, "--precision", "0%"], "--precision: '0%' is out of range"),
        (["--slo", SLO, "--baseline", "nowhere.json"], "capacity baseline not found"),
    ],
)
def test_bad_options_are_one_message_and_exit_2(tmp_path, server, options, message):
    result = agentscale("capacity", str(slots_scenario(tmp_path, server, 8)), *options,
                        "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_tenant_with_a_shape_of_its_own_is_refused_at_its_place(tmp_path, server):
    document = scenario_dict(
        server.url("/agent"),
        tenants={"acme": {"shape": {"kind": "constant", "rps": 1}}, "globex": {"weight": 1}},
    )
    result = agentscale("capacity", str(write_scenario(tmp_path, document)), "--slo", SLO)
    assert result.code == 2
    assert "s.yaml:" in result.stderr and "tenant acme has a load shape" in result.stderr


def test_the_search_doubles_then_bisects_to_the_precision():
    rates = search.Search(start=10, maximum=400, precision=0.05)
    limit, tried = 83.0, []
    while (rate := rates.next()) is not None:
        tried.append(rate)
        rates.record(rate, rate <= limit)
    assert tried[:5] == [10, 20, 40, 80, 160]
    assert rates.result == "found" and rates.good is not None and rates.bad is not None
    assert rates.good <= limit < rates.bad and rates.bad / rates.good <= 1.05 + 1e-9
    held = search.Search(start=10, maximum=30, precision=0.05)
    while (rate := held.next()) is not None:
        held.record(rate, True)
    assert held.tried == [(10, True), (20, True), (30, True)] and held.result == "max_reached"
    broke = search.Search(start=10, maximum=30, precision=0.05)
    broke.record(broke.next() or 0, False)
    assert broke.next() is None and broke.result == "lowest_failed"
    # A slow agent (a hundredth of a request a second) and a precision finer than the rates
    # can be written: the search still ends, and never tries a rate twice.
    for start, precision in ((0.01, 0.05), (5.25, 0.00001)):
        slow = search.Search(start=start, maximum=100, precision=precision)
        seen = []
        while (rate := slow.next()) is not None:
            assert rate not in seen and len(seen) < 80
            seen.append(rate)
            slow.record(rate, rate <= start * 1.37)
        assert slow.result == "found" and slow.converged


def test_a_stage_where_nothing_succeeded_never_holds():
    card = {"requests": 40, "successes": 0, "dropped": 0, "latency_p95_ms": 12.0,
            "coverage": {}}  # fmt: skip
    slo = search.Slo("latency_p95_ms", search.parse_comparison("< 1000"))
    outcome = search.judge_stage(card, 40, [slo], None, [])  # type: ignore[arg-type]
    assert not outcome.passed and outcome.failures == ["no request succeeded"]


def test_a_trend_rises_only_when_latency_keeps_climbing():
    offsets = np.arange(90, dtype=float)
    flat = search.trend(offsets, np.full(90, 100.0) + np.sin(offsets))
    climbing = search.trend(offsets, 100.0 + 5 * offsets)
    assert flat is not None and not flat.rising
    assert climbing is not None and climbing.rising
    assert search.trend(offsets[:10], offsets[:10]) is None  # too few to say


def test_the_knee_and_the_step_that_grew_most():
    def level(rate: float, p95: float, tool: float, llm: float) -> search.Level:
        return search.Level(rate, p95, {"crm": ("tool", tool, 0.2), "plan": ("llm", llm, 0.5)})

    levels = [level(10, 500, 50, 400), level(20, 520, 52, 420), level(40, 1400, 60, 1200)]
    knee = search.knee(levels)
    assert knee is not None and knee.rate == 40
    step = search.bottleneck(levels[0], knee)
    assert step is not None and step.step == "plan" and step.kind == "llm"
    assert search.shared_by_replicas(step, set()) == "the shared model endpoint (plan)"
    assert search.knee(levels[:2]) is None
    assert search.replicas_needed(120, 0.3, 40) == 4


def test_littles_law_counts_in_flight_once_the_stage_has_filled():
    """2 s requests at 10/s in a 10 s stage: 20 in flight once full, fewer in its first 2 s.
    Averaged over every sample the engine reads 7.5% low; from the fill on, exact."""
    from agentscale.commands.capacity_stage import Stage

    stage = Stage(index=1, rate=10.0, seconds=10.0, mean_service_ms=2000.0)
    stage.card = {"throughput_rps": 10.0, "service_ms": {"p50": 2000.0, "p95": 2000.0,
                                                         "p99": 2000.0}}  # fmt: skip
    stage.in_flight = [(t / 2, 10 * min(t / 2, 2.0)) for t in range(1, 21)]
    assert np.mean([n for _, n in stage.in_flight]) == 18.5  # what the plain mean says
    assert stage.steady_in_flight() == 20.0 and stage.littles_law is None
    stage.in_flight = [(t / 2, 12.0) for t in range(1, 21)]  # records that missed requests
    assert "Little's law" in (stage.littles_law or "")
    stage.in_flight = [(0.5, 5.0)]  # nothing read after the fill: not judged
    assert stage.steady_in_flight() is None and stage.littles_law is None
