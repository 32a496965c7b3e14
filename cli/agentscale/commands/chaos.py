"""``agentscale chaos list|apply|status|reset``: fault injection without load."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from agentscale import console
from agentscale.chaos import state
from agentscale.chaos.rig import FaultRig, stage_faults
from agentscale.chaos.scheduler import FaultScheduler
from agentscale.chaos.toxiproxy_client import PREFIX, ToxiproxyAPI, ToxiproxyError, owner_of
from agentscale.config.faults import FaultProfile, Window
from agentscale.config.loader import load_fault_profile
from agentscale.config.scenario import is_loopback, url_problem
from agentscale.demo import DEPENDENCIES
from agentscale.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    Interrupted,
    Location,
)
from agentscale.records.writer import EventLog


def describe(window: Window) -> str:
    if window.toxic is not None:
        attributes = ", ".join(f"{k}={v}" for k, v in window.toxic.attributes().items())
        fault = f"{window.toxic.type}({attributes})"
    elif window.http is not None:
        fault = window.http.summary()
    else:
        fault = "down"
    ramp = f", {len(window.ramp)} ramp step(s)" if window.ramp else ""
    return f"{window.name}: {window.target} {fault} at {window.at:g}s for {window.for_:g}s{ramp}"


def list_profiles(folder: Path) -> int:
    if not folder.is_dir():
        raise ConfigError(
            "no such folder",
            location=Location(folder),
            hint="e.g. agentscale chaos list fault_profiles",
        )
    files = sorted(folder.glob("*.yaml"))
    if not files:
        console.print_line(f"no fault profiles in {folder}")
        return EXIT_OK
    for path in files:
        try:
            profile = load_fault_profile(path, demo_targets=DEPENDENCIES).profile
        except ConfigError as error:
            console.print_line(f"{path}: invalid ({error.message})")
            continue
        console.print_line(f"{path}  ({profile.name})")
        for window in profile.windows:
            console.print_line(f"  {describe(window)}")
    return EXIT_OK


def check_toxiproxy_url(url: str | None, allow_remote: tuple[str, ...]) -> None:
    """A Toxiproxy beyond loopback needs the same explicit allow as a remote target."""
    if url is None:
        return
    full = url if "://" in url else f"http://{url}"
    problem = url_problem(full)
    if problem:
        raise ConfigError(
            f"{url!r}: {problem}", field="--toxiproxy-url", hint="e.g. http://127.0.0.1:8474"
        )
    host = urlsplit(full).hostname or ""
    if not is_loopback(host) and host not in allow_remote:
        raise ConfigError(
            f"{host} is not a loopback address",
            field="--toxiproxy-url",
            hint=f"agentscale stays on 127.0.0.1 unless told: --allow-remote {host}",
        )


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted("stopped by a signal")


def apply(
    path: Path,
    duration: float | None,
    toxiproxy_url: str | None,
    out: Path,
    allow_remote: tuple[str, ...] = (),
) -> int:
    """Apply a profile's windows on their schedule, without load, then undo everything."""
    loaded = load_fault_profile(path, allow_remote=allow_remote, demo_only=DEPENDENCIES)
    check_toxiproxy_url(toxiproxy_url, allow_remote)
    profile: FaultProfile = loaded.profile
    if not profile.dependencies:
        raise ConfigError(
            "this profile declares no dependencies",
            field="dependencies",
            hint="chaos apply needs upstream and listen addresses; profiles for "
            "the demo run with `agentscale load SCENARIO --faults PROFILE`",
        )
    total = duration if duration is not None else profile.last_end
    later = [w.name for w in profile.windows if w.at >= total]
    if later:
        console.print_warning(
            f"--for {total:g}s ends before {len(later)} window(s) start: "
            + ", ".join(later[:5]) + (" ..." if len(later) > 5 else "")
            + "; they are not applied"
        )  # fmt: skip
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
    for name, seen in rig.traffic.items():
        console.print_line(
            f"{name}: {seen['dependency']} got {seen['requests']:,} request(s) in the window; "
            f"{seen['injected']:,} fault(s) injected"
            + (  # only a rate limit refuses
                f" ({seen['rate_limited']:,} of them refused with 429)"
                if seen.get("kind") == "rate_limit" or seen["rate_limited"]
                else ""
            )
        )
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
    live = {e.get("owner") for e in entries if state.owner_alive(e)}
    for entry in entries:
        owner = entry.get("owner")
        held = f"in use by pid {owner}" if owner in live else "left behind (chaos reset removes it)"
        console.print_line(
            f"run {owner} ({held}): toxiproxy {entry.get('toxiproxy_url')}, "
            f"stage pid {entry.get('stage_pid')}"
        )
        control = entry.get("stage_control")
        if control and owner in live:
            try:
                shown = stage_faults(control)
            except (OSError, ValueError) as error:
                console.print_line(f"  HTTP fault stage {control}: not reachable ({error})")
                continue
            console.print_line(f"  HTTP fault stage {control}: {len(shown)} fault(s) in place")
            for line in shown:
                console.print_line(f"    {line}")
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
            owner = owner_of(name)
            console.print_line(
                f"  {name} {proxy['listen']} -> {proxy['upstream']}"
                f" {'enabled' if proxy['enabled'] else 'DISABLED'}"
                f"{'; toxics: ' + toxics if toxics else ''}"
                f"{f'; in use by pid {owner}' if owner in live else '; left behind'}"
            )
    return EXIT_OK


def reset(toxiproxy_url: str | None, everything: bool = False) -> int:
    """Undo what runs that are gone left behind; with ``everything``, live runs' faults too."""
    live = {e["owner"] for e in state.entries() if state.owner_alive(e) and "owner" in e}
    done = state.clean_leftovers(include_live=everything)
    if toxiproxy_url:
        keep = set() if everything else live
        try:
            done += [
                f"removed proxy {n} from {toxiproxy_url}"
                for n in ToxiproxyAPI(toxiproxy_url).remove_ours(keep_owners=keep)
            ]
        except ToxiproxyError as error:
            console.print_warning(f"{toxiproxy_url}: {error}")
            return EXIT_FAILED
    if live and not everything:
        owners = ", ".join(str(pid) for pid in sorted(live))
        console.print_line(
            f"left in place: the faults of live run(s) {owners} (--all removes them)"
        )
    for line in done:
        console.print_line(line)
    stuck = [e for e in state.entries() if everything or not state.owner_alive(e)]
    if stuck:
        console.print_warning(
            f"{len(stuck)} record(s) of faults could not be undone and are kept for the next "
            "try (see above)"
        )
        return EXIT_FAILED
    console.print_line("nothing left to undo" if not done else "done")
    return EXIT_OK
