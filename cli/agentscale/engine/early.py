"""A stop signal that arrives before the engine's own handlers exist (while Locust and gevent
are still being imported) is remembered here, not raised: an exception raised inside an import
can break the interpreter's import locks. The engine checks it once its handlers are in place.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

requested: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    requested.append(signum)


def watch() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _remember)


class _Absent:
    """A finder that says a package is not installed (a meta path entry, before the others)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, *_args: object) -> None:
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ModuleNotFoundError(f"the engine does without {self.name}", name=fullname)


def without_pandas() -> None:
    """The engine never holds a pandas object, but pyarrow imports pandas (0.6 s) the first
    time it turns a Python sequence into an array, only to ask whether it is one. Marked
    absent, pandas is never imported here, and an import of it by mistake fails loudly."""
    if not any(isinstance(finder, _Absent) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Absent("pandas"))
