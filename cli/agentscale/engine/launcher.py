"""Runs the engine as a child process and relays its progress; forwards Ctrl-C and SIGTERM.

The child gets its own session so that a terminal's Ctrl-C reaches it once, through us; it
also watches for our death and stops by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import orjson

from agentscale import stops
from agentscale.engine import spare
from agentscale.engine.spec import EngineSpec, log_suffix
from agentscale.processes import stop

STOP_GRACE_S = 20.0


@dataclass
class EngineOutcome:
    returncode: int
    interrupted: bool
    log_tail: str


def launch(spec: EngineSpec, on_message: Callable[[dict[str, Any]], None]) -> EngineOutcome:
    if stops.requested:  # a stop whose KeyboardInterrupt was lost on the way here
        raise KeyboardInterrupt
    run_dir = spec.run_dir
    spec_path = run_dir / f"engine{log_suffix(spec)}.spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    log_path = run_dir / f"engine{log_suffix(spec)}.log"
    interrupted = False
    with log_path.open("wb") as log:
        child = spare.take(spec_path, log_path) or subprocess.Popen(
            spare.command(str(spec_path)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )

        def forward(signum: int, _frame: FrameType | None) -> None:
            nonlocal interrupted
            interrupted = True
            if child.poll() is None:
                child.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
        try:
            assert child.stdout is not None
            while True:
                try:
                    line = child.stdout.readline()
                except KeyboardInterrupt:
                    forward(signal.SIGINT, None)
                    continue
                if not line:
                    break
                if stops.requested and not interrupted:
                    forward(signal.SIGINT, None)  # its KeyboardInterrupt was lost (see stops)
                try:
                    on_message(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
            try:
                child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                stop(child, grace=1.0)
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop(child, grace=1.0)
    returncode = child.returncode if child.returncode is not None else -signal.SIGKILL
    return EngineOutcome(returncode, interrupted, _tail(log_path))


def _tail(path: os.PathLike[str], lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return "".join(file.readlines()[-lines:])
    except OSError:
        return ""
