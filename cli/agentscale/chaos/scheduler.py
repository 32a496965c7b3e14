"""Applies a profile's windows at their planned offsets from the start of the load (the
engine's clock), and records planned vs actual times and the result in events.jsonl."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from agentscale.chaos.rig import FaultRig
from agentscale.chaos.toxiproxy_client import ToxiproxyError
from agentscale.config.faults import FaultProfile, Window
from agentscale.records.writer import EventLog


@dataclass(frozen=True)
class Action:
    at: float  # seconds from the start of the load
    kind: str  # apply | update | remove
    window: Window
    fault: Any = None


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

    def start(self, started_at: float) -> None:
        """``started_at``: the wall time at which the load started (from the engine)."""
        self.thread = threading.Thread(target=self._run, args=(started_at,), daemon=True)
        self.thread.start()

    def _run(self, started_at: float) -> None:
        for action in self.actions:
            planned = started_at + action.at
            if self.stop_requested.wait(max(planned - time.time(), 0)):
                return
            began = time.time()
            try:
                if action.kind == "remove":
                    self.rig.remove(action.window)
                else:
                    self.rig.apply(action.window, action.fault)
                result = "ok"
            except ToxiproxyError as error:
                result = f"error: {error}"
                if action.kind != "remove":
                    self.failures.append(f"window {action.window.name} ({action.kind}): {error}")
            late = (began - planned) * 1000
            self.lateness_ms.append(late)
            self.events.write(
                {"apply": "fault_applied", "update": "fault_updated", "remove": "fault_removed"}[
                    action.kind
                ],
                window=action.window.name,
                target=action.window.target,
                planned_at=round(action.at, 3),
                actual_at=round(began - started_at, 3),
                late_ms=round(late, 1),
                took_ms=round((time.time() - began) * 1000, 1),
                result=result,
            )

    def stop(self) -> None:
        self.stop_requested.set()
        if self.thread is not None:
            self.thread.join(timeout=15)
