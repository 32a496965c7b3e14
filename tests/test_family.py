"""The statistics of the gate with known answers: Holm's step-down method, the one-sided
p-value, and the block bootstrap (whose interval must widen when failures come in a clump)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agentscale.analysis.blocks import Blocks, block_seconds
from agentscale.gate.compare import compare
from agentscale.gate.family import holm, p_beyond


def test_holm_steps_down_and_stops_at_the_first_it_cannot_reject():
    # sorted: 0.005 <= .05/4, 0.01 <= .05/3, then 0.03 > .05/2: stop (0.04 is not reached)
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]
    assert holm([0.001, 0.002, 0.003], 0.05) == [True, True, True]
    assert holm([0.2, 0.3], 0.05) == [False, False]
    assert holm([0.04], 0.05) == [True]  # one check: the plain test
    assert holm([], 0.05) == []


def test_holm_keeps_the_family_wise_false_alarm_rate_at_its_level():
    rng = np.random.default_rng(7)
    families, checks = 4000, 40
    # every check exactly at its tolerance (the worst case of the null hypothesis)
    z = rng.standard_normal((families, checks))
    alarms = sum(any(holm([p_beyond(x, 0.0, 1.0) for x in row], 0.05)) for row in z)
    naive = float((z > 1.645).any(axis=1).mean())
    assert 0.03 < alarms / families < 0.07  # independent checks: 1 - (1 - .05/40)^40 = 0.049
    assert naive > 0.8  # what judging each at 5% would do


def test_one_sided_p_value_of_a_change_beyond_its_tolerance():
    assert p_beyond(10.0, 10.0, 2.0) == pytest.approx(0.5)
    assert p_beyond(10.0 + 1.6449 * 2.0, 10.0, 2.0) == pytest.approx(0.05, abs=1e-4)
    assert p_beyond(5.0, 10.0, 2.0) > 0.99
    assert p_beyond(11.0, 10.0, 0.0) == 0.0 and p_beyond(9.0, 10.0, 0.0) == 1.0


def test_block_length_is_five_seconds_or_a_twentieth_of_a_short_run():
    assert block_seconds(600) == 5.0
    assert block_seconds(60) == 3.0
    assert block_seconds(4) == 0.5  # never under half a second


def test_a_clump_of_failures_widens_the_interval_as_the_block_arithmetic_says():
    # 100 s at 10 requests/s; every request in seconds 40-45 fails, none elsewhere.
    offsets = np.arange(1000) / 10.0
    failed = ((offsets >= 40) & (offsets < 45)).astype(float)
    blocks = Blocks.of(offsets, 100.0, seed=3)
    assert blocks.seconds == 5.0 and blocks.count == 20
    replicates = blocks.mean(failed, blocks.of_request)
    # 20 equal blocks, one all failures: the replicates' variance is var(block means) / 20
    expected = np.sqrt(0.05 * 0.95 / 20)  # 0.049
    assert replicates.std() == pytest.approx(expected, rel=0.2)
    independent = np.sqrt(0.05 * 0.95 / 1000)  # 0.0069: what resampling requests would say
    assert replicates.std() > 5 * independent
    spread = Blocks.of(offsets, 100.0, seed=3).mean(
        (np.arange(1000) % 20 == 0).astype(float), blocks.of_request
    )
    assert spread.std() < 0.2 * expected  # the same failures spread evenly: no block differs


def test_a_fault_window_is_a_stratum_every_replicate_holds_as_it_was():
    # A clump of failures that is the run's fault window (its design, not its noise): blocks
    # are drawn within "in the window" and "outside", so every replicate has 20 s of it.
    offsets = np.arange(1000) / 10.0
    in_window = (offsets >= 40) & (offsets < 60)
    blocks = Blocks.of(offsets, 100.0, seed=3, strata=in_window.astype(np.int64))
    replicates = blocks.mean(in_window.astype(float), blocks.of_request)
    assert np.allclose(replicates, 0.2)  # known answer: no spread at all
    # Failures in half of the window's four blocks are noise: Binomial(4, 1/2) blocks of 50
    # requests out of 1000 fail, a standard deviation of 0.05.
    failed = in_window & (offsets < 50)
    assert blocks.mean(failed.astype(float), blocks.of_request).std() == pytest.approx(
        0.05, rel=0.2
    )


def test_block_quantile_replicates_sit_on_the_exact_percentile():
    rng = np.random.default_rng(1)
    offsets = np.sort(rng.uniform(0, 60, 20_000))
    latency = rng.uniform(0, 1000, 20_000)
    blocks = Blocks.of(offsets, 60.0, seed=1)
    replicates = blocks.quantile(latency, blocks.of_request, 95)
    assert np.median(replicates) == pytest.approx(np.percentile(latency, 95), rel=0.01)
    assert 0 < replicates.std() < 5  # binomial SE of p95 here: about 1.5 ms
    constant = blocks.mean(np.full(20_000, 7.0), blocks.of_request)
    assert np.all(constant == 7.0)


def _card(groups: dict[str, tuple[float, float]], n: int = 500, seed: int = 0) -> dict:
    """An overall card with step p95 figures: name -> (value, replicate spread)."""
    rng = np.random.default_rng(seed)
    gated, reps = {}, {}
    for name, (value, spread) in groups.items():
        key = f"step {name} p95_ms"
        gated[key] = {"scope": "step", "group": name, "kind": "tool", "figure": "p95_ms",
                      "value": value, "n": n}  # fmt: skip
        reps[key] = list(rng.normal(value, spread, 200))
    return {"requests": n, "gated": gated, "bootstrap": reps}


def test_forty_unchanged_steps_pass_and_one_slower_step_regresses_first():
    names = [f"tool_{k}" for k in range(40)]
    base = _card({n: (100.0, 3.0) for n in names})
    same = _card({n: (100.0 + (k % 3 - 1) * 4.0, 3.0) for k, n in enumerate(names)}, seed=1)
    checks = compare([base], [same], {})
    assert len(checks) == 40 and all(c["status"] == "pass" for c in checks)
    slower = _card({n: (160.0 if n == "tool_7" else 100.0, 3.0) for n in names}, seed=2)
    checks = compare([base], [slower], {})
    assert checks[0]["metric"] == "step tool_7 p95_ms" and checks[0]["status"] == "regressed"
    assert [c["status"] for c in checks[1:]] == ["pass"] * 39
    assert checks[0]["scope"] == "step" and checks[0]["tolerance"].startswith("max increase 20%")


ENTRY = {"scope": "step", "group": "g", "figure": "p95_ms", "value": 1.0, "n": 5}


def test_a_tampered_baseline_is_refused_with_the_field_named(tmp_path):
    from agentscale.errors import ConfigError
    from agentscale.gate.baseline import SCHEMA, load

    def baseline(card: dict) -> dict:
        method = {"scenario": "s", "scenario_sha256": "a", "dataset_sha256": "b"}
        return {"schema": SCHEMA, "method": method, "runs": [{"scorecard": card}]}

    good = _card({"crm": (100.0, 3.0)})
    for card, field in (
        ({**good, "bootstrap": {"step crm p95_ms": ["x"]}}, "bootstrap.step crm p95_ms"),
        ({**good, "bootstrap": {"step crm p95_ms": [1e308]}}, "bootstrap.step crm p95_ms"),
        ({**good, "gated": {"k": {**ENTRY, "value": "1"}}}, "gated.k.value"),
        ({**good, "gated": {"k": {**ENTRY, "scope": "run"}}}, "gated.k.scope"),
        ({**good, "gated": {"k": {**ENTRY, "n": -1}}}, "gated.k.n"),
        ({**good, "gated": []}, "gated is not an object"),
    ):
        path = tmp_path / "b.json"
        path.write_text(json.dumps(baseline(card)))
        with pytest.raises(ConfigError, match="not a baseline file") as caught:
            load(path)
        assert field in str(caught.value)
    path.write_text(json.dumps(baseline(good)))
    assert load(path)["runs"][0]["scorecard"]["gated"]


def test_a_step_the_scenario_names_but_the_gate_cannot_check_is_inconclusive():
    from agentscale.config.scenario import Gates
    from agentscale.gate.verdict import decide

    gates = Gates.model_validate(
        {"steps": {"crm_lokup": {"max_increase": "10%"}, "rare": {"max_increase": "10%"}}}
    )
    base = _card({"crm_lookup": (100.0, 3.0), "rare": (50.0, 3.0)})
    base["gated"]["step rare p95_ms"]["n"] = 30  # under min_step_calls (50)
    checks = compare([base], [base], {}, gates=gates)
    named = {c["metric"]: c for c in checks if c["status"] == "inconclusive"}
    assert "no step named 'crm_lokup'" in named["step crm_lokup"]["detail"]
    assert "crm_lookup" in named["step crm_lokup"]["detail"]  # the names it did see
    assert "did you mean 'crm_lookup'?" in named["step crm_lokup"]["detail"]
    assert "30 calls in the smaller run" in named["step rare"]["detail"]
    assert decide(checks, []) == ("inconclusive", 3)


def test_a_figure_of_a_named_step_that_one_run_lacks_is_inconclusive_not_dropped():
    from agentscale.config.scenario import Gates

    gates = Gates.model_validate({"steps": {"crm": {"max_error_rate_increase": 0.01}}})
    base = _card({"crm": (100.0, 3.0)})
    cand = _card({"crm": (100.0, 3.0)}, seed=1)
    cand["gated"]["step crm error_rate"] = {**cand["gated"]["step crm p95_ms"],
                                            "figure": "error_rate", "value": 0.1}  # fmt: skip
    cand["bootstrap"]["step crm error_rate"] = [0.1] * 200
    checks = {c["metric"]: c for c in compare([base], [cand], {}, gates=gates)}
    assert checks["step crm p95_ms"]["status"] == "pass"
    lacking = checks["step crm error_rate"]
    assert (
        lacking["status"] == "inconclusive"
        and "the baseline has no error_rate" in lacking["detail"]
    )


def test_the_measured_hash_takes_huge_integers_and_leaves_gates_out(tmp_path):
    from types import SimpleNamespace

    from agentscale.config.loader import LoadedScenario

    def measured(data: object) -> str:
        loaded = SimpleNamespace(document=SimpleNamespace(data=data), scenario_sha256="whole")
        return LoadedScenario.measured_sha256.fget(loaded)

    base = {"name": "s", "extra": 2**70}
    assert measured(base) == measured({**base, "gates": {"alpha": 0.01}})
    assert measured(base) != measured({**base, "name": "t"})
    assert measured({1: "a", "b": 2}) == "whole"  # keys json cannot sort: the whole file's hash
