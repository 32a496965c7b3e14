"""The scorecard, expectations and gate on small frames whose answers are known."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from agentscale.analysis.resilience import recovery_time
from agentscale.analysis.scorecard import card, scorecard, slowest_share
from agentscale.config.metrics import METRICS
from agentscale.config.scenario import Gates
from agentscale.gate.checks import new_check
from agentscale.gate.cifiles import junit, summary
from agentscale.gate.compare import compare
from agentscale.gate.slo import slo_checks
from agentscale.gate.tolerance import tolerances
from agentscale.gate.verdict import decide
from agentscale.records.frames import STEP_COLUMNS, RunFrames, attach_steps

START = 1_700_000_000.0


def frames(rows: list[dict], steps: list[dict] | None = None, windows=()) -> RunFrames:
    defaults = {
        "workflow": "w",
        "tenant": "t",
        "phase": "steady",
        "service_ms": None,
        "error_class": None,
        "status": "ok",
        "expect_ok": None,
        "input_tokens": 10,
        "output_tokens": 5,
        "tool_calls": 0,
        "retries": 0,
        "circuit_opens": 0,
        "fallbacks": 0,
        "budget_exhausted": 0,
        "cost_usd": 0.0,
        "dropped": False,
        "agent_events": None,
        "success": True,
    }
    table = []
    for i, row in enumerate(rows):
        full = {**defaults, "request_id": f"r{i}", **row}
        full["intended_start"] = pd.Timestamp(START + full.pop("at", i * 0.1), unit="s", tz="UTC")
        full["sent_at"] = full["intended_start"]
        table.append(full)
    requests = pd.DataFrame(table)
    step_frame = pd.DataFrame(steps or [], columns=["request_id", *STEP_COLUMNS])
    return RunFrames(requests, attach_steps(requests, step_frame), START, 10.0, list(windows))


def test_p95_is_exact_from_the_records():
    run = frames([{"latency_ms": float(v)} for v in range(1, 101)])
    overall = card(run, np.ones(100, dtype=bool), 10.0)
    assert overall["latency_p95_ms"] == pytest.approx(np.percentile(range(1, 101), 95))
    assert overall["latency_ms"]["p50"] == pytest.approx(50.5)


def test_cost_per_success_divides_all_spend_by_successes():
    rows = [{"latency_ms": 1.0, "cost_usd": 0.01, "success": ok} for ok in (1, 1, 0, 0)]
    overall = card(frames(rows), np.ones(4, dtype=bool), 1.0)
    assert overall["cost_per_request_usd"] == pytest.approx(0.01)
    assert overall["cost_per_success_usd"] == pytest.approx(0.02)  # failures cost money too
    rows[0]["cost_usd"] = None  # one unpriced request makes the cost unknown, not smaller
    assert card(frames(rows), np.ones(4, dtype=bool), 1.0)["cost_per_success_usd"] is None
    # ... and the notes say which requests, and why (the gate's detail points there).
    rows[0].update(input_tokens=None, output_tokens=None, error_class="http_5xx", success=False)
    rows[1]["cost_usd"] = None  # tokens, but a model without a price
    notes = scorecard(frames(rows))["notes"]
    assert notes == [
        "cost unknown: 2 of 4 requests have no cost: 1 reported no usage (1 http_5xx); 1 used a"
        " model without a price. Their spend is not known, so neither is the run's, nor cost"
        " per success"
    ], notes


def test_retries_per_tool_call_from_requests_and_by_tool_from_steps():
    rows = [
        {"latency_ms": 5.0, "tool_calls": 2, "retries": 2},
        {"latency_ms": 5.0, "tool_calls": 1, "retries": 1},
    ]
    steps = [
        {
            "request_id": "r0",
            "kind": "tool",
            "name": "crm",
            "latency_ms": 3.0,
            "attempts": 3,
            "outcome": "ok",
            "error": "HTTP 503",
        },
        {
            "request_id": "r0",
            "kind": "tool",
            "name": "kb",
            "latency_ms": 1.0,
            "attempts": 1,
            "outcome": "ok",
        },
        {
            "request_id": "r1",
            "kind": "tool",
            "name": "crm",
            "latency_ms": 2.0,
            "attempts": 1,
            "outcome": "error",
            "error": "timeout",
        },
    ]
    overall = card(frames(rows, steps), np.ones(2, dtype=bool), 1.0)
    assert overall["retries_per_tool_call"] == pytest.approx(1.0)
    assert overall["tools"]["crm"]["retries"] == 2 and overall["tools"]["crm"]["calls"] == 2
    assert overall["tools"]["crm"]["retry_reasons"] == {"HTTP 503": 1}
    assert overall["tools"]["kb"]["retries_per_call"] == 0


def test_each_steps_share_of_the_slowest_five_percent():
    rows = [{"latency_ms": 10.0} for _ in range(19)] + [{"latency_ms": 1000.0}]
    steps = [
        {"request_id": "r19", "kind": "llm", "name": "answer", "latency_ms": 600.0},
        {"request_id": "r19", "kind": "tool", "name": "crm", "latency_ms": 300.0},
        {"request_id": "r0", "kind": "llm", "name": "answer", "latency_ms": 9.0},
    ]
    run = frames(rows, steps)
    latency = run.requests["latency_ms"].to_numpy(dtype=float)
    shares = slowest_share(run.steps, run.requests, np.ones(20, dtype=bool), latency)
    assert shares == {"answer": 0.6, "crm": 0.3}


def test_recovery_time_counts_from_the_window_end_until_traffic_is_back():
    offsets = np.arange(0, 30, 0.1)
    success = ~((offsets >= 5) & (offsets < 12))  # failing from 5 s until 12 s
    latency = np.where(success, 100.0, 900.0)
    found = recovery_time(
        offsets, latency, success, window_end=10, pre_success=1.0, pre_p95=100.0, horizon=30
    )
    assert found == pytest.approx(2.0)
    never = recovery_time(offsets, latency, np.zeros_like(success), 10, 1.0, 100.0, 30)
    assert never is None


def test_windows_split_before_during_after_and_groups_by_workflow():
    rows = [{"latency_ms": 1.0, "at": t, "workflow": "a" if t < 5 else "b"} for t in range(10)]
    card_ = scorecard(frames(rows, windows=[("w", 4.0, 6.0)]))
    spans = card_["by_window"]["w"]
    assert (
        spans["before"]["requests"],
        spans["during"]["requests"],
        spans["after"]["requests"],
    ) == (2, 2, 2)
    assert card_["by_workflow"]["a"]["requests"] == 5 and card_["overall"]["requests"] == 10
    assert len(card_["overall"]["bootstrap"]["latency_p95_ms"]) == 200


def test_every_group_card_is_the_card_of_its_requests_alone():
    # The cards are computed side by side on threads: each must land under its own group.
    rng = np.random.default_rng(3)
    rows = [
        {
            "latency_ms": float(rng.integers(1, 500)),
            "at": i * 0.01,
            "workflow": ["refund", "status", "triage"][i % 3],
            "tenant": ["acme", "globex"][i % 2],
            "phase": "spike" if 3 <= i * 0.01 < 5 else "steady",
            "success": bool(i % 7),
        }
        for i in range(1000)
    ]
    steps = [
        {"request_id": f"r{i}", "kind": "tool", "name": "crm", "latency_ms": float(i % 50)}
        for i in range(0, 1000, 2)
    ]
    run = frames(rows, steps, windows=[("w", 4.0, 6.0)])
    found = scorecard(run)
    requests = run.requests
    for column, key in (("workflow", "by_workflow"), ("tenant", "by_tenant")):
        for value, got in found[key].items():
            mask = (requests[column] == value).to_numpy()
            assert got == card(run, mask, run.duration), (column, value)
    offset = run.arrays["offset"]
    during = (offset >= 4.0) & (offset < 6.0)
    assert found["by_window"]["w"]["during"] == card(run, during, 2.0)
    assert found["by_phase"]["spike"]["requests"] == 200


def test_a_step_name_under_two_kinds_or_none_is_gated_over_all_its_sent_calls():
    rows = [{"latency_ms": 10.0, "dropped": i >= 40} for i in range(50)]
    kinds = ["tool", "retrieval", None]
    steps = [
        {"request_id": f"r{i}", "kind": kinds[i % 3], "name": "search", "latency_ms": float(i)}
        for i in range(50)
    ]
    gated = scorecard(frames(rows, steps))["overall"]["gated"]["step search p95_ms"]
    assert gated["n"] == 40  # the dropped requests' steps are not in it
    assert gated["value"] == pytest.approx(np.percentile(np.arange(40.0), 95))


def test_block_sums_and_counts_skip_what_was_not_reported():
    from agentscale.analysis.blocks import Blocks

    blocks = Blocks.of(np.array([0.0, 1.0, 60.0, 61.0]), 100.0, seed=0)
    where = blocks.of_request
    values = np.array([1.5, np.nan, 2.0, 4.0])
    sums, counts = blocks.sums(values, where), blocks.counts(values, where)
    assert sums[where[0]] == 1.5 and sums[where[2]] == 6.0 and sums.sum() == 7.5
    assert counts[where[0]] == 1 and counts[where[2]] == 2 and counts.sum() == 3


def cards(center: float, n: int = 500, spread: float = 1.0, name="latency_p95_ms"):
    rng = np.random.default_rng(int(center * 10))
    return {"requests": n, name: center, "bootstrap": {name: list(rng.normal(center, spread, 200))}}


def only(name: str):
    return {name: METRICS[name]}


def test_gate_regressed_pass_improved_and_inconclusive():
    p95 = only("latency_p95_ms")
    assert compare([cards(100)], [cards(120)], p95)[0]["status"] == "regressed"
    assert compare([cards(100)], [cards(105)], p95)[0]["status"] == "pass"  # within 10%
    assert compare([cards(100)], [cards(80)], p95)[0]["status"] == "improved"
    small = compare([cards(100)], [cards(130, n=20)], p95)[0]
    assert small["status"] == "inconclusive" and "too few requests" in small["detail"]


def test_a_change_beyond_tolerance_but_inside_the_ci_is_not_a_regression():
    check = compare([cards(100, spread=20)], [cards(115, spread=20)], only("latency_p95_ms"))[0]
    assert check["status"] == "pass" and check["ci"][0] < 0 < check["ci"][1]


def test_a_change_inside_the_noise_between_repeated_runs_is_not_a_regression():
    noisy_baseline = [cards(100), cards(140)]  # two runs, 40 apart
    check = compare(noisy_baseline, [cards(135)], only("latency_p95_ms"))[0]
    assert check["noise"] == pytest.approx(20) and check["status"] == "pass"


def test_lower_is_worse_for_success_rate_in_absolute_points():
    rate = only("success_rate")
    base = cards(0.99, spread=0.001, name="success_rate")
    worse = cards(0.95, spread=0.001, name="success_rate")
    assert compare([base], [worse], rate)[0]["status"] == "regressed"
    assert compare([worse], [base], rate)[0]["status"] == "improved"


def test_scenario_gates_set_tolerances_and_slos():
    gates = Gates.model_validate(
        {"latency_p95_ms": {"max_increase": "25%"}, "slo": {"latency_p95_ms": "< 110"}}
    )
    chosen = tolerances(gates)
    assert chosen["latency_p95_ms"].tolerance == 0.25 and "success_rate" in chosen
    assert (
        compare([cards(100)], [cards(120)], {"latency_p95_ms": chosen["latency_p95_ms"]})[0][
            "status"
        ]
        == "pass"
    )
    assert [c["status"] for c in slo_checks(gates, [cards(120)])] == ["failed"]
    assert [c["status"] for c in slo_checks(gates, [cards(100)])] == ["pass"]


def test_decide_orders_invalid_fail_inconclusive_pass():
    def check(status):
        return new_check("a check", "slo", "latency_p95_ms", status)

    assert decide([check("pass")], ["lag"]) == ("invalid", 3)
    assert decide([check("regressed"), check("inconclusive")], []) == ("fail", 1)
    assert decide([check("pass"), check("inconclusive")], []) == ("inconclusive", 3)
    assert decide([check("pass"), check("improved")], []) == ("pass", 0)


def test_junit_has_one_testcase_per_check_and_summary_is_a_valid_gfm_table():
    checks = compare([cards(100)], [cards(120)], only("latency_p95_ms"))
    checks += slo_checks(Gates.model_validate({"slo": {"latency_p95_ms": "< 500"}}), [cards(120)])
    verdict = {
        "result": "fail",
        "exit_code": 1,
        "run_id": "s/1",
        "baseline": "b",
        "checks": checks,
        "invalid_reasons": [],
        "warnings": ["a | b"],
    }
    root = ET.fromstring(junit(verdict))
    cases = root.findall(".//testcase")
    assert len(cases) == 3 and root.get("failures") == "1" and root.get("tests") == "3"
    assert cases[0].get("name") == "run is valid" and cases[0].find("error") is None
    assert cases[1].find("failure") is not None and cases[2].find("failure") is None
    lines = summary(verdict).splitlines()
    tables = [ln for ln in lines if ln.startswith("|")]
    header = tables[0].count("|")
    assert all(ln.replace("\\|", "").count("|") == header for ln in tables[:3])
    assert "a \\| b" in summary(verdict)


def test_every_gate_a_scenario_can_set_is_one_the_gate_checks():
    group_settings = {"steps", "workflows", "min_step_calls", "min_workflow_requests", "alpha"}
    settable = set(Gates.model_fields) - {"slo", "min_requests"} - group_settings
    assert settable == set(METRICS)
    gates = Gates.model_validate({"expected_answer_rate": {"max_decrease": 0.05}})
    assert tolerances(gates)["expected_answer_rate"].tolerance == 0.05


def test_a_target_that_never_answered_is_not_said_to_have_stopped():
    from agentscale.analysis.availability import target_losses

    refused = {"latency_ms": 1.0, "error_class": "connection_refused", "success": False}
    never = target_losses(frames([{**refused, "at": i * 0.5} for i in range(12)]))
    assert [loss.describe() for loss in never] == [
        "the target never answered: 12 requests got no answer (refused, reset or timed out)"
    ]
    answered = [{"latency_ms": 1.0, "at": 0.0}] + [
        {**refused, "at": 1 + i * 0.5} for i in range(12)
    ]
    assert (
        target_losses(frames(answered))[0]
        .describe()
        .startswith("the target stopped answering at 1.0s")
    )
