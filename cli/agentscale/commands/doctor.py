"""``agentscale doctor``: what agentscale needs, found or not, and how to fix what is not."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from agentscale import console
from agentscale.chaos import state
from agentscale.chaos.server import INSTALL_HINT, ManagedToxiproxy, find_binary, free_port
from agentscale.errors import EXIT_FAILED, EXIT_OK
from agentscale.records.runfolder import versions


def doctor() -> int:
    problems = 0

    def check(ok: bool, what: str, fix: str = "") -> None:
        nonlocal problems
        problems += 0 if ok else 1
        console.print_line(
            f"{'ok ' if ok else 'FAIL'} {what}" + (f"\n     fix: {fix}" if not ok and fix else "")
        )

    found = versions()
    check(
        tuple(map(int, platform.python_version_tuple()[:2])) >= (3, 11),
        f"python {found['python']}",
        "use Python 3.11 or newer",
    )
    for package in ("locust", "pandas", "pyarrow", "pydantic", "gevent"):
        check(
            found[package] != "not installed",
            f"{package} {found[package]}",
            "run `make setup` (or pip install -e .)",
        )
    binary = find_binary()
    if binary is None:
        check(False, "toxiproxy-server not found", INSTALL_HINT)
    else:
        version = (
            _built_version(binary)
            or subprocess.run(
                [str(binary), "-version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        )
        check(True, f"toxiproxy-server at {binary} ({version or 'version unknown'})")
        try:
            managed = ManagedToxiproxy(binary, Path("/dev/null"))
            managed.start()
            managed.stop()
            check(True, "toxiproxy-server starts on 127.0.0.1")
        except Exception as error:  # the server's own failure, told as is
            check(False, f"toxiproxy-server does not start: {error}", INSTALL_HINT)
    try:
        port = free_port(below=32768)
        check(True, f"free listen ports below 32768 on 127.0.0.1 (e.g. {port})")
    except Exception:
        check(False, "no free port below 32768 on 127.0.0.1", "stop what holds them")
    entries = state.entries()
    live = sorted(e["owner"] for e in entries if "owner" in e and state.owner_alive(e))
    leftovers = [e for e in entries if not state.owner_alive(e)]
    check(not leftovers, "no faults left behind by earlier runs", "run `agentscale chaos reset`")
    if live:
        # A run going on now holds its faults: in use, not left behind.
        console.print_line(f"     faults in use by running agentscale pid(s) {live}")
    return EXIT_OK if problems == 0 else EXIT_FAILED


def version() -> int:
    """``agentscale version``: agentscale's and what it drives."""
    for package, found in versions().items():
        console.print_line(f"{package} {found}")
    return EXIT_OK


def _built_version(binary: Path) -> str | None:
    """The module version Go recorded in the binary (``go install ...@v2.12.0`` builds one
    whose own -version says only "git")."""
    try:
        found = subprocess.run(
            ["go", "version", "-m", str(binary)], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in found.splitlines():
        parts = line.split()
        if parts[:1] == ["mod"] and len(parts) >= 3:
            return f"{parts[1]} {parts[2]}"
    return None
