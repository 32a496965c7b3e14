"""Helper processes (the demo stack, the HTTP fault stage) end when their parent is gone."""

from __future__ import annotations

import asyncio
import os


async def watch_parent(stopped: asyncio.Event) -> None:
    """Set ``stopped`` when the process that started us is gone (killed with -9, say)."""
    parent = os.getppid()
    while not stopped.is_set():
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            stopped.set()
