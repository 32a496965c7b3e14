"""Shared fixtures: a real HTTP target on 127.0.0.1 (port 0), scenario files, the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from agentscale.chaos.toxiproxy_client import ToxiproxyAPI

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "tests" / "support" / "echo_golden.jsonl"
AGENTSCALE = [sys.executable, "-m", "agentscale"]


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start_server(*extra: str) -> Server:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "agent_server.py"),
            "--port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("PORT "), f"target did not start: {line!r}"
    return Server(process, int(line.split()[1]))


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    running = start_server()
    yield running
    running.process.terminate()
    running.process.wait(timeout=10)


@pytest.fixture
def fresh_server() -> Iterator[Server]:
    """A target of one's own, for tests whose timing depends on when it started (stalls)."""
    running = start_server()
    yield running
    running.process.terminate()
    running.process.wait(timeout=10)


def scenario_dict(url: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "agentscale/v1",
        "kind": "Scenario",
        "name": "test",
        "seed": 1,
        "target": {
            "url": url,
            "timeout": "5s",
            "body": {"tenant_id": "{{tenant}}", "input": "{{prompt}}"},
        },
        "workload": {"dataset": "golden.jsonl"},
        "tenants": {"acme": 0.5, "globex": 0.5},
        "load": {"shape": {"kind": "constant", "rps": 20}, "duration": "3s"},
        "pricing": {
            "mock-small": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            "mock-large": {"input_per_mtok": 2.5, "output_per_mtok": 10},
        },
    }
    for dotted, value in changes.items():
        node = document
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return document


def write_scenario(folder: Path, document: dict[str, Any] | str, name: str = "s.yaml") -> Path:
    if not (folder / "golden.jsonl").exists():
        shutil.copyfile(DATASET, folder / "golden.jsonl")
    path = folder / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def agentscale(*args: str, cwd: Path | None = None, timeout: float = 120, env=None) -> Result:
    done = subprocess.run(
        [*AGENTSCALE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Result(done.returncode, done.stdout, done.stderr)


def spawn(*args: str) -> subprocess.Popen[str]:
    """``agentscale ARGS...`` in the background, its output captured as text."""
    return subprocess.Popen(
        [*AGENTSCALE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def only_run(out: Path) -> Path:
    runs = [p for p in out.glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[ToxiproxyAPI]:
    """A toxiproxy-server of the test's own, so that what agentscale leaves can be inspected."""
    from chaoskit import start_toxiproxy

    process, api = start_toxiproxy()
    yield api
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(autouse=True)
def own_state(tmp_path, monkeypatch):
    """Every test records its faults in a state file of its own, never the user's."""
    monkeypatch.setenv("AGENTSCALE_STATE_DIR", str(tmp_path / "state"))
