import numpy as np
import pytest
from pydantic import TypeAdapter

from agentscale.config.shapes import Shape, arrival_offsets, parse_offsets_csv

shape = TypeAdapter(Shape).validate_python


def offsets(spec, duration, **kw):
    return arrival_offsets(shape(spec), duration, poisson=kw.get("poisson", False), seed=3)


def test_constant_rate_gives_rate_times_duration_evenly_spaced():
    times = offsets({"kind": "constant", "rps": 50}, 20)
    assert len(times) == 1000
    assert np.allclose(np.diff(times), 0.02)
    assert 0 <= times[0] < 0.02 and times[-1] < 20


def test_spike_bursts_at_peak_rate_and_labels_phases():
    spec = {
        "kind": "spike",
        "base_rps": 2,
        "peak_rps": 20,
        "every": "60s",
        "spike_for": "10s",
        "first_at": "30s",
    }
    times = offsets(spec, 120)
    in_burst = ((times >= 30) & (times < 40)) | ((times >= 90) & (times < 100))
    assert in_burst.sum() == pytest.approx(2 * 10 * 20, abs=2)
    assert (~in_burst).sum() == pytest.approx(100 * 2, abs=2)
    s = shape(spec)
    assert [s.phase(t, 120) for t in (10, 35, 45, 60, 95)] == [
        "base",
        "spike",
        "recovery",
        "base",
        "spike",
    ]


def test_ramp_integrates_the_rate():
    times = offsets({"kind": "ramp", "from_rps": 0, "to_rps": 100}, 10)
    assert len(times) == pytest.approx(500, abs=1)  # area of the triangle
    assert (times < 5).sum() == pytest.approx(125, abs=2)  # a quarter of it in the first half


def test_stages_step_and_ramp():
    spec = {
        "kind": "stages",
        "stages": [
            {"for": "5s", "rps": 10},
            {"for": "5s", "rps": 30, "ramp": True, "name": "climb"},
        ],
    }
    times = offsets(spec, 10)
    assert (times < 5).sum() == pytest.approx(50, abs=1)
    assert (times >= 5).sum() == pytest.approx(100, abs=2)
    assert shape(spec).phase(7, 10) == "climb"


def test_sine_mean_rate():
    spec = {"kind": "sine", "mean_rps": 10, "amplitude_rps": 5, "period": "10s"}
    assert len(offsets(spec, 20)) == pytest.approx(200, abs=2)


def test_poisson_is_seeded_and_near_its_rate():
    first = offsets({"kind": "poisson", "rps": 100}, 60)
    again = offsets({"kind": "poisson", "rps": 100}, 60)
    assert np.array_equal(first, again)
    assert len(first) == pytest.approx(6000, rel=0.05)
    gaps = np.diff(first)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential gaps


def test_step_shape_levels_and_cap():
    s = shape({"kind": "step", "start_users": 2, "step_users": 3, "every": "10s", "max_users": 6})
    assert [s.level(t, 60) for t in (0, 10, 25, 59)] == [2, 5, 6, 6]


def test_replay_offsets_from_csv():
    values = parse_offsets_csv("offset_s\n0.5\n1.5\n1.5\n3\n")
    s = shape({"kind": "replay", "file": "x.csv", "speed": 2})
    times = arrival_offsets(s, 1.0, poisson=False, seed=0, replay_offsets=values)
    assert times.tolist() == [0.25, 0.75, 0.75]
