"""What the resilient demo checks before it trusts a dependency's answer, and the client-side
limiter that honours a provider's Retry-After. Free of I/O, tested directly."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

PACED_AFTER_S = 10.0  # calls stay paced this long after a hold ends, while the quota shows
_FIELDS = {
    "crm_lookup": ("item", "status", "email"),
    "billing": ("refund_id",),
}


def output_problem(name: str, result: Any) -> str | None:
    """Why ``result`` is not an answer ``name`` gives (None: it is). A provider's error object
    inside a 200, a body of the wrong shape, an empty one: each is a failed call."""
    if isinstance(result, dict) and "error" in result:
        return "an error object in a successful answer"
    if name == "logs_read":
        return None if isinstance(result, str) and result.strip() else "empty log output"
    if not isinstance(result, dict):
        return f"expected a JSON object, got {type(result).__name__}"
    if name == "llm":
        choices = result.get("choices")
        message = choices[0].get("message") if isinstance(choices, list) and choices else None
        if not isinstance(message, dict) or not isinstance(result.get("usage"), dict):
            return "no choices[0].message or usage"
        return None
    if name == "kb_search":
        found = result.get("results")
        ok = isinstance(found, list) and all(isinstance(r, dict) and "text" in r for r in found)
        return None if ok else "no results list"
    if name == "billing" and result.get("queued") is True:
        return None
    missing = [f for f in _FIELDS.get(name, ()) if f not in result]
    return f"missing {', '.join(missing)}" if missing else None


class ClientLimiter:
    """A client's side of a provider's rate limit. After a 429 it holds every call until the
    Retry-After has passed, then lets calls go one by one, spaced at the rate the provider
    advertises (``x-ratelimit-limit-requests`` a minute). A caller whose turn is more than
    ``patience`` seconds away does not call at all (its fallback answers): a rate limit never
    becomes a retry storm."""

    def __init__(self, patience: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.patience = patience
        self.clock = clock
        self.next_free = 0.0  # the earliest time the next call may go
        self.spacing = 0.0  # seconds between calls while paced (60 / the advertised limit)
        self.paced_until = 0.0

    def learn(self, headers: Mapping[str, str], status: int) -> None:
        limit = headers.get("x-ratelimit-limit-requests")
        if limit and limit.isdigit() and int(limit) > 0:
            self.spacing = 60 / int(limit)
        elif status != 429:
            self.paced_until = 0.0  # no quota in force any more: no pacing
        if status != 429:
            return
        wait = _retry_after(headers)
        now = self.clock()
        self.next_free = max(self.next_free, now + (wait if wait is not None else 1.0))
        self.paced_until = self.next_free + PACED_AFTER_S

    def reserve(self) -> float | None:
        """Seconds to wait before this call (0: now); None: the turn is too far, do not call."""
        now = self.clock()
        if now >= self.paced_until:
            return 0.0
        slot = max(now, self.next_free)
        if slot - now > self.patience:
            return None
        self.next_free = slot + (self.spacing or 0.0)
        return slot - now


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (precise) or ``Retry-After`` (whole seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        try:
            return float(headers[name]) * scale
        except (KeyError, ValueError):
            continue
    return None
