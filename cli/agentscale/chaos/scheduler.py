"""Applies a profile's windows at their planned offsets from the start of the load (the
engine's clock), and records planned vs actual times and the result in events.jsonl.

Whatever a change raises, the scheduler goes on with the next action (a removal still has to
happen), names the window in ``failures`` (the run is then invalid) and says so in the events.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from agentscale.chaos.rig import FaultRig
from agentscale.config.faults import Fault, FaultProfile, Window
from agentscale.records.writer import EventLog

EVENT = {"apply": "fault_applied", "update": "fault_updated", "remove": "fault_removed"}


@dataclass(frozen=True)
class Action:
    at: float  # seconds from the start of the load
    kind: str  # apply | update | remove
    window: Window
    fault: Fault | None = None


def timeline(profile: FaultProfile) -> list[Action]:
    actions = []
    for window in profile.windows:
        for i, (at, fault) in enumerate(window.states()):
            actions.append(Action(at, "apply" if i == 0 else "update", window, fault))
        actions.append(Action(window.end, "remove", window))
    # At the same instant, removals go first, so a window that follows another on the same
    # target starts clean.
    return sorted(actions, key=lambda a: (a.at, a.kind != "remove"))


class FaultScheduler:
    def __init__(self, rig: FaultRig, profile: FaultProfile, events: EventLog) -> None:
        self.rig = rig
        self.actions = timeline(profile)
        self.events = events
        self.stop_requested = threading.Event()
        self.failures: list[str] = []
        self.lateness_ms: list[float] = []
        self.thread: threading.Thread | None = None
        self.started_at: float | None = None

    def start(self, started_at: float) -> None:
        """``started_at``: the wall time at which the load started (from the engine)."""
        self.started_at = started_at
        self.thread = threading.Thread(target=self._run, args=(started_at,), daemon=True)
        self.thread.start()

    def _run(self, started_at: float) -> None:
        for action in self.actions:
            planned = started_at + action.at
            if self.stop_requested.wait(max(planned - time.time(), 0)):
                return
            self._do(action, started_at, planned)

    def _do(self, action: Action, started_at: float, planned: float, note: str = "") -> None:
        began = time.time()
        try:
            if action.kind == "remove":
                self.rig.remove(action.window)
            else:
                assert action.fault is not None
                self.rig.apply(action.window, action.fault)
            result = "ok"
        except Exception as error:  # any failure: the window is named, the run invalid
            result = f"error: {error}"
            done = {"remove": "removed", "apply": "applied"}.get(
                action.kind, f"applied ({action.kind})"
            )
            self.failures.append(f"window {action.window.name} could not be {done}: {error}")
        late = (began - planned) * 1000
        if not note:
            self.lateness_ms.append(late)
        self.events.write(
            EVENT[action.kind],
            window=action.window.name,
            target=action.window.target,
            planned_at=round(action.at, 3),
            actual_at=round(began - started_at, 3),
            late_ms=round(late, 1),
            took_ms=round((time.time() - began) * 1000, 1),
            result=result,
            **self._traffic(action),
            **({"note": note} if note else {}),
        )

    def _traffic(self, action: Action) -> dict[str, int]:
        """A removed http window: what its dependency got while it was in place."""
        found = self.rig.traffic.get(action.window.name) if action.kind == "remove" else None
        if not found:
            return {}
        return {
            "dependency_requests": found["requests"],
            "rate_limited": found["rate_limited"],
            "injected": found["injected"],
        }

    def stop(self) -> None:
        """Stop scheduling; a window still in force (the run ended early) is removed now, and
        the events say so."""
        self.stop_requested.set()
        if self.thread is not None:
            self.thread.join(timeout=15)
        if self.started_at is None:
            return
        for window in list(self.rig.applied.values()):
            removal = Action(window.end, "remove", window)
            self._do(removal, self.started_at, time.time(), note="removed as the run stopped")
