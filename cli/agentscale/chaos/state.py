"""What agentscale has put in place for faults, on disk, so that a run killed with -9 is cleaned
up by the next run or by ``agentscale chaos reset``."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import orjson
import psutil

from agentscale.chaos.toxiproxy_client import ToxiproxyAPI, ToxiproxyError
from agentscale.records.runfolder import write_json

ENV = "AGENTSCALE_STATE_DIR"


def state_path() -> Path:
    base = os.environ.get(ENV) or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "agentscale"
    )
    return Path(base) / "chaos.json"


def _read() -> list[dict[str, Any]]:
    try:
        entries = orjson.loads(state_path().read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _write(entries: list[dict[str, Any]]) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, entries)


def record(entry: dict[str, Any]) -> None:
    """Remember (or update) this process's fault set-up: owner pid, servers, processes."""
    entries = [e for e in _read() if e.get("owner") != entry["owner"]]
    _write([*entries, entry])


def forget(owner: int) -> None:
    _write([e for e in _read() if e.get("owner") != owner])


def entries() -> list[dict[str, Any]]:
    return _read()


def _alive(pid: int | None, needle: str) -> bool:
    if not pid:
        return False
    try:
        return needle in " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return False


def clean_leftovers(*, include_live: bool = False) -> list[str]:
    """Undo what runs that are gone left behind (and, with ``include_live``, what running ones
    hold). Returns what was done, for the user."""
    done = []
    kept = []
    for entry in _read():
        owner = entry.get("owner")
        if not include_live and owner != os.getpid() and _alive(owner, "agentscale"):
            kept.append(entry)
            continue
        for pid, needle, what in (
            (entry.get("stage_pid"), "agentscale.chaos.stage", "HTTP fault stage"),
            (entry.get("managed_pid"), "toxiproxy-server", "toxiproxy-server"),
        ):
            if isinstance(pid, int) and _alive(pid, needle):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
                    done.append(f"stopped the {what} of run {owner} (pid {pid})")
        url = entry.get("toxiproxy_url")
        if url and not entry.get("managed_pid"):
            # Someone else's server: remove just the proxies this run made (names carry the
            # owner's pid), toxics and all; everything else on it is theirs.
            api = ToxiproxyAPI(url)
            with contextlib.suppress(ToxiproxyError):
                present = api.proxies()
                for name in entry.get("proxies", []):
                    if name in present:
                        api.delete_proxy(name)
                        done.append(f"removed proxy {name} from {url}")
    _write(kept)
    return done
