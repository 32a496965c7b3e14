import numpy as np
import pytest

from agentscale.engine.exchange import LiveLatency


def test_live_p95_is_within_two_percent_of_the_exact_one():
    values = np.random.default_rng(5).lognormal(mean=5, sigma=1, size=20_000)
    live = LiveLatency()
    for chunk in np.array_split(values, 7):  # arrives tick by tick
        live.pending.extend(chunk.tolist())
        live.percentile(95)
    assert live.percentile(95) == pytest.approx(np.percentile(values, 95), rel=0.02)
    assert LiveLatency().percentile(95) is None
