"""The OTLP receiver (``records.otlp``) as a child process of ``agentscale load``: started
before the agent is, so that its address can be handed to it, and stopped once the spans of
the last requests have had their time to arrive."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import orjson

from agentscale.errors import RunInvalid
from agentscale.processes import stop

START_TIMEOUT_S = 20.0


class SpanReceiver:
    def __init__(self, run_dir: Path, listen: str) -> None:
        self.run_dir = run_dir
        self.listen = listen
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.received: int | None = None

    @property
    def endpoint(self) -> str:
        """What an OpenTelemetry SDK takes as ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{self.address}"

    def __enter__(self) -> SpanReceiver:
        command = [sys.executable, "-m", "agentscale.records.otlp", "--listen", self.listen,
                   "--out", str(self.run_dir)]  # fmt: skip
        with (self.run_dir / "otlp.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else b""
        try:
            self.address = str(orjson.loads(line)["listen"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            stop(self.process)
            raise RunInvalid(
                f"the OTLP receiver did not start on {self.listen}",
                hint=f"is the address free? see {self.run_dir / 'otlp.log'}",
            ) from None
        return self

    def finish(self, grace: float) -> None:
        """Wait ``grace`` seconds for late spans (an SDK batches them), then stop."""
        if self.process is None:
            return
        deadline = time.monotonic() + grace
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
        finally:
            self._stop()

    def _stop(self) -> None:
        process = self.process
        if process is None:
            return
        stop(process, grace=10.0)
        if process.stdout is not None:
            for line in process.stdout.read().splitlines():
                try:
                    self.received = int(orjson.loads(line)["received"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        self.process = None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()
