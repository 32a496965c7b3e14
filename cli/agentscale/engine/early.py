"""A stop signal that arrives before the engine's own handlers exist (while Locust and gevent
are still being imported) is remembered here, not raised: an exception raised inside an import
can break the interpreter's import locks. The engine checks it once its handlers are in place.
"""

from __future__ import annotations

import signal
from types import FrameType

requested: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    requested.append(signum)


def watch() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _remember)
