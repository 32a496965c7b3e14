import numpy as np
import pytest

from agentscale.config.units import parse_comparison, parse_duration, parse_fraction
from agentscale.formatting import num, signed


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("250ms", 0.25),
        (12, 12),
        ("2.5s", 2.5),
        ("90", 90),
    ],
)
def test_durations_in_the_units_people_write(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 minutes", "five", "-3s", "3x", "", "5 m", True])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_fractions_and_percentages():
    assert parse_fraction("10%") == pytest.approx(0.10)
    assert parse_fraction(0.01) == 0.01
    with pytest.raises(ValueError):
        parse_fraction("ten percent")


def test_comparisons_hold_or_not():
    slo = parse_comparison("< 8000")
    assert slo.holds(7999) and not slo.holds(8000)
    assert parse_comparison(">= 95%").holds(0.95)
    assert parse_comparison("<= 20s").value == 20_000
    with pytest.raises(ValueError):
        parse_comparison("about 5")


@pytest.mark.parametrize(
    ("value", "written", "change"),
    [
        (1.234e-05, "0.00001234", "+0.00001234"),  # a cost per success in dollars
        (-3.2e-07, "-0.00000032", "-0.00000032"),
        (0.00012, "0.00012", "+0.00012"),
        (12.5, "12.5", "+12.5"),
        (0.0, "0", "+0"),
        (-3.939e-14, "0", "+0"),  # float noise in a confidence interval
        (-123456.0, "-123,456", "-123,456"),
    ],
)
def test_small_figures_are_written_with_their_zeros_not_in_scientific_notation(
    value, written, change
):
    assert num(value) == written
    assert signed(value) == change


def test_float_noise_is_never_a_negative_zero_and_a_tiny_cost_is_not_zero():
    from agentscale.formatting import change, fixed, pct, usd

    assert change(-3.25e-19, -5.4e-16) == "+0 (+0.0%)"  # two runs' sums in another order
    assert (pct(-1e-17), fixed(-1e-14), fixed(-0.0, 0, " ms")) == ("0.0%", "0.0", "0 ms")
    assert (usd(-1e-14), usd(4e-7), usd(0.000805)) == ("$0.000000", "$0.0000004", "$0.000805")
    assert change(-1.0, -0.25) == "-1 (-25.0%)"


def test_the_live_achieved_rate_is_taken_over_the_last_five_seconds():
    from agentscale.engine.pace import TrailingRate

    pace, rng, sent = TrailingRate(), np.random.default_rng(3), 0
    readings = []
    for tick in range(1, 121):  # a minute of Poisson arrivals at 10/s, read twice a second
        sent += int(rng.poisson(5))
        readings.append(pace.add(tick * 0.5, sent))
    settled = np.array(readings[10:])
    assert abs(settled.mean() - 10) < 1 and settled.std() < 1.6  # half-second reads: std ~4.5
    steady = TrailingRate()
    for tick in range(1, 21):  # 10 s at 10/s, then 5 s at 20/s: only the last 5 s count
        steady.add(tick * 0.5, tick * 5)
    for tick in range(1, 11):
        reading = steady.add(10 + tick * 0.5, 100 + tick * 10)
    assert reading == 20.0
    early = TrailingRate(start=100.0)
    assert early.add(100.5, 5) == 10.0  # the first reading is over what there is of the run


def test_a_request_s_mix_depends_on_the_seed_and_its_number_alone(tmp_path):
    """``--seed`` fixes the mix with or without workers: arrival 42 is the same tenant,
    workflow and item whether one engine plans 0, 1, 2, ... or two share them (0, 2, 4, ...
    and 1, 3, 5, ...); the weights hold."""
    from collections import Counter

    from agentscale.config.dataset import load_dataset
    from agentscale.engine.plan import Planner

    lines = [f'{{"prompt": "p{i}", "workflow": "{w}"}}' for i, w in enumerate("aaabbc")]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    dataset = load_dataset(tmp_path / "d.jsonl")
    args = (dataset, {"acme": 0.7, "globex": 0.3}, {"a": 3.0, "b": 5.0, "c": 1.0}, 5)
    alone = [Planner(*args).plan(seq) for seq in range(20_000)]
    shared = [Planner(*args), Planner(*args)]
    for seq in [*range(0, 20_000, 2), *range(1, 20_000, 2)]:
        assert shared[seq % 2].plan(seq) == alone[seq]
    assert [Planner(*args[:3], 6).plan(seq) for seq in range(50)] != alone[:50]
    workflows, tenants = Counter(p.workflow for p in alone), Counter(p.tenant for p in alone)
    assert (
        abs(workflows["b"] / 20_000 - 5 / 9) < 0.02 and abs(tenants["acme"] / 20_000 - 0.7) < 0.02
    )
    assert {p.item for p in alone if p.workflow == "a"} == {0, 1, 2}
    # The item is drawn apart from the tenant and workflow, whatever the seed's lowest bit
    # (an odd one drew the item from the tenant and workflow's own bits).
    for seed in (2, 3):  # mixed, one is even and one odd
        planner = Planner(*args[:3], seed)
        pairs = Counter((p.tenant, p.item) for p in map(planner.plan, range(30_000)))
        a = [
            pairs[(t, i)] / sum(pairs[(t, j)] for j in range(3)) for t in tenants for i in range(3)
        ]
        assert max(abs(share - 1 / 3) for share in a) < 0.04, (seed, pairs)


def test_the_live_target_is_the_shapes_level_during_the_load_and_zero_in_the_drain():
    from agentscale.config.scenario import Scenario
    from agentscale.config.traffic import level_now
    from conftest import scenario_dict

    spike = {"kind": "spike", "base_rps": 3, "peak_rps": 30, "every": "40s", "spike_for": "15s",
             "first_at": "5s"}  # fmt: skip
    scenario = Scenario.model_validate(scenario_dict("http://127.0.0.1:1/", load__shape=spike))
    # The load ends (at 10 s) inside a spike: the drain after it asks for nothing.
    assert level_now(scenario, 2.0, 10.0) == 3.0
    assert level_now(scenario, 9.99, 10.0) == 30.0
    assert level_now(scenario, 10.0, 10.0) == level_now(scenario, 12.5, 10.0) == 0.0
    assert level_now(scenario, -0.2, 10.0) == 3.0  # a progress line just before the start
