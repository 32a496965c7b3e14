"""Child processes: stopping one (politely, then not), and helpers that end with their parent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess


def stop(
    process: subprocess.Popen[bytes] | None, grace: float = 5.0, *, group: bool = True
) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the whole process group when the
    child leads one (``start_new_session``), so that its own children go too. Never raises."""
    if process is None or process.poll() is not None:
        return
    _signal(process, signal.SIGTERM, group)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL, group)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _signal(process: subprocess.Popen[bytes], signum: int, group: bool) -> None:
    with contextlib.suppress(OSError):
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)


async def watch_parent(stopped: asyncio.Event) -> None:
    """Set ``stopped`` when the process that started us is gone (killed with -9, say)."""
    parent = os.getppid()
    while not stopped.is_set():
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            stopped.set()
