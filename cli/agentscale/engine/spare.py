"""A spare engine process, started before it is needed.

The engine's interpreter spends about 1.5 s importing Locust, gevent and the schemas before it
can read a spec. Started when a command that runs load begins, that time overlaps the CLI's own
imports and checks on the other core; ``launch`` hands the spare its spec and log through its
stdin. A spare that is never used is killed when the CLI exits, and one whose CLI was killed
reads the end of its stdin and leaves. Light on purpose: ``agentscale load`` imports this first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

FLAG = "--spare"
_spare: subprocess.Popen[bytes] | None = None


def command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "agentscale.engine", *arguments]


def prepare() -> None:
    """Start a spare if there is none; a failure to start one only means a cold start later."""
    global _spare
    if _spare is not None and _spare.poll() is None:
        return
    try:
        _spare = subprocess.Popen(
            command(FLAG),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Until it has its log, nothing it could say belongs anywhere: a spare that fails
            # to import is replaced by a cold start, which writes the failure to engine.log.
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        _spare = None


def take(spec_path: Path, log_path: Path) -> subprocess.Popen[bytes] | None:
    """The spare, given its spec and log; None when there is none alive to take."""
    global _spare
    child, _spare = _spare, None
    if child is None:
        return None
    if child.poll() is None:
        assert child.stdin is not None
        line = json.dumps({"spec": str(spec_path), "log": str(log_path)}) + "\n"
        try:
            child.stdin.write(line.encode())
            child.stdin.close()
            return child
        except OSError:  # it died between the check and the write
            pass
    _kill(child)
    return None


def discard() -> None:
    """Kill an unused spare at once: it holds nothing, and must not outlive the CLI."""
    global _spare
    child, _spare = _spare, None
    if child is not None:
        _kill(child)


def _kill(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=5)
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def receive() -> Path | None:
    """In the spare: wait for the spec, send stderr to the run's log, and return the spec's
    path; None when the CLI went away (the end of stdin) before it had a run for us."""
    line = sys.stdin.buffer.readline()
    if not line:
        return None
    given = json.loads(line)
    descriptor = os.open(given["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    return Path(given["spec"])
