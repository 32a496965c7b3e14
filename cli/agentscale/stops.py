"""The stop signals (Ctrl-C, SIGTERM) the command line has received, for the code that must
see a stop even where its KeyboardInterrupt was lost: raised inside a finalizer or a weakref
callback, Python prints "Exception ignored" and carries on as if nothing had happened."""

from __future__ import annotations

requested: list[int] = []

# Whether the command printed its verdict (with its exit code) itself: a stop that ends it
# then needs no word of its own.
announced: list[bool] = []
