"""What agentscale has put in place for faults, on disk, so that a run killed with -9 is cleaned
up by the next run or by ``agentscale chaos reset``.

One JSON file, changed only under a file lock: two runs never lose each other's records. A
process is named by its pid *and* its start time, so a pid the system has given to another
process since is never taken for ours (and never signalled).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypedDict, cast

import orjson
import psutil
from filelock import FileLock

from agentscale.chaos.toxiproxy_client import ToxiproxyAPI, ToxiproxyError
from agentscale.records.runfolder import read_run, write_json, write_run

ENV = "AGENTSCALE_STATE_DIR"


class Entry(TypedDict, total=False):
    owner: int  # the agentscale process that made it
    owner_started: float | None  # its start time (psutil's create_time)
    toxiproxy_url: str | None
    managed_pid: int | None  # a toxiproxy-server agentscale started
    managed_started: float | None
    stage_pid: int | None  # the HTTP fault stage
    stage_started: float | None
    stage_control: str | None  # host:port of the stage's control API (chaos status asks it)
    proxies: list[str]
    ports: list[int]  # listen ports handed out to this run's proxies and stages
    run_dir: str | None  # runs.json: the run folder whose run.json says "running"


def state_path() -> Path:
    base = os.environ.get(ENV) or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "agentscale"
    )
    return Path(base) / "chaos.json"


def runs_path() -> Path:
    """Runs going, by process: a run killed with -9 cannot say so in its run.json itself."""
    return state_path().with_name("runs.json")


@contextlib.contextmanager
def _locked(path: Path | None = None) -> Iterator[list[Entry]]:
    """The entries, to read and change in place; written back when the block ends."""
    path = path or state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state_path()) + ".lock", timeout=30):
        entries = _read(path)
        before = list(entries)
        yield entries
        if entries != before:
            write_json(path, entries)


def _read(path: Path) -> list[Entry]:
    try:
        found = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    return [cast(Entry, e) for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def started_at(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def alive(pid: int | None, started: float | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started``."""
    if not pid:
        return False
    now = started_at(pid)
    return now is not None and started is not None and abs(now - started) < 0.5


def record(entry: Entry) -> None:
    """Remember (or update) this process's fault set-up: owner, servers, processes, ports."""
    with _locked() as entries:
        entries[:] = [e for e in entries if e.get("owner") != entry["owner"]]
        entries.append(entry)


def forget(owner: int) -> None:
    with _locked() as entries:
        entries[:] = [e for e in entries if e.get("owner") != owner]


def entries() -> list[Entry]:
    with _locked() as found:
        return list(found)


def owner_alive(entry: Entry) -> bool:
    return alive(entry.get("owner"), entry.get("owner_started"))


def reserve_ports(owner: int, count: int, pick: Callable[[set[int]], int]) -> list[int]:
    """``count`` listen ports for ``owner``'s proxies and stages, none that another live run
    holds: chosen and recorded under the lock, so two runs starting at once never collide."""
    with _locked() as found:
        taken = {p for e in found if e.get("owner") != owner and owner_alive(e)
                 for p in e.get("ports", [])}  # fmt: skip
        ports = []
        for _ in range(count):
            ports.append(pick(taken))
            taken.add(ports[-1])
        mine = next((e for e in found if e.get("owner") == owner), None)
        if mine is None:
            mine = {"owner": owner, "owner_started": started_at(owner), "proxies": []}
            found.append(mine)
        mine["ports"] = [*mine.get("ports", []), *ports]
    return ports


def register_run(run_dir: Path) -> None:
    owner = os.getpid()
    with _locked(runs_path()) as found:
        found.append({"owner": owner, "owner_started": started_at(owner), "run_dir": str(run_dir)})


def release_run(run_dir: Path) -> None:
    with _locked(runs_path()) as found:
        found[:] = [e for e in found if e.get("run_dir") != str(run_dir)]


def _close_dead_runs(done: list[str]) -> None:
    """A run whose process is gone but whose run.json still says "running" was killed: its
    run.json says so now (``failed``, verdict invalid), so it is never mistaken for one going."""
    with _locked(runs_path()) as found:
        kept: list[Entry] = []
        for entry in found:
            if owner_alive(entry) or not entry.get("run_dir"):
                kept.append(entry)
                continue
            run_dir = Path(str(entry["run_dir"]))
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                info = read_run(run_dir)
                if info.get("status") == "running":
                    reason = f"the agentscale process (pid {entry.get('owner')}) was killed"
                    info["status"] = "failed"
                    info["verdict"] = {"result": "invalid", "reasons": [reason]}
                    write_run(run_dir, info)
                    done.append(f"marked run {run_dir} as failed: {reason}")
        found[:] = kept


def clean_leftovers(*, include_live: bool = False) -> list[str]:
    """Undo what runs that are gone left behind (with ``include_live``, what running ones hold
    too). A record whose proxies could not be removed (their Toxiproxy does not answer) is
    kept for the next try. Returns what was done, for the user."""
    done: list[str] = []
    with _locked() as found:
        kept: list[Entry] = []
        for entry in found:
            owner = entry.get("owner")
            mine = owner == os.getpid()
            if not include_live and not mine and owner_alive(entry):
                kept.append(entry)
                continue
            if not _undo(entry, done):
                kept.append(entry)
        found[:] = kept
    _close_dead_runs(done)
    return done


def _undo(entry: Entry, done: list[str]) -> bool:
    """Stop the processes of ``entry`` and remove its proxies; False if some are left."""
    owner = entry.get("owner")
    for pid, started, what in (
        (entry.get("stage_pid"), entry.get("stage_started"), "HTTP fault stage"),
        (entry.get("managed_pid"), entry.get("managed_started"), "toxiproxy-server"),
    ):
        if pid is not None and alive(pid, started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
                done.append(f"stopped the {what} of run {owner} (pid {pid})")
    url = entry.get("toxiproxy_url")
    if not url or entry.get("managed_pid"):
        return True  # our own server went with its process, proxies and all
    # Someone else's server: remove just the proxies this run made (names carry the owner's
    # pid), toxics and all; everything else on it is theirs.
    api = ToxiproxyAPI(url)
    try:
        present = api.proxies()
        for name in entry.get("proxies", []):
            if name in present:
                api.delete_proxy(name)
                done.append(f"removed proxy {name} from {url}")
    except ToxiproxyError as error:
        done.append(f"could not reach {url} to remove run {owner}'s proxies ({error}); kept")
        return False
    return True
