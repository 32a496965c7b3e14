"""The fault plumbing of one run: Toxiproxy proxies (and the HTTP stage for HTTP
dependencies) between the agent and its dependencies; faults applied, changed and removed on
request; everything agentscale made removed by ``close``, whatever happened before."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agentscale.chaos import state
from agentscale.chaos.retry import ControlError, retried
from agentscale.chaos.server import INSTALL_HINT, ManagedToxiproxy, find_binary, free_port
from agentscale.chaos.toxiproxy_client import PREFIX, ToxiproxyAPI, ToxiproxyError
from agentscale.config.faults import Fault, FaultProfile, HttpFault, ToxicBase, Window
from agentscale.errors import RunInvalid
from agentscale.processes import stop

LISTEN_BELOW = 32768


@dataclass
class Route:
    name: str
    protocol: str
    agent_address: str  # what the agent calls: the stage (http) or the Toxiproxy proxy (tcp)
    proxy_listen: str  # the Toxiproxy proxy's own address
    upstream: str | None = None


def stage_faults(control: str) -> list[str]:
    """What a running HTTP fault stage has in place, a line each (for ``chaos status``)."""
    with urllib.request.urlopen(f"http://{control}/faults", timeout=2) as response:
        shown = orjson.loads(response.read() or b"{}")
    lines = []
    for dependency, fault in sorted(shown.get("faults", {}).items()):
        known = {k: v for k, v in fault.items() if k in HttpFault.model_fields}
        try:  # the stage holds what the rig validated and sent: construct, not validate
            what = HttpFault.model_construct(**known).summary()
        except (AttributeError, TypeError, ValueError):  # a stage of another version
            what = f"http {fault.get('kind')}"
        lines.append(f"{dependency}: {what} (window {fault.get('window')})")
    lines += [f"{dependency}: down (connections refused)" for dependency in shown.get("down", [])]
    return lines


class FaultRig:
    def __init__(
        self,
        profile: FaultProfile,
        run_dir: Path,
        toxiproxy_url: str | None = None,
        demo_dependencies: tuple[str, ...] = (),
    ) -> None:
        self.profile = profile
        self.run_dir = run_dir
        self.toxiproxy_url = toxiproxy_url
        self.owner = os.getpid()
        self.managed: ManagedToxiproxy | None = None
        self.api: ToxiproxyAPI | None = None
        self.stage: subprocess.Popen[bytes] | None = None
        self.stage_control: str | None = None
        self.routes: dict[str, Route] = {}
        self.applied: dict[str, Window] = {}
        # Per http window, once removed: what its dependency got meanwhile (requests, 429s).
        self.traffic: dict[str, dict[str, Any]] = {}
        self.demo_dependencies = demo_dependencies
        self.ports: list[int] = []

    def proxy_name(self, dependency: str) -> str:
        return f"{PREFIX}{self.owner}-{dependency}"

    # --- set-up -----------------------------------------------------------------------------
    def _plan_routes(self) -> None:
        """Where each dependency's traffic goes: the HTTP stage (for HTTP), then Toxiproxy.
        The ports agentscale picks are reserved in the state file."""
        declared = {d.name: d for d in self.profile.dependencies}
        # Every declared dependency goes through its proxy, faulted or not, so that a run
        # without windows measures the same path as a run with them.
        targets = sorted({w.target for w in self.profile.windows} | set(declared))
        demo = [n for n in targets if n not in declared and n in self.demo_dependencies]
        http = [n for n in targets if n in declared and declared[n].protocol == "http"]
        self.ports = state.reserve_ports(
            self.owner,
            len(http) + 2 * len(demo),
            lambda taken: free_port(below=LISTEN_BELOW, avoid=taken),
        )
        ports = iter(self.ports)
        for name in targets:
            if name in declared:
                dep = declared[name]
                if dep.protocol == "http":
                    inner = f"127.0.0.1:{next(ports)}"
                    self.routes[name] = Route(name, "http", dep.listen, inner, dep.upstream)
                else:
                    self.routes[name] = Route(name, "tcp", dep.listen, dep.listen, dep.upstream)
            elif name in demo:  # the demo's dependencies all speak HTTP
                stage, inner = f"127.0.0.1:{next(ports)}", f"127.0.0.1:{next(ports)}"
                self.routes[name] = Route(name, "http", stage, inner)

    def prepare(self) -> dict[str, str]:
        """Start (or reach) Toxiproxy; returns where the agent must send each dependency."""
        state.clean_leftovers()
        self._plan_routes()
        if self.toxiproxy_url:
            self.api = ToxiproxyAPI(self.toxiproxy_url)
            try:
                self.api.version()
            except ToxiproxyError as error:
                raise RunInvalid(
                    f"toxiproxy-server at {self.toxiproxy_url} does not answer",
                    hint=f"{error}; is it running?",
                ) from None
        else:
            binary = find_binary()
            if binary is None:
                raise RunInvalid("toxiproxy-server not found", hint=INSTALL_HINT)
            self.managed = ManagedToxiproxy(binary, self.run_dir / "toxiproxy.log")
            self.api = self.managed.start()
        self._remember()
        return {name: route.agent_address for name, route in self.routes.items()}

    def connect(self, upstreams: dict[str, str] | None = None) -> None:
        """Create the proxies (for the demo, once its services listen) and start the stage."""
        assert self.api is not None
        for name, route in self.routes.items():
            upstream = route.upstream or (upstreams or {}).get(name)
            if upstream is None:
                raise RunInvalid(f"no upstream address for dependency {name}")
            route.upstream = upstream
            try:
                self.api.create_proxy(self.proxy_name(name), route.proxy_listen, upstream)
            except ToxiproxyError as error:
                raise RunInvalid(
                    f"could not put a proxy for {name} on {route.proxy_listen}: {error}",
                    hint="is another process listening there? `agentscale chaos status` shows "
                    "what agentscale holds",
                ) from None
        self._remember()
        http = [r for r in self.routes.values() if r.protocol == "http"]
        if http:
            self._start_stage(http)
        self._remember()

    def _start_stage(self, routes: list[Route]) -> None:
        command = [
            sys.executable, "-m", "agentscale.chaos.stage", "--seed", str(self.profile.seed),
            "--record", str(self.run_dir),
        ]  # fmt: skip
        for route in routes:
            command += ["--listen", f"{route.name}={route.agent_address}={route.proxy_listen}"]
        with (self.run_dir / "stage.log").open("ab") as log:
            self.stage = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.stage.stdout is not None
        ready, _, _ = select.select([self.stage.stdout], [], [], 20)
        line = self.stage.stdout.readline() if ready else b""
        try:
            self.stage_control = orjson.loads(line)["control"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise RunInvalid(
                "the HTTP fault stage did not start", hint=f"see {self.run_dir / 'stage.log'}"
            ) from None

    def _remember(self) -> None:
        managed = self.managed.process if self.managed else None
        state.record(
            {
                "owner": self.owner,
                "owner_started": state.started_at(self.owner),
                "toxiproxy_url": self.api.url if self.api else self.toxiproxy_url,
                "managed_pid": managed.pid if managed else None,
                "managed_started": state.started_at(managed.pid) if managed else None,
                "stage_pid": self.stage.pid if self.stage else None,
                "stage_started": state.started_at(self.stage.pid) if self.stage else None,
                "stage_control": self.stage_control,
                "proxies": [self.proxy_name(n) for n in self.routes],
                "ports": self.ports,
            }
        )

    # --- faults -------------------------------------------------------------------------------
    def apply(self, window: Window, fault: Fault) -> None:
        """Put ``fault`` (the window's first state, or a ramp step's) in place."""
        assert self.api is not None
        proxy = self.proxy_name(window.target)
        if isinstance(fault, ToxicBase):
            if window.name in self.applied:
                self.api.update_toxic(proxy, window.name, fault.attributes())
            else:
                self.api.add_toxic(
                    proxy,
                    window.name,
                    fault.model_dump()["type"],
                    fault.stream,
                    fault.toxicity,
                    fault.attributes(),
                )
        elif isinstance(fault, HttpFault):
            wanted = {**fault.model_dump(), "window": window.name}
            self._stage("PUT", f"/faults/{window.target}", wanted)
            shown = self._stage("GET", "/faults")["faults"].get(window.target, {})
            if any(shown.get(k) != wanted[k] for k in ("kind", "status", "rate", "window")):
                raise ToxiproxyError(f"the HTTP stage does not show the fault on {window.target}")
        else:  # down
            self.api.set_enabled(proxy, False)
            if self.routes[window.target].protocol == "http":
                self._stage("PUT", f"/down/{window.target}", {})
                self._stage_shows_down(window.target, True)
        self.applied[window.name] = window

    def remove(self, window: Window) -> None:
        assert self.api is not None
        proxy = self.proxy_name(window.target)
        if window.toxic is not None:
            self.api.remove_toxic(proxy, window.name)
        elif window.http is not None:
            self._stage("DELETE", f"/faults/{window.target}")
            found = self._stage("GET", "/faults").get("traffic", {}).get(window.name)
            if found is not None:
                self.traffic[window.name] = found
        else:
            self.api.set_enabled(proxy, True)
            if self.routes[window.target].protocol == "http":
                self._stage("DELETE", f"/down/{window.target}")
                self._stage_shows_down(window.target, False)
        self.applied.pop(window.name, None)

    def _stage_shows_down(self, name: str, down: bool) -> None:
        if (name in self._stage("GET", "/faults").get("down", [])) is not down:
            raise ToxiproxyError(
                f"the HTTP stage does not show {name} as {'down' if down else 'up'}"
            )

    def _stage(self, method: str, path: str, body: Any = None) -> Any:
        if self.stage_control is None:
            raise ToxiproxyError("the HTTP fault stage is not running")
        data = orjson.dumps(body) if body is not None else None
        request = urllib.request.Request(
            f"http://{self.stage_control}{path}", data=data, method=method
        )

        def once() -> Any:
            with urllib.request.urlopen(request, timeout=2) as response:
                return orjson.loads(response.read() or b"{}")

        try:
            return retried(once, f"HTTP stage {method} {path}", (OSError, TimeoutError))
        except ControlError as error:
            raise ToxiproxyError(str(error)) from None

    # --- tear-down ------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Remove every fault and proxy agentscale made, stop what it started. Never raises:
        it runs on every exit path; what it could not undo is returned (and kept on record for
        the next run and ``agentscale chaos reset``)."""
        problems = []
        for window in list(self.applied.values()):
            try:
                self.remove(window)
            except (ToxiproxyError, RunInvalid) as error:
                problems.append(f"{window.name}: {error}")
        if self.api is not None and self.managed is None:
            for name in self.routes:
                try:
                    self.api.delete_proxy(self.proxy_name(name))
                except ToxiproxyError as error:
                    problems.append(f"proxy {name}: {error}")
        stop(self.stage)
        if self.managed is not None:
            self.managed.stop()
        if not problems:
            state.forget(self.owner)
        return problems
