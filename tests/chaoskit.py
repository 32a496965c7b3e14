"""Helpers for the tests that drive faults: a toxiproxy-server of the test's own, profiles,
runs started in the background, and ways to see what they left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from agentscale.chaos.server import find_binary, free_port
from agentscale.chaos.toxiproxy_client import PREFIX, ToxiproxyAPI
from conftest import ROOT, spawn


def start_toxiproxy() -> tuple[subprocess.Popen, ToxiproxyAPI]:
    binary = find_binary()
    if binary is None:
        pytest.fail("toxiproxy-server is missing: run `make setup` (it installs it)")
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "-host", "127.0.0.1", "-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = ToxiproxyAPI(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            api.version()
            break
        except Exception:
            time.sleep(0.05)
    return process, api


def ours(api: ToxiproxyAPI) -> dict:
    return {name: p for name, p in api.proxies().items() if name.startswith(PREFIX)}


def profile(tmp_path: Path, dependency: dict | None, windows: list[dict], name="p.yaml") -> Path:
    document = {
        "apiVersion": "agentscale/v1",
        "kind": "FaultProfile",
        "name": "test",
        "seed": 5,
        "windows": windows,
    }
    if dependency is not None:
        document["dependencies"] = [dependency]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def echo_dependency(server, protocol="tcp") -> tuple[dict, str]:
    listen = f"127.0.0.1:{free_port(below=32768)}"
    return (
        {
            "name": "echo",
            "upstream": f"127.0.0.1:{server.port}",
            "listen": listen,
            "protocol": protocol,
        },
        listen,
    )


def apply_in_background(tmp_path, path: Path, api: ToxiproxyAPI, *extra: str):
    out = tmp_path / "out"
    process = spawn("chaos", "apply", str(path), "--toxiproxy-url", api.url, "--out", str(out),
                    *extra)  # fmt: skip
    return process, out


def events_in(folder: Path) -> list[dict]:
    return [
        json.loads(line)
        for events in folder.glob("**/events.jsonl")
        for line in events.read_text().splitlines()
    ]


def wait_for_event(
    out: Path, kind: str, window: str | None = None, timeout: float = 15, count: int = 1
) -> dict:
    """The ``count``-th event of ``kind`` (for ``window``) in any events.jsonl under ``out``,
    once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            event
            for events in out.glob("**/events.jsonl")
            for event in map(json.loads, events.read_text().splitlines())
            if event["type"] == kind and window in (None, event.get("window"))
        ]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.02)
    raise AssertionError(f"no {kind} for {window}")


def get(url: str, timeout: float = 5) -> tuple[int, float]:
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            code = response.status
    except urllib.error.HTTPError as error:
        code = error.code
    return code, (time.perf_counter() - began) * 1000


def retry_get(url: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        try:
            return get(url)[0]
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def demo_scenario(tmp_path: Path, seconds: int = 16) -> Path:
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios", dirs_exist_ok=True)
    path = tmp_path / "scenarios" / "chaos.yaml"
    text = (ROOT / "scenarios" / "smoke.yaml").read_text()
    text = text.replace("time_scale: 1.0", "time_scale: 0.2").replace("rps: 10", "rps: 20")
    path.write_text(text.replace("duration: 20s", f"duration: {seconds}s"))
    return path


def crm_503(tmp_path: Path, at: str = "5s", seconds: str = "6s") -> Path:
    return profile(
        tmp_path,
        None,
        [
            {
                "name": "crm_503",
                "target": "crm_lookup",
                "at": at,
                "for": seconds,
                "http": {"status": 503, "rate": 1.0, "retry_after": 1},
            }
        ],
        name="crm.yaml",
    )


def start_load(tmp_path, api, *, at, seconds, duration, faults=None):
    scenario = demo_scenario(tmp_path, seconds=duration)
    out = tmp_path / "r"
    faults = faults or crm_503(tmp_path, at, seconds)
    process = spawn("load", str(scenario), "--faults", str(faults), "--toxiproxy-url", api.url,
                    "--out", str(out))  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = list(out.glob("*/*"))
        if runs:
            return process, runs[0]
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the run did not start")


def is_helper(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return "agentscale.chaos.stage" in command or "agentscale.demo" in command


def stopped(processes: list[psutil.Process], timeout: float) -> bool:
    """All exited (an orphan that exited may stay a zombie: pid 1 here need not reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = []
        for process in processes:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    running.append(process)
            except psutil.NoSuchProcess:
                pass
        if not running:
            return True
        time.sleep(0.1)
    return False


def orphaned_helpers() -> set[int]:
    found = set()
    for process in psutil.process_iter(["ppid", "status"]):
        orphan = process.info["ppid"] == 1 and process.info["status"] != psutil.STATUS_ZOMBIE
        if orphan and (is_helper(process) or "toxiproxy-server" in " ".join(process.cmdline())):
            found.add(process.pid)
    return found
