"""When the target stopped answering: stretches of at least ``LOST_AFTER_S`` in which no
request sent got any HTTP answer (refused, reset, timed out), as a dead or hung process gives;
or a shorter stretch of the kind that runs to the end of the run (the target never came back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agentscale.records.frames import RunFrames, epoch_seconds

LOST_AFTER_S = 5.0
LOST_AT_THE_END_S = 2.0  # a stretch that runs to the run's end: shorter, with a few requests
UNANSWERED = (
    "connection_refused",
    "connection_error",
    "connection_reset",
    "timeout",
    "bad_response",
    "incomplete_response",
)


@dataclass(frozen=True)
class Loss:
    at: float  # seconds from the start of the load: the first request that could not connect
    until: float | None  # the first request that connected again, None if none did
    requests: int  # requests that could not connect in the stretch
    first: bool = False  # the stretch began with the run's first request: never answered

    def describe(self) -> str:
        lost = f"{self.requests:,} requests got no answer (refused, reset or timed out)"
        if self.first:
            if self.until is None:
                return f"the target never answered: {lost}"
            return f"the target did not answer until {self.until:.1f}s: {lost}"
        back = f"until {self.until:.1f}s" if self.until is not None else "to the end of the run"
        return f"the target stopped answering at {self.at:.1f}s: {lost}, {back}"


def target_losses(frames: RunFrames) -> list[Loss]:
    sent = frames.sent
    if not sent.any():
        return []
    requests = frames.requests
    offset = (epoch_seconds(requests["sent_at"]) - frames.started_at)[sent]
    classes = requests["error_class"].astype("string").fillna("")
    bad = classes.isin(UNANSWERED).to_numpy(dtype=bool)[sent]
    order = np.argsort(offset, kind="stable")
    offset, bad = offset[order], bad[order]
    losses = []
    # Runs of consecutive unreachable requests, in the order they were sent.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], bad, [False])).astype(np.int8)))
    for start, end in zip(edges[0::2], edges[1::2], strict=True):
        span = offset[end - 1] - offset[start]
        at_the_end = end == offset.size
        long_enough = span >= LOST_AFTER_S or (
            at_the_end and span >= LOST_AT_THE_END_S and end - start >= 3
        )
        if long_enough:
            until = float(offset[end]) if not at_the_end else None
            losses.append(Loss(float(offset[start]), until, int(end - start), start == 0))
    return losses
