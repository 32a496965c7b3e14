"""``agentscale chaos list|apply|status|reset`` and ``agentscale doctor``."""

from __future__ import annotations

import platform
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from agentscale import console
from agentscale.chaos import state
from agentscale.chaos.loading import load_fault_profile
from agentscale.chaos.profile import FaultProfile, Window
from agentscale.chaos.rig import FaultRig
from agentscale.chaos.scheduler import FaultScheduler
from agentscale.chaos.server import INSTALL_HINT, ManagedToxiproxy, find_binary, free_port
from agentscale.chaos.toxiproxy_client import PREFIX, ToxiproxyAPI, ToxiproxyError
from agentscale.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError, Interrupted
from agentscale.records import EventLog
from agentscale.runfolder import versions


def describe(window: Window) -> str:
    if window.toxic is not None:
        attributes = ", ".join(f"{k}={v}" for k, v in window.toxic.attributes().items())
        fault = f"{window.toxic.type}({attributes})"
    elif window.http is not None:
        fault = f"http {window.http.status} at rate {window.http.rate:g}"
    else:
        fault = "down"
    ramp = f", {len(window.ramp)} ramp step(s)" if window.ramp else ""
    return f"{window.name}: {window.target} {fault} at {window.at:g}s for {window.for_:g}s{ramp}"


def list_profiles(folder: Path) -> int:
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        console.print_line(f"no fault profiles in {folder}")
        return EXIT_OK
    for path in files:
        try:
            profile = load_fault_profile(path, demo_targets=_demo()).profile
        except ConfigError as error:
            console.print_line(f"{path}: invalid ({error.message})")
            continue
        console.print_line(f"{path}  ({profile.name})")
        for window in profile.windows:
            console.print_line(f"  {describe(window)}")
    return EXIT_OK


def _demo() -> tuple[str, ...]:
    from agentscale.demo.settings import DEPENDENCIES

    return DEPENDENCIES


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted("stopped by a signal")


def apply(path: Path, duration: float | None, toxiproxy_url: str | None, out: Path) -> int:
    """Apply a profile's windows on their schedule, without load, then undo everything."""
    loaded = load_fault_profile(path)
    profile: FaultProfile = loaded.profile
    if not profile.dependencies:
        raise ConfigError(
            "this profile declares no dependencies",
            field="dependencies",
            hint="chaos apply needs upstream and listen addresses; profiles for "
            "the demo run with `agentscale load SCENARIO --faults PROFILE`",
        )
    total = duration if duration is not None else profile.last_end
    folder = out / "chaos" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    rig = FaultRig(profile, folder, toxiproxy_url)
    scheduler = None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        rig.prepare()
        rig.connect()
        for name, route in rig.routes.items():
            console.print_line(
                f"{name}: point the agent at {route.agent_address} (-> {route.upstream})"
            )
        scheduler = FaultScheduler(rig, profile, EventLog(folder / "events.jsonl", time.time()))
        scheduler.start(time.time())
        console.print_line(f"applying {profile.name} for {total:g}s; Ctrl-C undoes it")
        time.sleep(total)
        code = EXIT_OK
    except (KeyboardInterrupt, Interrupted):
        code = EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        if scheduler is not None:
            scheduler.stop()
        leftovers = rig.close()
    for item in leftovers:
        console.print_warning(f"could not undo {item}")
    failures = scheduler.failures if scheduler else []
    for failure in failures:
        console.print_warning(failure)
    console.print_line(
        f"all faults removed; events in {folder / 'events.jsonl'}"
        if not leftovers
        else "some faults could not be removed"
    )
    return code if not (failures or leftovers) or code else EXIT_FAILED


def status(toxiproxy_url: str | None) -> int:
    entries = state.entries()
    urls = {e.get("toxiproxy_url") for e in entries} | ({toxiproxy_url} if toxiproxy_url else set())
    if not entries and not toxiproxy_url:
        console.print_line("no faults made by agentscale are in place")
        return EXIT_OK
    for entry in entries:
        console.print_line(
            f"run {entry.get('owner')}: toxiproxy {entry.get('toxiproxy_url')}, "
            f"stage pid {entry.get('stage_pid')}"
        )
    for url in sorted(u for u in urls if u):
        try:
            proxies = ToxiproxyAPI(url).proxies()
        except ToxiproxyError as error:
            console.print_line(f"{url}: not reachable ({error})")
            continue
        ours = {n: p for n, p in proxies.items() if n.startswith(PREFIX)}
        console.print_line(f"{url}: {len(ours)} proxy(ies) made by agentscale")
        for name, proxy in ours.items():
            toxics = ", ".join(f"{t['name']}({t['type']})" for t in proxy.get("toxics", []))
            console.print_line(
                f"  {name} {proxy['listen']} -> {proxy['upstream']}"
                f" {'enabled' if proxy['enabled'] else 'DISABLED'}"
                f"{'; toxics: ' + toxics if toxics else ''}"
            )
    return EXIT_OK


def reset(toxiproxy_url: str | None) -> int:
    done = state.clean_leftovers(include_live=True)
    if toxiproxy_url:
        try:
            done += [
                f"removed proxy {n} from {toxiproxy_url}"
                for n in ToxiproxyAPI(toxiproxy_url).remove_ours()
            ]
        except ToxiproxyError as error:
            console.print_warning(f"{toxiproxy_url}: {error}")
            return EXIT_FAILED
    for line in done:
        console.print_line(line)
    console.print_line("nothing left to undo" if not done else "done")
    return EXIT_OK


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
        version = subprocess.run(
            [str(binary), "-version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
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
    leftovers = state.entries()
    check(not leftovers, "no faults left behind by earlier runs", "run `agentscale chaos reset`")
    return EXIT_OK if problems == 0 else EXIT_FAILED
