"""The demo stack as a child process of ``agentscale load`` (the CLI never imports aiohttp)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import orjson

from agentscale.config.scenario import DemoOptions
from agentscale.errors import RunInvalid
from agentscale.processes import stop
from agentscale.records.runfolder import DemoRef

START_TIMEOUT_S = 30.0
PROFILE_ENV = "AGENTSCALE_DEMO_PROFILE"


class DemoProcess:
    """Starts the stack, waits for its address, and always stops it."""

    def __init__(
        self,
        profile: str,
        time_scale: float,
        log_path: Path,
        routes: dict[str, str] | None = None,
        options: DemoOptions | None = None,
        otlp_endpoint: str | None = None,
    ) -> None:
        self.command = [sys.executable, "-m", "agentscale.demo", "--profile", profile,
                        "--time-scale", str(time_scale)]  # fmt: skip
        for name, address in (routes or {}).items():
            self.command += ["--route", f"{name}={address}"]
        self.command += _option_arguments(options or DemoOptions())
        self.env = dict(os.environ)
        if otlp_endpoint is not None:
            # The standard variables an OpenTelemetry SDK reads; batches every half second,
            # so that the spans of the last requests arrive soon after them.
            self.env.update(
                OTEL_EXPORTER_OTLP_ENDPOINT=otlp_endpoint, OTEL_BSP_SCHEDULE_DELAY="500"
            )
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.description: DemoRef = {}

    def __enter__(self) -> DemoProcess:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            env=self.env, start_new_session=True,
        )  # fmt: skip
        log.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = b""
        while time.monotonic() < deadline and self.process.poll() is None:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                break
        try:
            self.description = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise RunInvalid(
                "the demo stack did not start",
                hint=f"see {self.log_path}" + (f"; it ends with:\n{tail}" if tail else ""),
            ) from None
        return self

    @property
    def agent_url(self) -> str:
        return str(self.description["agent"])

    def stop(self) -> None:
        stop(self.process, grace=10.0)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _option_arguments(options: DemoOptions) -> list[str]:
    out = ["--cache-scope-bug"] if options.cache_scope_bug else []
    if options.jitter:
        out += ["--jitter", str(options.jitter)]
    if options.telemetry != "body":
        out += ["--telemetry", options.telemetry]
    if options.bulkheads is not None:
        out += ["--bulkheads", "on" if options.bulkheads else "off"]
    for flag, value in (
        ("--llm-capacity", options.llm_capacity),
        ("--tenant-concurrency", options.tenant_concurrency),
        ("--max-steps", options.budgets.steps if options.budgets else None),
        ("--max-tokens", options.budgets.tokens if options.budgets else None),
        ("--max-seconds", options.budgets.time if options.budgets else None),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out


def demo_profile(configured: str) -> str:
    """``AGENTSCALE_DEMO_PROFILE`` overrides the scenario's ``target.demo.profile``."""
    return os.environ.get(PROFILE_ENV) or configured
