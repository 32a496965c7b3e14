"""Resilience patterns the demo agent uses, kept free of I/O so they are tested directly."""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``cooldown`` seconds lets one trial
    call through (half-open) and closes again if it succeeds."""

    def __init__(
        self, threshold: int = 5, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.state: State = "closed"
        self.opened_at = 0.0
        self.trial_out = False
        self.opens = 0

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self.opened_at >= self.cooldown:
            self.state = "half_open"
            self.trial_out = False
        if self.state == "half_open" and not self.trial_out:
            self.trial_out = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.state = "closed"
        self.trial_out = False

    def failure(self) -> bool:
        """Record a failure; True when this failure opened the circuit."""
        self.failures += 1
        if self.state == "half_open" or (
            self.state == "closed" and self.failures >= self.threshold
        ):
            self.state = "open"
            self.opened_at = self.clock()
            self.trial_out = False
            self.opens += 1
            return True
        return False


class Bulkhead:
    """At most ``limit`` calls at once; a caller waits at most ``wait`` seconds for a slot."""

    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self.slots = asyncio.Semaphore(limit)
        self.rejected = 0

    async def acquire(self) -> bool:
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout=self.wait)
        except TimeoutError:
            self.rejected += 1
            return False
        return True

    def release(self) -> None:
        self.slots.release()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int  # in all, the first one included
    base: float  # seconds before the first retry
    cap: float
    jitter: bool

    def delay(self, retry: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter (AWS style): uniform in [0, min(cap, base*2^n)]."""
        if self.base <= 0:
            return 0.0
        ceiling = min(self.cap, self.base * (2**retry))
        return rng.uniform(0, ceiling) if self.jitter else ceiling


class TTLCache:
    """A bounded LRU whose entries expire. The caller builds the key; the agent's key always
    holds the tenant, the auth scope and the tool's config version."""

    def __init__(
        self, ttl: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self.entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        found = self.entries.get(key)
        if found is None or found[0] < self.clock():
            if found is not None:
                del self.entries[key]
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return found[1]

    def put(self, key: Hashable, value: Any) -> None:
        self.entries[key] = (self.clock() + self.ttl, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


@dataclass
class Budget:
    """Per-request limits; ``exhausted`` names the first one crossed (None while within)."""

    max_steps: int | None
    max_tokens: int | None
    max_seconds: float | None
    started: float
    steps: int = 0
    tokens: int = 0

    def exhausted(self, now: float, upcoming_tokens: int = 0) -> str | None:
        """The budget that is spent, or that the next step's ``upcoming_tokens`` would overspend."""
        if self.max_steps is not None and self.steps >= self.max_steps:
            return "steps"
        if self.max_tokens is not None and self.tokens + upcoming_tokens > self.max_tokens:
            return "tokens"
        if self.max_seconds is not None and now - self.started >= self.max_seconds:
            return "time"
        return None
