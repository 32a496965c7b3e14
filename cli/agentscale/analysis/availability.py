"""When the target stopped answering: stretches of at least ``LOST_AFTER_S`` in which every
request sent failed to connect (refused, or no route), as a dead process or host gives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agentscale.records.frames import RunFrames

LOST_AFTER_S = 5.0
UNREACHABLE = ("connection_refused", "connection_error")


@dataclass(frozen=True)
class Loss:
    at: float  # seconds from the start of the load: the first request that could not connect
    until: float | None  # the first request that connected again, None if none did
    requests: int  # requests that could not connect in the stretch

    def describe(self) -> str:
        back = f"until {self.until:.1f}s" if self.until is not None else "to the end of the run"
        return (
            f"the target stopped answering at {self.at:.1f}s: {self.requests:,} requests "
            f"could not connect, {back}"
        )


def target_losses(frames: RunFrames) -> list[Loss]:
    sent = frames.sent
    if not sent.any():
        return []
    requests = frames.requests
    offset = (requests["sent_at"].astype("int64").to_numpy() / 1e6 - frames.started_at)[sent]
    classes = requests["error_class"].astype("string").fillna("")
    bad = classes.isin(UNREACHABLE).to_numpy(dtype=bool)[sent]
    order = np.argsort(offset, kind="stable")
    offset, bad = offset[order], bad[order]
    losses = []
    # Runs of consecutive unreachable requests, in the order they were sent.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], bad, [False])).astype(np.int8)))
    for start, end in zip(edges[0::2], edges[1::2], strict=True):
        span = offset[end - 1] - offset[start]
        if span >= LOST_AFTER_S:
            until = float(offset[end]) if end < offset.size else None
            losses.append(Loss(float(offset[start]), until, int(end - start)))
    return losses
