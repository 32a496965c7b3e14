"""The Toxiproxy API through toxiproxy-python: the only module that imports toxiproxy.

toxiproxy-python keeps the server's address on a class and sets no timeouts, so every call
here goes through its ``APIConsumer`` with an explicit timeout. The server can answer 503
under load: a change is retried, then verified with a read, before it counts as applied.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from agentscale.chaos.retry import ATTEMPTS, ControlError, retried

CALL_TIMEOUT_S = 2.0
PREFIX = "agentscale-"  # every proxy agentscale makes is named so; reset removes only these


class ToxiproxyError(ControlError):
    pass


class ToxiproxyRefused(ToxiproxyError):
    """The server will never take this change (HTTP 400): an attribute out of its range."""


class _Busy(Exception):
    """The server answered 5xx: it may take the call a moment later."""


class ToxiproxyAPI:
    """One server's API. toxiproxy-python keeps the address on its ``APIConsumer`` class; each
    instance here has a subclass of its own holding its address, so that threads (the fault
    scheduler beside the main thread) and servers never share one."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.url = f"http://{parts.hostname}:{parts.port or 8474}"
        host, port = parts.hostname or "127.0.0.1", parts.port or 8474
        self.consumer: type[APIConsumer] = type(
            "AgentscaleConsumer", (APIConsumer,), {"host": host, "port": port}
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        caller = getattr(self.consumer, method)

        def once() -> requests.Response:
            try:
                response: requests.Response = caller(path, timeout=CALL_TIMEOUT_S, **kwargs)
            except InvalidToxic as refused:
                # HTTP 400: the server will never take this change; say what it said.
                raise ToxiproxyRefused(f"{method.upper()} {path}: {_text(refused)}") from None
            if response.status_code >= 500:
                raise _Busy(f"HTTP {response.status_code}: {response.text.strip()[:200]}")
            return response

        try:
            return retried(
                once,
                f"{method.upper()} {path}",
                (requests.ConnectionError, requests.Timeout, _Busy),
            )
        except ControlError as error:
            raise ToxiproxyError(str(error)) from None

    def _verified(self, change: Callable[[], object], check: Callable[[], bool], what: str) -> None:
        """Make a change; if the call failed or its effect is not there, try again. A change
        the server refuses outright (HTTP 400) is not tried again."""
        said = "the server does not show the change"
        for _ in range(ATTEMPTS):
            with contextlib.suppress(NotFound, ProxyExists):
                try:
                    change()
                except ToxiproxyRefused:
                    raise
                except ToxiproxyError as error:
                    said = str(error)  # what the server answered, for the final message
            try:
                if check():
                    return
            except ToxiproxyError:
                pass
            time.sleep(0.05)
        raise ToxiproxyError(f"could not {what}: {said}")

    # --- reads --------------------------------------------------------------------------------
    def version(self) -> str:
        return self._call("get", "/version").text.strip()

    def proxies(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self._call("get", "/proxies").json()
        return found

    def proxy(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._call("get", f"/proxies/{name}").json()
        except NotFound:
            return None
        return found

    def _toxic_names(self, proxy: str) -> set[str]:
        found = self.proxy(proxy)
        return {t["name"] for t in (found or {}).get("toxics", [])}

    # --- changes, each verified -------------------------------------------------------------
    def create_proxy(self, name: str, listen: str, upstream: str) -> None:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        self._verified(
            lambda: self._call("post", "/proxies", json=body),
            lambda: (self.proxy(name) or {}).get("upstream") == upstream,
            f"create proxy {name}",
        )

    def delete_proxy(self, name: str) -> None:
        self._verified(
            lambda: self._call("delete", f"/proxies/{name}"),
            lambda: self.proxy(name) is None,
            f"delete proxy {name}",
        )

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._verified(
            lambda: self._call("post", f"/proxies/{name}", json={"enabled": enabled}),
            lambda: (self.proxy(name) or {}).get("enabled") is enabled,
            f"{'enable' if enabled else 'disable'} proxy {name}",
        )

    def add_toxic(
        self,
        proxy: str,
        name: str,
        kind: str,
        stream: str,
        toxicity: float,
        attributes: dict[str, Any],
    ) -> None:
        body = {
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        self._verified(
            lambda: self._call("post", f"/proxies/{proxy}/toxics", json=body),
            lambda: name in self._toxic_names(proxy),
            f"add toxic {name} to {proxy}",
        )

    def update_toxic(self, proxy: str, name: str, attributes: dict[str, Any]) -> None:
        def applied() -> bool:
            toxics = (self.proxy(proxy) or {}).get("toxics", [])
            found = next((t for t in toxics if t["name"] == name), None)
            return found is not None and all(
                found["attributes"].get(k) == v for k, v in attributes.items()
            )

        self._verified(
            lambda: self._call(
                "post", f"/proxies/{proxy}/toxics/{name}", json={"attributes": attributes}
            ),
            applied,
            f"update toxic {name} on {proxy}",
        )

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._verified(
            lambda: self._call("delete", f"/proxies/{proxy}/toxics/{name}"),
            lambda: name not in self._toxic_names(proxy),
            f"remove toxic {name} from {proxy}",
        )

    def remove_ours(self, keep_owners: set[int] | None = None) -> list[str]:
        """Delete every proxy agentscale made (by its name prefix), toxics and all, but those
        of the processes in ``keep_owners`` (their pid is in the name)."""
        removed = []
        for name in self.proxies():
            if name.startswith(PREFIX) and owner_of(name) not in (keep_owners or set()):
                self.delete_proxy(name)
                removed.append(name)
        return removed


def owner_of(proxy: str) -> int | None:
    """The pid in a proxy name agentscale made: ``agentscale-<pid>-<dependency>``."""
    head = proxy.removeprefix(PREFIX).split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _text(error: Exception) -> str:
    content = error.args[0] if error.args else b""
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return str(content).strip()[:300]
