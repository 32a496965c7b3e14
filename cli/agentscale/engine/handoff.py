"""Arrivals from the open-model scheduler to the users waiting for one.

The user that became idle last takes the next arrival: its connection, stack and the CPU's
caches are still warm, and at a few thousand requests per second a handful of users serve
nearly all of them. gevent's ``Queue`` wakes the user idle longest instead (so every request
ran on the coldest of 200), and each of its ``get`` calls scanned every waiting user.
"""

from __future__ import annotations

import collections
from typing import Any, Generic, TypeVar

import gevent
from gevent import getcurrent

T = TypeVar("T")


class Handoff(Generic[T]):
    def __init__(self) -> None:
        self.items: collections.deque[T] = collections.deque()  # put while no user was idle
        self.idle: list[Any] = []  # the users (greenlets) waiting, the last one idle at the end
        self.hub = gevent.get_hub()

    def qsize(self) -> int:
        return len(self.items)

    def put(self, item: T) -> None:
        if self.idle:
            self.hub.loop.run_callback(self._deliver, self.idle.pop(), item)
        else:
            self.items.append(item)

    def get(self) -> T:
        """The next arrival, waiting for one if none is queued (call from a user greenlet)."""
        if self.items:
            return self.items.popleft()
        user = getcurrent()
        self.idle.append(user)
        try:
            item: T = self.hub.switch()
        except BaseException:
            # Killed while idle (the run is over): nothing was handed to this user.
            if user in self.idle:
                self.idle.remove(user)
            raise
        return item

    def _deliver(self, user: Any, item: T) -> None:
        # In the hub. A user killed after it was chosen never took the item: it goes to the
        # next idle user, or waits at the head of the queue; no arrival is lost.
        while user.dead:
            if not self.idle:
                self.items.appendleft(item)
                return
            user = self.idle.pop()
        user.switch(item)
