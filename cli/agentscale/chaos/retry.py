"""Retrying a control-plane call (Toxiproxy's API, the HTTP stage's): a few attempts with a
short exponential backoff, because both can refuse a call while they are busy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
ATTEMPTS = 4
BACKOFF_S = 0.05


class ControlError(Exception):
    """A change to the fault plumbing that did not happen (after the retries)."""


def retried(
    call: Callable[[], T],
    what: str,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = ATTEMPTS,
) -> T:
    """``call()``'s result; on ``retry_on``, wait and try again; ``ControlError`` at the end."""
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            return call()
        except retry_on as error:
            last = error
        if attempt + 1 < attempts:
            time.sleep(BACKOFF_S * 2**attempt)
    raise ControlError(f"{what} failed after {attempts} tries: {last}")
