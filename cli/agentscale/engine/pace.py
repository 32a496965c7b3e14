"""The live view's achieved rate: sends over a trailing window of a few seconds, because
progress comes twice a second and half a second of Poisson arrivals at 10/s swings by a third."""

from __future__ import annotations

from collections import deque

TRAILING_S = 5.0


class TrailingRate:
    """Requests per second over the last ``seconds`` (less at the start of the run)."""

    def __init__(self, seconds: float = TRAILING_S, start: float = 0.0) -> None:
        self.seconds = seconds
        self.samples: deque[tuple[float, int]] = deque([(start, 0)])

    def add(self, now: float, sent: int) -> float:
        samples = self.samples
        samples.append((now, sent))
        while len(samples) > 2 and now - samples[1][0] >= self.seconds:
            samples.popleft()
        then, before = samples[0]
        return (sent - before) / max(now - then, 1e-6)
